//! The pipeline's status: four conditions derived from what reconciliation saw, with
//! transition times that only move when a condition's status does.
//!
//! ```text
//! StreamReady        the Kinesis stream exists, is ACTIVE and as specified
//! ReceiverAvailable  every desired receiver pod is ready (and the partner secret exists)
//! DelivererAvailable every desired deliverer pod is ready
//! Ready              all three
//! ```

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::ReplicaStatus;

/// `Ready`: the pipeline takes and delivers events.
pub const READY: &str = "Ready";
/// `StreamReady`: the stream is there and as specified.
pub const STREAM_READY: &str = "StreamReady";
/// `ReceiverAvailable`: the receiver pods are ready.
pub const RECEIVER_AVAILABLE: &str = "ReceiverAvailable";
/// `DelivererAvailable`: the deliverer pods are ready.
pub const DELIVERER_AVAILABLE: &str = "DelivererAvailable";

/// One condition as reconciliation judged it, before times are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The condition type.
    pub type_: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// A CamelCase reason.
    pub reason: String,
    /// What a human should know.
    pub message: String,
}

impl Judgement {
    /// A condition that holds.
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: true,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn not(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Desired and ready pods of a workload as the API server reports them.
pub fn replicas(deployment: &Deployment) -> ReplicaStatus {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    ReplicaStatus::new(desired, ready)
}

/// Whether the workload named `what` has all its pods ready.
pub fn availability(type_: &'static str, what: &str, replicas: &ReplicaStatus) -> Judgement {
    if replicas.ready >= replicas.desired {
        Judgement::ok(
            type_,
            "PodsReady",
            format!("{what}: {} pods ready", replicas.summary),
        )
    } else {
        Judgement::not(
            type_,
            "PodsNotReady",
            format!("{what}: {} pods ready", replicas.summary),
        )
    }
}

/// `Ready` from the other three: the first that does not hold gives its reason.
pub fn ready(parts: &[Judgement]) -> Judgement {
    match parts.iter().find(|j| !j.ok) {
        Some(failing) => Judgement::not(
            READY,
            &failing.reason,
            format!("{}: {}", failing.type_, failing.message),
        ),
        None => Judgement::ok(READY, "PipelineReady", "receiving and delivering events"),
    }
}

/// Turns judgements into conditions, keeping each one's `lastTransitionTime` unless its
/// status changed.
pub fn conditions(
    previous: &[Condition],
    judged: &[Judgement],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    judged
        .iter()
        .map(|j| {
            let status = if j.ok { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == j.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: j.type_.to_owned(),
                status: status.to_owned(),
                reason: j.reason.clone(),
                message: j.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Conditions whose status or reason differs from before: each becomes an Event.
pub fn transitions<'a>(previous: &[Condition], current: &'a [Condition]) -> Vec<&'a Condition> {
    current
        .iter()
        .filter(|c| {
            !previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = conditions(
            &[],
            &[Judgement::not(STREAM_READY, "Creating", "creating")],
            Some(1),
            at(100),
        );
        let same = conditions(
            &first,
            &[Judgement::not(STREAM_READY, "Updating", "updating")],
            Some(2),
            at(200),
        );
        assert_eq!(same[0].last_transition_time, Time(at(100)));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = conditions(
            &same,
            &[Judgement::ok(STREAM_READY, "StreamActive", "ok")],
            Some(2),
            at(300),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert_eq!(transitions(&same, &flipped).len(), 1);
        assert!(transitions(&flipped, &flipped).is_empty());
    }

    #[test]
    fn ready_names_the_first_failing_condition() {
        let ready = ready(&[
            Judgement::ok(STREAM_READY, "StreamActive", "ok"),
            Judgement::not(
                RECEIVER_AVAILABLE,
                "PodsNotReady",
                "receiver: 1/2 pods ready",
            ),
        ]);
        assert!(!ready.ok);
        assert_eq!(ready.reason, "PodsNotReady");
        assert_eq!(ready.message, "ReceiverAvailable: receiver: 1/2 pods ready");
    }
}
