//! Every object a pipeline owns, built as plain data from the pipeline, the operator's
//! settings and what was observed (the stream's open shards, the secret's checksum).
//!
//! Nothing here talks to the API server, so each object's shape is unit-tested directly;
//! [`crate::apply`] writes them.
//!
//! ```text
//! {name}-pipeline   ConfigMap       the pipeline file the workloads read
//! {name}            ServiceAccount  IRSA / Pod Identity annotations
//! {name}-receiver   Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget
//! {name}            Ingress         /v1/{partner} → {name}-receiver (when spec.receiver.ingress)
//! {name}-deliverer  Deployment      replicas: auto = open shards
//! ```

use std::collections::BTreeMap;

use adpipe_core::spec::{DelivererReplicas, DocumentMeta, PipelineDocument};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{PartnerPipeline, base_labels};

/// Where the pipeline file is mounted in every pod.
pub const PIPELINE_DIR: &str = "/etc/adpipe/pipeline";
/// The pipeline file's key in the ConfigMap.
pub const PIPELINE_FILE: &str = "pipeline.yaml";
/// Where partner secrets are mounted, as `{secret name}/{key}` (the receiver's default).
pub const SECRETS_DIR: &str = "/etc/adpipe/secrets";
/// The pod-template annotation that rolls pods when the pipeline file or secret changes.
pub const CHECKSUM_ANNOTATION: &str = "adpipe.io/config-checksum";
/// The receiver's partner-facing port.
const HTTP_PORT: i32 = 8080;
/// Metrics, `/healthz` and `/readyz` of the deliverer; metrics of the receiver.
const METRICS_PORT: i32 = 9090;
/// The non-root user of the distroless images.
const RUN_AS_USER: i64 = 65532;
/// Long enough for a receiver to answer in-flight requests and flush to Kinesis, and for a
/// deliverer to write its open files and checkpoint.
const TERMINATION_GRACE_SECONDS: i64 = 60;

/// How the operator was told to run the workloads (the Helm chart's values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadSettings {
    /// Image of the receiver pods.
    pub receiver_image: String,
    /// Image of the deliverer pods.
    pub deliverer_image: String,
    /// Put on every pipeline's ServiceAccount: IRSA's `eks.amazonaws.com/role-arn` and the like.
    pub service_account_annotations: BTreeMap<String, String>,
    /// Environment passed to every workload container (the operator's `AWS_REGION`, …).
    pub env: BTreeMap<String, String>,
}

/// Which workload a pod belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The partner-facing HTTP receiver.
    Receiver,
    /// The consumer group writing the lake.
    Deliverer,
}

impl Component {
    /// The `app.kubernetes.io/component` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Receiver => "receiver",
            Component::Deliverer => "deliverer",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Component::Receiver => "adpipe-receiver",
            Component::Deliverer => "adpipe-deliverer",
        }
    }
}

/// What reconciliation observed that shapes the children.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Open shards of the stream, when it could be described.
    pub open_shards: Option<u32>,
    /// SHA-256 over the partner secret's data (empty when the pipeline has none).
    pub secret_checksum: String,
}

/// Every object a pipeline owns, ready to apply.
#[derive(Clone, Debug)]
pub struct Children {
    /// `{name}-pipeline`.
    pub config_map: ConfigMap,
    /// `{name}`.
    pub service_account: ServiceAccount,
    /// `{name}-receiver`.
    pub receiver: Deployment,
    /// `{name}-receiver`.
    pub service: Service,
    /// `{name}`, only when the spec asks for one.
    pub ingress: Option<Ingress>,
    /// `{name}-receiver`.
    pub autoscaler: HorizontalPodAutoscaler,
    /// `{name}-receiver`.
    pub disruption_budget: PodDisruptionBudget,
    /// `{name}-deliverer`.
    pub deliverer: Deployment,
}

