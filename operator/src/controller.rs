//! Reconciliation of one `PartnerPipeline`, shaped as
//!
//! ```text
//! finalizer ─▶ validate ─▶ stream step ─▶ secret checksum ─▶ children as data ─▶ apply
//!          └▶ (deleting) deletionPolicy ─▶ Delete: DeleteStream, Retain: keep it
//!          ─▶ conditions ─▶ status patch (only when changed) ─▶ Events on transitions
//! ```
//!
//! Watches on the pipelines and on every owned kind bring a pipeline back here whenever one
//! of its objects changes, so a deleted or edited child is put back at once. Between events,
//! a pipeline is looked at again every few seconds while it is not ready (the stream moves
//! without telling us) and every few minutes once it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use adpipe_core::stream::StreamError;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use sha2::Digest;

use crate::MANAGER;
use crate::apply::Applier;
use crate::children::{Children, Observed, WorkloadSettings, names};
use crate::crd::{PartnerPipeline, PartnerPipelineStatus, StreamStatus};
use crate::error::{Error, Reason};
use crate::metrics::OperatorMetrics;
use crate::status::{self, Judgement};
use crate::stream::{self, StreamControl, StreamState};

/// Removes the stream (under `deletionPolicy: Delete`) before the pipeline goes away.
pub const FINALIZER: &str = "adpipe.io/stream";
/// How soon a pipeline that is not ready yet is looked at again.
const NOT_READY_RECHECK: Duration = Duration::from_secs(5);
/// How often a ready pipeline's stream and secret are checked for outside changes.
const READY_RECHECK: Duration = Duration::from_secs(300);
/// First retry after a failure; doubled per failure in a row.
const BACKOFF_START: Duration = Duration::from_secs(2);
/// Retries never wait longer than this.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Kinesis failures in a row before `StreamReady` turns False.
const FAILURES_BEFORE_NOT_READY: u32 = 3;
/// Ready pipelines' rechecks are spread over this much time, so hundreds of pipelines applied
/// together do not all describe their streams in the same second five minutes later.
const RECHECK_SPREAD: Duration = Duration::from_secs(60);
/// Selects the objects this operator owns, so the watches cache nothing else.
const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=adpipe-operator";

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Writes children only when they changed.
    pub applier: Applier,
    /// The Kinesis control plane.
    pub streams: Arc<dyn StreamControl>,
    /// Images and annotations of the workloads.
    pub settings: WorkloadSettings,
    /// Publishes Events on condition transitions.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: OperatorMetrics,
    /// Failures in a row per pipeline, for backoff.
    failures: Mutex<HashMap<ObjectRef<PartnerPipeline>, u32>>,
}

impl Context {
    /// A context for the controller.
    pub fn new(
        client: Client,
        streams: Arc<dyn StreamControl>,
        settings: WorkloadSettings,
        recorder: Recorder,
        metrics: OperatorMetrics,
    ) -> Self {
        Self {
            applier: Applier::new(client.clone(), metrics.clone()),
            client,
            streams,
            settings,
            recorder,
            metrics,
            failures: Mutex::default(),
        }
    }

    fn failures_in_a_row(&self, pipeline: &ObjectRef<PartnerPipeline>, failed: bool) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 0;
        };
        if failed {
            let count = failures.entry(pipeline.clone()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        } else {
            failures.remove(pipeline);
            0
        }
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let owned = || watcher::Config::default().labels(OWNED_SELECTOR);
    Controller::new(
        Api::<PartnerPipeline>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<Deployment>::all(client.clone()), owned())
    .owns(Api::<Service>::all(client.clone()), owned())
    .owns(Api::<ConfigMap>::all(client.clone()), owned())
    .owns(Api::<ServiceAccount>::all(client.clone()), owned())
    .owns(Api::<Ingress>::all(client.clone()), owned())
    .owns(Api::<HorizontalPodAutoscaler>::all(client.clone()), owned())
    .owns(Api::<PodDisruptionBudget>::all(client), owned())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "reconcile failed");
        }
    })
    .await;
}

