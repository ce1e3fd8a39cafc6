//! The `PartnerPipeline` custom resource: the spec is [`adpipe_core::spec::PartnerPipelineSpec`],
//! the same type `adpipe validate`, `adpipe local` and the workloads read, so the CRD cannot
//! drift from the files users already have.
//!
//! ```text
//! PartnerPipelineSpec (core, schemars) ─▶ #[derive(CustomResource)] ─▶ crd() adds CEL rules
//!                                                                  ─▶ crds/*.yaml, the chart
//! ```
//!
//! The OpenAPI schema (types, enums, ranges, patterns) comes from the core types; what a
//! schema cannot say across fields (min ≤ max, a pixel mapping must not use `sig`, …) is
//! added here as CEL rules on the object the rule is about, so the API server's message
//! names the field.

use std::collections::BTreeMap;

use adpipe_core::event::StandardField;
use adpipe_core::spec::PartnerPipelineSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrBool, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a `PartnerPipeline`: the core pipeline spec, unchanged on the wire.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    doc = "One ad partner's ingestion pipeline: receiver, Kinesis stream, deliverer and lake.",
    group = "adpipe.io",
    version = "v1alpha1",
    kind = "PartnerPipeline",
    plural = "partnerpipelines",
    shortname = "pp",
    namespaced,
    status = "PartnerPipelineStatus",
    printcolumn = r#"{"name": "Partner", "type": "string", "jsonPath": ".spec.partner"}"#,
    printcolumn = r#"{"name": "Format", "type": "string", "jsonPath": ".spec.source.format"}"#,
    printcolumn = r#"{"name": "Stream", "type": "string", "jsonPath": ".spec.stream.name"}"#,
    printcolumn = r#"{"name": "Shards", "type": "integer", "jsonPath": ".status.stream.openShards"}"#,
    printcolumn = r#"{"name": "Receivers", "type": "string", "jsonPath": ".status.receiver.summary", "description": "ready/desired receiver pods"}"#,
    printcolumn = r#"{"name": "Deliverers", "type": "string", "jsonPath": ".status.deliverer.summary", "description": "ready/desired deliverer pods"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct PipelineSpec(pub PartnerPipelineSpec);

/// What the operator last saw of a pipeline; `kubectl get pp` shows a summary of it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartnerPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `StreamReady`, `ReceiverAvailable` and `DelivererAvailable`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The partner's base URL, `https://{ingress host}/v1/{partner}` (or the in-cluster
    /// Service URL when there is no ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Kinesis stream as last described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
    /// Receiver pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<ReplicaStatus>,
    /// Deliverer pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliverer: Option<ReplicaStatus>,
}

/// The pipeline's Kinesis stream.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// The stream's ARN.
    pub arn: String,
    /// Shards that take writes now.
    pub open_shards: u32,
}

/// Desired and ready pods of one workload.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Pods the workload should have.
    pub desired: i32,
    /// Pods that are ready.
    pub ready: i32,
    /// `ready/desired`, for `kubectl get pp`.
    pub summary: String,
}

impl ReplicaStatus {
    /// The status of a workload with `desired` pods of which `ready` are ready.
    pub fn new(desired: i32, ready: i32) -> Self {
        Self {
            desired,
            ready,
            summary: format!("{ready}/{desired}"),
        }
    }
}

/// A CEL rule the API server checks on one object of the schema.
struct CelRule {
    /// Where the rule sits: property names from the spec down.
    at: &'static [&'static str],
    rule: String,
    message: &'static str,
}

impl CelRule {
    fn new(at: &'static [&'static str], rule: impl Into<String>, message: &'static str) -> Self {
        Self {
            at,
            rule: rule.into(),
            message,
        }
    }
}

/// Bounds that keep the CEL rules' cost estimate within the API server's budget.
const MAX_MAP_ENTRIES: i64 = 64;
/// The longest JSON pointer or query parameter name a mapping may hold.
const MAX_SELECTOR_LENGTH: i64 = 256;