/// Names of the owned objects.
pub mod names {
    /// The pipeline file's ConfigMap.
    pub fn config_map(pipeline: &str) -> String {
        format!("{pipeline}-pipeline")
    }
    /// The receiver's Deployment, Service, autoscaler and disruption budget.
    pub fn receiver(pipeline: &str) -> String {
        format!("{pipeline}-receiver")
    }
    /// The deliverer's Deployment.
    pub fn deliverer(pipeline: &str) -> String {
        format!("{pipeline}-deliverer")
    }
}

/// Why a pipeline's children cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The object has no name or namespace (never the case for an object read from the API).
    #[error("the pipeline has no {0}")]
    MissingMetadata(&'static str),
    /// The pipeline file could not be rendered.
    #[error("failed to render the pipeline file: {0}")]
    Render(#[from] serde_yaml_ng::Error),
}

/// The pipeline's name, namespace and owner reference.
struct Owner<'a> {
    name: &'a str,
    namespace: &'a str,
    reference: OwnerReference,
}

impl Children {
    /// Builds every child of `pipeline`.
    pub fn build(
        pipeline: &PartnerPipeline,
        settings: &WorkloadSettings,
        observed: &Observed,
    ) -> Result<Self, BuildError> {
        let name = pipeline
            .metadata
            .name
            .as_deref()
            .ok_or(BuildError::MissingMetadata("name"))?;
        let namespace = pipeline
            .metadata
            .namespace
            .as_deref()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let reference = owner_reference(pipeline).ok_or(BuildError::MissingMetadata("uid"))?;
        let owner = Owner {
            name,
            namespace,
            reference,
        };
        let pipeline_file = pipeline_file(pipeline, name, namespace)?;
        let checksum = checksum(&pipeline_file, &observed.secret_checksum);
        let spec = &pipeline.spec.0;
        let deliverer_replicas = match spec.deliverer.replicas {
            DelivererReplicas::Fixed(n) => n,
            DelivererReplicas::Auto => observed.open_shards.or(spec.stream.shards).unwrap_or(1),
        };
        Ok(Self {
            config_map: ConfigMap {
                metadata: owner.meta(names::config_map(name), None),
                data: Some(BTreeMap::from([(PIPELINE_FILE.to_owned(), pipeline_file)])),
                ..ConfigMap::default()
            },
            service_account: ServiceAccount {
                metadata: ObjectMeta {
                    annotations: non_empty(settings.service_account_annotations.clone()),
                    ..owner.meta(name.to_owned(), None)
                },
                ..ServiceAccount::default()
            },
            receiver: workload(
                &owner,
                pipeline,
                settings,
                Component::Receiver,
                None,
                &checksum,
            ),
            service: service(&owner),
            ingress: ingress(&owner, pipeline),
            autoscaler: autoscaler(&owner, pipeline),
            disruption_budget: disruption_budget(&owner),
            deliverer: workload(
                &owner,
                pipeline,
                settings,
                Component::Deliverer,
                Some(to_i32(deliverer_replicas)),
                &checksum,
            ),
        })
    }
}

impl Owner<'_> {
    fn meta(&self, name: String, component: Option<Component>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels(self.name, component)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The owner reference that lets garbage collection remove a child with its pipeline.
pub fn owner_reference(pipeline: &PartnerPipeline) -> Option<OwnerReference> {
    use kube::Resource;
    pipeline.controller_owner_ref(&())
}

/// The labels of a child; `component` tells receiver from deliverer objects.
pub fn labels(pipeline: &str, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = base_labels(pipeline);
    if let Some(component) = component {
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        );
    }
    labels
}

/// The labels that select one workload's pods (stable: selectors are immutable).
fn selector(pipeline: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "adpipe".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), pipeline.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        ),
    ])
}

/// The pipeline as a file: what the workloads read and `adpipe validate` checks.
pub fn pipeline_document(
    pipeline: &PartnerPipeline,
    name: &str,
    namespace: &str,
) -> PipelineDocument {
    PipelineDocument {
        api_version: format!(
            "{}/{}",
            adpipe_core::spec::API_GROUP,
            adpipe_core::spec::API_VERSION
        ),
        kind: adpipe_core::spec::KIND.to_owned(),
        metadata: DocumentMeta {
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        },
        spec: pipeline.spec.0.clone(),
    }
}