async fn reconcile(pipeline: Arc<PartnerPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start();
    let namespace = pipeline.namespace().unwrap_or_default();
    let api: Api<PartnerPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    // A failed Kinesis call does not fail the reconcile (the rest was applied and the status
    // says what failed) but is counted as the error it is.
    let stream_failure = OnceLock::new();
    let result = finalizer(&api, FINALIZER, pipeline.clone(), |event| async {
        match event {
            finalizer::Event::Apply(pipeline) => apply(&pipeline, &ctx, &stream_failure).await,
            finalizer::Event::Cleanup(pipeline) => cleanup(&pipeline, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    match (&result, stream_failure.get()) {
        (Err(e), _) => ctx.metrics.failed(e.reason()),
        (Ok(_), Some(reason)) => ctx.metrics.failed(*reason),
        (Ok(_), None) => ctx.metrics.succeeded(),
    }
    result
}

fn error_policy(pipeline: Arc<PartnerPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failures_in_a_row(&ObjectRef::from_obj(&*pipeline), true);
    tracing::warn!(
        pipeline = %ObjectRef::from_obj(&*pipeline),
        reason = error.reason().as_str(),
        %error,
        failures,
        "reconcile failed; retrying"
    );
    Action::requeue(backoff(failures))
}

/// [`READY_RECHECK`] plus a share of [`RECHECK_SPREAD`] fixed by the pipeline's uid.
fn ready_recheck(pipeline: &PartnerPipeline) -> Duration {
    let uid = pipeline.metadata.uid.as_deref().unwrap_or_default();
    let digest = sha2::Sha256::digest(uid.as_bytes());
    let share = u64::from(u16::from_be_bytes([digest[0], digest[1]]));
    READY_RECHECK + RECHECK_SPREAD.mul_f64(share as f64 / f64::from(u16::MAX))
}

/// Exponential backoff: [`BACKOFF_START`] doubled per failure in a row, at most
/// [`BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_START
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

async fn apply(
    pipeline: &PartnerPipeline,
    ctx: &Context,
    stream_failure: &OnceLock<Reason>,
) -> Result<Action, Error> {
    let name = pipeline.name_any();
    let namespace = pipeline.namespace().unwrap_or_default();
    let spec = &pipeline.spec.0;
    let previous = pipeline.status.clone().unwrap_or_default();

    let problems = validation_problems(pipeline, &name, &namespace);
    if !problems.is_empty() {
        let judged = [Judgement::not(
            status::READY,
            Reason::InvalidSpec.as_str(),
            problems.join("; "),
        )];
        let status = PartnerPipelineStatus {
            conditions: status::conditions(
                &previous.conditions,
                &judged,
                pipeline.metadata.generation,
                jiff::Timestamp::now(),
            ),
            observed_generation: pipeline.metadata.generation,
            ..previous.clone()
        };
        publish_status(pipeline, &previous, status, ctx).await?;
        return Ok(Action::await_change());
    }

    let (stream_state, stream_problem) = match stream::reconcile(&*ctx.streams, &spec.stream).await
    {
        Ok(state) => (state, None),
        Err(e) => {
            let reason = match e {
                StreamError::Throttled(_) => Reason::StreamThrottled,
                _ => Reason::StreamUnavailable,
            };
            let failures = ctx.failures_in_a_row(&ObjectRef::from_obj(pipeline), true);
            let state = StreamState::Failed {
                reason: reason.as_str(),
                message: e.to_string(),
            };
            (state, Some((reason, failures)))
        }
    };
    // A call that failed once says little about the stream: the last judgement stands until
    // the failures persist, so a throttled burst does not flap every pipeline's status.
    let kept_stream_judgement = stream_problem
        .filter(|(_, failures)| *failures < FAILURES_BEFORE_NOT_READY)
        .and_then(|_| {
            previous
                .conditions
                .iter()
                .find(|c| c.type_ == status::STREAM_READY)
        })
        .map(|c| Judgement {
            type_: status::STREAM_READY,
            ok: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        });

    let (secret_checksum, secret_judgement) = secret_checksum(pipeline, &namespace, ctx).await?;
    let observed = Observed {
        open_shards: stream_state
            .summary()
            .map(|s| s.open_shards)
            .or(previous.stream.as_ref().map(|s| s.open_shards)),
        secret_checksum,
    };
    let children = Children::build(pipeline, &ctx.settings, &observed)?;
    let applier = &ctx.applier;
    applier.ensure(children.config_map).await?;
    applier.ensure(children.service_account).await?;
    applier.ensure(children.service).await?;
    match children.ingress {
        Some(ingress) => {
            applier.ensure(ingress).await?;
        }
        None => applier.remove::<Ingress>(&namespace, &name).await?,
    }
    let receiver = applier.ensure(children.receiver).await?;
    applier.ensure(children.autoscaler).await?;
    applier.ensure(children.disruption_budget).await?;
    let deliverer = applier.ensure(children.deliverer).await?;

    let receiver_replicas = status::replicas(&receiver);
    let deliverer_replicas = status::replicas(&deliverer);
    let stream_judgement = kept_stream_judgement.unwrap_or_else(|| match &stream_state {
        StreamState::Ready(summary) => Judgement::ok(
            status::STREAM_READY,
            "StreamActive",
            format!(
                "stream {} is active with {} open shards",
                spec.stream.name, summary.open_shards
            ),
        ),
        StreamState::Progressing {
            reason, message, ..
        }
        | StreamState::Failed { reason, message } => {
            Judgement::not(status::STREAM_READY, reason, message.clone())
        }
    });
    let receiver_judgement = secret_judgement.unwrap_or_else(|| {
        status::availability(
            status::RECEIVER_AVAILABLE,
            &names::receiver(&name),
            &receiver_replicas,
        )
    });
    let deliverer_judgement = status::availability(
        status::DELIVERER_AVAILABLE,
        &names::deliverer(&name),
        &deliverer_replicas,
    );
    let parts = [stream_judgement, receiver_judgement, deliverer_judgement];
    let ready = status::ready(&parts);
    let is_ready = ready.ok;
    let mut judged = vec![ready];
    judged.extend(parts);

    let status = PartnerPipelineStatus {
        observed_generation: pipeline.metadata.generation,
        conditions: status::conditions(
            &previous.conditions,
            &judged,
            pipeline.metadata.generation,
            jiff::Timestamp::now(),
        ),
        endpoint: Some(endpoint(pipeline, &name, &namespace)),
        stream: stream_state
            .summary()
            .map(|s| StreamStatus {
                arn: s.arn.clone(),
                open_shards: s.open_shards,
            })
            .or(previous.stream.clone()),
        receiver: Some(receiver_replicas),
        deliverer: Some(deliverer_replicas),
    };
    publish_status(pipeline, &previous, status, ctx).await?;

    if let Some((reason, failures)) = stream_problem {
        tracing::warn!(pipeline = %key(pipeline), reason = reason.as_str(), failures, "kinesis call failed; retrying");
        let _ = stream_failure.set(reason);
        return Ok(Action::requeue(backoff(failures)));
    }
    ctx.failures_in_a_row(&ObjectRef::from_obj(pipeline), false);
    Ok(Action::requeue(if is_ready {
        ready_recheck(pipeline)
    } else {
        NOT_READY_RECHECK
    }))
}

async fn cleanup(pipeline: &PartnerPipeline, ctx: &Context) -> Result<Action, Error> {
    let spec = &pipeline.spec.0.stream;
    stream::cleanup(&*ctx.streams, spec).await?;
    let deleted = spec.create && spec.deletion_policy == adpipe_core::spec::DeletionPolicy::Delete;
    let (reason, note) = if deleted {
        ("StreamDeleted", format!("deleted stream {}", spec.name))
    } else {
        (
            "StreamRetained",
            format!("kept stream {} (deletionPolicy: Retain)", spec.name),
        )
    };
    publish_event(pipeline, EventType::Normal, reason, note, ctx).await;
    ctx.metrics.set_ready(&key(pipeline), None);
    Ok(Action::await_change())
}

/// What `adpipe validate` would say about this pipeline; the API server's schema catches
/// most of it first.
fn validation_problems(pipeline: &PartnerPipeline, name: &str, namespace: &str) -> Vec<String> {
    let document = crate::children::pipeline_document(pipeline, name, namespace);
    adpipe_core::validate::validate(&document)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// SHA-256 of the partner secret's key, so pods roll when it is rotated; a missing secret
/// or key becomes a `ReceiverAvailable=False` judgement instead. The value itself is never
/// logged or stored.
async fn secret_checksum(
    pipeline: &PartnerPipeline,
    namespace: &str,
    ctx: &Context,
) -> Result<(String, Option<Judgement>), Error> {
    let Some(secret_ref) = pipeline.spec.0.source.auth.secret_ref() else {
        return Ok((String::new(), None));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let value = secrets
        .get_opt(&secret_ref.name)
        .await?
        .and_then(|secret| secret.data)
        .and_then(|mut data| data.remove(&secret_ref.key));
    Ok(match value {
        Some(value) => (hex::encode(sha2::Sha256::digest(&value.0)), None),
        None => (
            String::new(),
            Some(Judgement::not(
                status::RECEIVER_AVAILABLE,
                "SecretNotFound",
                format!(
                    "secret {} with key {} not found in namespace {namespace}",
                    secret_ref.name, secret_ref.key
                ),
            )),
        ),
    })
}

/// The partner's base URL.
fn endpoint(pipeline: &PartnerPipeline, name: &str, namespace: &str) -> String {
    let spec = &pipeline.spec.0;
    match &spec.receiver.ingress {
        Some(ingress) => format!("https://{}/v1/{}", ingress.host, spec.partner),
        None => format!(
            "http://{}.{namespace}.svc/v1/{}",
            names::receiver(name),
            spec.partner
        ),
    }
}

/// Writes the status if it changed, and an Event per condition that changed.
async fn publish_status(
    pipeline: &PartnerPipeline,
    previous: &PartnerPipelineStatus,
    status: PartnerPipelineStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .map(|c| if c.status == "True" { "True" } else { "False" });
    ctx.metrics
        .set_ready(&key(pipeline), Some(ready.unwrap_or("Unknown")));
    if *previous == status {
        return Ok(());
    }
    let api: Api<PartnerPipeline> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": PartnerPipeline::api_version(&()),
        "kind": PartnerPipeline::kind(&()),
        "status": status,
    });
    ctx.metrics.write(&PartnerPipeline::kind(&()));
    api.patch_status(
        &pipeline.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    for condition in status::transitions(&previous.conditions, &status.conditions) {
        let type_ = if condition.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let note = format!(
            "{} is {}: {}",
            condition.type_, condition.status, condition.message
        );
        publish_event(pipeline, type_, &condition.reason, note, ctx).await;
    }
    Ok(())
}

/// Events are best effort: a failure to record one must not fail the reconcile.
async fn publish_event(
    pipeline: &PartnerPipeline,
    type_: EventType,
    reason: &str,
    note: String,
    ctx: &Context,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(shorten_note(note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    ctx.metrics.write("Event");
    if let Err(e) = ctx
        .recorder
        .publish(&event, &pipeline.object_ref(&()))
        .await
    {
        tracing::warn!(error = %e, "failed to publish an event");
    }
}

/// The API server refuses an Event whose note is longer than this many bytes.
const MAX_NOTE_BYTES: usize = 1024;

/// Cuts `note` to [`MAX_NOTE_BYTES`] at a character boundary, marking the cut with `…`: a
/// long Kinesis or validation message must not cost the Event.
fn shorten_note(mut note: String) -> String {
    const MARK: &str = "…";
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    let mut end = MAX_NOTE_BYTES - MARK.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push_str(MARK);
    note
}

fn key(pipeline: &PartnerPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_notes_fit_the_api_servers_limit() {
        assert_eq!(super::shorten_note("short".to_owned()), "short");
        for filler in ["x", "é", "€", "𝄞"] {
            let long = filler.repeat(2000);
            let note = super::shorten_note(long.clone());
            assert!(
                note.len() <= super::MAX_NOTE_BYTES,
                "{filler}: {} bytes",
                note.len()
            );
            assert!(
                note.len() > super::MAX_NOTE_BYTES - 8,
                "{filler}: cut too short"
            );
            assert!(note.ends_with('…'));
            assert!(long.starts_with(note.trim_end_matches('…')));
        }
    }

    use super::*;

    #[test]
    fn ready_rechecks_are_spread_by_uid_within_a_minute() {
        let at = |uid: &str| {
            let mut pipeline = PartnerPipeline::new(
                "p",
                crate::crd::PipelineSpec(
                    serde_yaml_ng::from_str::<PartnerPipeline>(include_str!(
                        "../../examples/pipelines/acme-video.yaml"
                    ))
                    .unwrap()
                    .spec
                    .0,
                ),
            );
            pipeline.metadata.uid = Some(uid.to_owned());
            ready_recheck(&pipeline)
        };
        let (a, b) = (at("uid-a"), at("uid-b"));
        assert_ne!(a, b);
        for d in [a, b] {
            assert!(
                d >= READY_RECHECK && d <= READY_RECHECK + RECHECK_SPREAD,
                "{d:?}"
            );
        }
        assert_eq!(a, at("uid-a"), "the same pipeline keeps its slot");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(50), BACKOFF_MAX);
    }
}