/// Rules a schema cannot express: the same ones `adpipe_core::validate` applies offline, and
/// the limits of types the Rust side parses (mapping keys are standard field names).
fn rules() -> Vec<CelRule> {
    let fields = standard_fields()
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        CelRule::new(
            &["receiver", "replicas"],
            "self.min <= self.max",
            "min must not exceed max",
        ),
        CelRule::new(
            &["deliverer", "replicas"],
            "type(self) == string ? self == 'auto' : self >= 0",
            "must be `auto` or a number of workers (0 or more)",
        ),
        CelRule::new(
            &["source", "mapping"],
            format!("self.all(k, k in [{fields}])"),
            "keys must be standard fields (eventId, eventType, eventTime, adSessionId, …)",
        ),
        CelRule::new(
            &["source", "mapping"],
            "'eventType' in self",
            "eventType is required: every event needs a type",
        ),
        CelRule::new(
            &["source", "eventTypes"],
            "self.all(k, k != '')",
            "keys must not be empty",
        ),
        CelRule::new(
            &["source"],
            "self.format != 'meta-webhook' || (has(self.auth) && self.auth.type != 'none')",
            "a meta-webhook partner needs a secret (auth type hmac-sha256 or api-key): it is the verify token",
        ),
        CelRule::new(
            &["source", "auth"],
            "self.type == 'none' || has(self.secretRef)",
            "secretRef is required for api-key and hmac-sha256",
        ),
        CelRule::new(
            &["source"],
            "self.format == 'pixel' || self.mapping.all(k, self.mapping[k].startsWith('/'))",
            "mapping values must be JSON pointers such as `/id` for json and meta-webhook",
        ),
        CelRule::new(
            &["source"],
            "self.format != 'pixel' || self.mapping.all(k, self.mapping[k] != 'sig' && self.mapping[k] != '')",
            "pixel mapping values must be query parameter names other than `sig`",
        ),
    ]
}

/// The names `source.mapping` accepts as keys, from the same schema serde follows.
fn standard_fields() -> Vec<String> {
    let schema = schemars::schema_for!(StandardField);
    // Documented variants come as `oneOf` of `const`s, undocumented ones as one `enum`.
    let variants = schema
        .get("oneOf")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![schema.as_value().clone()]);
    variants
        .iter()
        .flat_map(|variant| {
            let constant = variant.get("const").cloned().into_iter();
            let listed = variant
                .get("enum")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            constant.chain(listed)
        })
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect()
}

/// The CRD as the API server should have it: the derived schema plus [`rules`].
pub fn crd() -> CustomResourceDefinition {
    let mut crd = PartnerPipeline::crd();
    for version in &mut crd.spec.versions {
        let Some(spec) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|props| props.get_mut("spec"))
        else {
            continue;
        };
        for map in [&["source", "mapping"][..], &["source", "eventTypes"]] {
            if let Some(schema) = descend(spec, map) {
                schema.max_properties = Some(MAX_MAP_ENTRIES);
            }
        }
        if let Some(values) = descend(spec, &["source", "mapping"])
            .and_then(|m| m.additional_properties.as_mut())
            .and_then(|v| match v {
                JSONSchemaPropsOrBool::Schema(schema) => Some(schema),
                JSONSchemaPropsOrBool::Bool(_) => None,
            })
        {
            values.max_length = Some(MAX_SELECTOR_LENGTH);
        }
        for rule in rules() {
            if let Some(target) = descend(spec, rule.at) {
                target
                    .x_kubernetes_validations
                    .get_or_insert_with(Vec::new)
                    .push(ValidationRule {
                        rule: rule.rule,
                        message: Some(rule.message.to_owned()),
                        ..ValidationRule::default()
                    });
            }
        }
    }
    crd
}

/// The CRD as YAML, what `adpipe-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&crd())
}

fn descend<'a>(
    mut schema: &'a mut JSONSchemaProps,
    path: &[&str],
) -> Option<&'a mut JSONSchemaProps> {
    for name in path {
        schema = schema.properties.as_mut()?.get_mut(*name)?;
    }
    Some(schema)
}

/// Labels every owned object carries, so `kubectl get -l app.kubernetes.io/instance=NAME`
/// finds a pipeline's objects.
pub fn base_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "adpipe".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::MANAGER.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn checked_in(path: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
            .unwrap()
    }

    #[test]
    fn the_checked_in_crds_are_what_the_operator_serves() {
        let served = crd_yaml().unwrap();
        for path in [
            "crds/partnerpipelines.adpipe.io.yaml",
            "charts/adpipe/crds/partnerpipelines.adpipe.io.yaml",
        ] {
            assert!(
                checked_in(path) == served,
                "{path} differs from `adpipe-operator crd`: run `cargo run -p adpipe-operator -- crd > {path}`"
            );
        }
    }

    #[test]
    fn every_example_parses_as_the_custom_resource() {
        for name in ["acme-video", "pixelco", "metaco"] {
            let text = checked_in(&format!("examples/pipelines/{name}.yaml"));
            let pipeline: PartnerPipeline = serde_yaml_ng::from_str(&text).unwrap();
            assert_eq!(pipeline.spec.0.partner, name);
        }
    }

    #[test]
    fn mapping_keys_are_limited_to_the_standard_fields() {
        let fields = standard_fields();
        assert!(fields.contains(&"eventType".to_owned()));
        assert!(fields.contains(&"adSessionId".to_owned()));
        assert_eq!(fields.len(), 19);
    }
}