fn pipeline_file(
    pipeline: &PartnerPipeline,
    name: &str,
    namespace: &str,
) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&pipeline_document(pipeline, name, namespace))
}

/// Pods roll when the pipeline file or the partner secret changes.
fn checksum(pipeline_file: &str, secret_checksum: &str) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(pipeline_file.as_bytes());
    hash.update([0]);
    hash.update(secret_checksum.as_bytes());
    hex::encode(hash.finalize())
}

fn workload(
    owner: &Owner<'_>,
    pipeline: &PartnerPipeline,
    settings: &WorkloadSettings,
    component: Component,
    replicas: Option<i32>,
    checksum: &str,
) -> Deployment {
    let spec = &pipeline.spec.0;
    let name = match component {
        Component::Receiver => names::receiver(owner.name),
        Component::Deliverer => names::deliverer(owner.name),
    };
    let mut volumes = vec![Volume {
        name: "pipeline".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::config_map(owner.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "pipeline".to_owned(),
        mount_path: PIPELINE_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let secret = spec.source.auth.secret_ref();
    if let (Component::Receiver, Some(secret)) = (component, secret) {
        volumes.push(Volume {
            name: "partner-secret".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "partner-secret".to_owned(),
            mount_path: format!("{SECRETS_DIR}/{}", secret.name),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let mut args = vec![
        "--pipeline".to_owned(),
        format!("{PIPELINE_DIR}/{PIPELINE_FILE}"),
    ];
    let mut ports = vec![ContainerPort {
        name: Some("metrics".to_owned()),
        container_port: METRICS_PORT,
        ..ContainerPort::default()
    }];
    // The receiver answers probes on its partner port (readiness follows the stream and
    // draining); the deliverer on its metrics port.
    let probe_port = match component {
        Component::Receiver => {
            args.extend(["--secrets-dir".to_owned(), SECRETS_DIR.to_owned()]);
            ports.insert(
                0,
                ContainerPort {
                    name: Some("http".to_owned()),
                    container_port: HTTP_PORT,
                    ..ContainerPort::default()
                },
            );
            "http"
        }
        Component::Deliverer => "metrics",
    };
    let selector = selector(owner.name, component);
    Deployment {
        metadata: owner.meta(name, Some(component)),
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(owner.name, Some(component))),
                    annotations: Some(BTreeMap::from([(
                        CHECKSUM_ANNOTATION.to_owned(),
                        checksum.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(owner.name.to_owned()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    topology_spread_constraints: Some(
                        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
                            .into_iter()
                            .map(|key| TopologySpreadConstraint {
                                max_skew: 1,
                                topology_key: key.to_owned(),
                                when_unsatisfiable: "ScheduleAnyway".to_owned(),
                                label_selector: Some(LabelSelector {
                                    match_labels: Some(selector.clone()),
                                    ..LabelSelector::default()
                                }),
                                ..TopologySpreadConstraint::default()
                            })
                            .collect(),
                    ),
                    containers: vec![Container {
                        name: component.as_str().to_owned(),
                        image: Some(match component {
                            Component::Receiver => settings.receiver_image.clone(),
                            Component::Deliverer => settings.deliverer_image.clone(),
                        }),
                        command: Some(vec![component.binary().to_owned()]),
                        args: Some(args),
                        ports: Some(ports),
                        env: non_empty_vec(
                            settings
                                .env
                                .iter()
                                .map(|(name, value)| EnvVar {
                                    name: name.clone(),
                                    value: Some(value.clone()),
                                    ..EnvVar::default()
                                })
                                .collect(),
                        ),
                        liveness_probe: Some(http_probe("/healthz", probe_port)),
                        readiness_probe: Some(http_probe("/readyz", probe_port)),
                        resources: Some(resources(component)),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        volume_mounts: Some(mounts),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn http_probe(path: &str, port: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// Requests sized from the benchmarks; the memory limit leaves room above the receiver's
/// 64 MiB buffer budget and the deliverer's open files.
fn resources(component: Component) -> ResourceRequirements {
    let (cpu, memory, limit) = match component {
        Component::Receiver => ("250m", "128Mi", "512Mi"),
        Component::Deliverer => ("250m", "256Mi", "1Gi"),
    };
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn service(owner: &Owner<'_>) -> Service {
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: owner.meta(names::receiver(owner.name), Some(Component::Receiver)),
        spec: Some(ServiceSpec {
            selector: Some(selector(owner.name, Component::Receiver)),
            ports: Some(vec![
                port("http", 80, HTTP_PORT),
                port("metrics", METRICS_PORT, METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn ingress(owner: &Owner<'_>, pipeline: &PartnerPipeline) -> Option<Ingress> {
    let spec = &pipeline.spec.0;
    let ingress = spec.receiver.ingress.as_ref()?;
    Some(Ingress {
        metadata: owner.meta(owner.name.to_owned(), Some(Component::Receiver)),
        spec: Some(IngressSpec {
            ingress_class_name: ingress.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(ingress.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(format!("/v1/{}", spec.partner)),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names::receiver(owner.name),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".to_owned()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

fn autoscaler(owner: &Owner<'_>, pipeline: &PartnerPipeline) -> HorizontalPodAutoscaler {
    let receiver = &pipeline.spec.0.receiver;
    HorizontalPodAutoscaler {
        metadata: owner.meta(names::receiver(owner.name), Some(Component::Receiver)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: names::receiver(owner.name),
            },
            min_replicas: Some(to_i32(receiver.replicas.min)),
            max_replicas: to_i32(receiver.replicas.max),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(to_i32(
                            receiver.target_cpu_utilization_percentage,
                        )),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    }
}

/// One receiver pod at a time may be evicted, so a drain never takes the partner's endpoint
/// down.
fn disruption_budget(owner: &Owner<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owner.meta(names::receiver(owner.name), Some(Component::Receiver)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(owner.name, Component::Receiver)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn non_empty(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

fn non_empty_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// Counts in the spec are validated far below `i32::MAX`.
fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::crd::PipelineSpec;

    fn acme_video() -> PartnerPipeline {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/acme-video.yaml");
        let doc = adpipe_core::validate::load_single(&file).unwrap();
        let mut pipeline = PartnerPipeline::new(&doc.metadata.name, PipelineSpec(doc.spec));
        pipeline.metadata.namespace = Some("ads".to_owned());
        pipeline.metadata.uid = Some("0b5e1f57-7c1a-4a39-9d2b-6f5b2f3c1d10".to_owned());
        pipeline
    }

    fn settings() -> WorkloadSettings {
        WorkloadSettings {
            receiver_image: "receiver:test".to_owned(),
            deliverer_image: "deliverer:test".to_owned(),
            service_account_annotations: BTreeMap::from([(
                "eks.amazonaws.com/role-arn".to_owned(),
                "arn:aws:iam::123456789012:role/adpipe".to_owned(),
            )]),
            env: BTreeMap::from([("AWS_REGION".to_owned(), "eu-west-1".to_owned())]),
        }
    }

    fn build(observed: &Observed) -> Children {
        Children::build(&acme_video(), &settings(), observed).unwrap()
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment.spec.template.spec.as_ref().unwrap()
    }

    #[test]
    fn every_child_is_named_labelled_and_owned_as_the_contract_says() {
        let children = build(&Observed::default());
        let metas = [
            (&children.config_map.metadata, "acme-video-pipeline", None),
            (&children.service_account.metadata, "acme-video", None),
            (
                &children.receiver.metadata,
                "acme-video-receiver",
                Some("receiver"),
            ),
            (
                &children.service.metadata,
                "acme-video-receiver",
                Some("receiver"),
            ),
            (
                &children.autoscaler.metadata,
                "acme-video-receiver",
                Some("receiver"),
            ),
            (
                &children.disruption_budget.metadata,
                "acme-video-receiver",
                Some("receiver"),
            ),
            (
                &children.ingress.as_ref().unwrap().metadata,
                "acme-video",
                Some("receiver"),
            ),
            (
                &children.deliverer.metadata,
                "acme-video-deliverer",
                Some("deliverer"),
            ),
        ];
        for (meta, name, component) in metas {
            assert_eq!(meta.name.as_deref(), Some(name));
            assert_eq!(meta.namespace.as_deref(), Some("ads"));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], "adpipe");
            assert_eq!(labels["app.kubernetes.io/instance"], "acme-video");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "adpipe-operator");
            assert_eq!(
                labels
                    .get("app.kubernetes.io/component")
                    .map(String::as_str),
                component
            );
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                ("PartnerPipeline", "acme-video", Some(true))
            );
        }
    }

    #[test]
    fn the_config_map_holds_a_pipeline_file_that_validates() {
        let children = build(&Observed::default());
        let text = &children.config_map.data.as_ref().unwrap()[PIPELINE_FILE];
        let docs = adpipe_core::validate::parse(text).unwrap();
        assert_eq!(docs[0].metadata.namespace.as_deref(), Some("ads"));
        assert_eq!(docs[0].spec, acme_video().spec.0);
        assert!(adpipe_core::validate::validate(&docs[0]).is_empty());
    }

    #[test]
    fn receiver_pods_are_restricted_probed_and_see_the_secret() {
        let children = build(&Observed::default());
        let pod = pod(&children.receiver);
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let probe_path =
            |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(
            probe_path(&container.liveness_probe).as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            probe_path(&container.readiness_probe).as_deref(),
            Some("/readyz")
        );
        let mounts = container.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == "/etc/adpipe/secrets/acme-video-auth")
        );
        assert!(mounts.iter().any(|m| m.mount_path == PIPELINE_DIR));
        assert_eq!(container.image.as_deref(), Some("receiver:test"));
        assert_eq!(
            container.env.as_ref().unwrap()[0].value.as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("acme-video"));
        assert!(pod.topology_spread_constraints.is_some());
        // The autoscaler owns the receiver's replica count.
        assert_eq!(children.receiver.spec.replicas, None);
        assert_eq!(children.autoscaler.spec.min_replicas, Some(2));
        assert_eq!(children.autoscaler.spec.max_replicas, 20);
    }

    #[test]
    fn pods_roll_when_the_secret_or_the_pipeline_changes() {
        let checksum = |c: &Children| {
            c.receiver
                .spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CHECKSUM_ANNOTATION]
                .clone()
        };
        let before = build(&Observed::default());
        let rotated = build(&Observed {
            secret_checksum: "new".to_owned(),
            ..Observed::default()
        });
        assert_ne!(checksum(&before), checksum(&rotated));
        let mut edited = acme_video();
        edited.spec.0.receiver.max_body_bytes = 4096;
        let edited = Children::build(&edited, &settings(), &Observed::default()).unwrap();
        assert_ne!(checksum(&before), checksum(&edited));
        assert_eq!(checksum(&before), checksum(&build(&Observed::default())));
    }

    #[test]
    fn auto_deliverers_follow_the_open_shards() {
        let children = build(&Observed::default());
        assert_eq!(
            children.deliverer.spec.replicas,
            Some(2),
            "spec.stream.shards before the stream is described"
        );
        let children = build(&Observed {
            open_shards: Some(4),
            ..Observed::default()
        });
        assert_eq!(children.deliverer.spec.replicas, Some(4));
        assert!(
            pod(&children.deliverer)
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.secret.is_none())
        );
    }

    #[test]
    fn the_ingress_routes_the_partner_prefix_to_the_receiver() {
        let children = build(&Observed::default());
        let spec = children.ingress.unwrap().spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("alb"));
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("events.example.com"));
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!(path.path.as_deref(), Some("/v1/acme-video"));
        assert_eq!(
            path.backend.service.as_ref().unwrap().name,
            "acme-video-receiver"
        );
    }
}
