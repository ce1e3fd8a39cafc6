//! The pipeline's Kinesis stream: one step towards the spec per reconcile, never a wait.
//!
//! ```text
//! describe ─▶ missing  ─▶ create: true ─▶ CreateStream            ─▶ Progressing(Creating)
//!                      ─▶ create: false                           ─▶ Failed(StreamNotFound)
//!          ─▶ not ACTIVE                                          ─▶ Progressing(Updating)
//!          ─▶ shards ≠ spec ─▶ UpdateShardCount (≤ ×2 or ÷2)      ─▶ Progressing(Resharding)
//!          ─▶ retention ≠ spec ─▶ Increase/DecreaseRetention      ─▶ Progressing(Updating)
//!          ─▶ as specified                                        ─▶ Ready
//! ```
//!
//! Capacity is a platform decision, so an existing stream is only changed when the spec says
//! `create: true`; otherwise it is used as it is.

use adpipe_aws::kinesis::admin::{self, StreamSummary};
use adpipe_core::spec::{DeletionPolicy, StreamSpec};
use adpipe_core::stream::StreamError;
use async_trait::async_trait;

/// The Kinesis control-plane calls the operator makes; a trait so reconciliation logic is
/// unit-tested without AWS.
#[async_trait]
pub trait StreamControl: Send + Sync + 'static {
    /// The stream's state, or `None` when it does not exist.
    async fn describe(&self, name: &str) -> Result<Option<StreamSummary>, StreamError>;
    /// Starts creating the stream.
    async fn create(&self, name: &str, shards: Option<u32>) -> Result<(), StreamError>;
    /// Starts resharding to `target` open shards.
    async fn resize(&self, name: &str, target: u32) -> Result<(), StreamError>;
    /// Changes the retention period.
    async fn set_retention(&self, name: &str, current: u32, target: u32)
    -> Result<(), StreamError>;
    /// Deletes the stream.
    async fn delete(&self, name: &str) -> Result<(), StreamError>;
}

/// [`StreamControl`] on the real Kinesis API.
pub struct Kinesis(pub aws_sdk_kinesis::Client);

#[async_trait]
impl StreamControl for Kinesis {
    async fn describe(&self, name: &str) -> Result<Option<StreamSummary>, StreamError> {
        match admin::describe_stream(&self.0, name).await {
            Ok(summary) => Ok(Some(summary)),
            Err(StreamError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, name: &str, shards: Option<u32>) -> Result<(), StreamError> {
        admin::start_create_stream(&self.0, name, shards).await
    }

    async fn resize(&self, name: &str, target: u32) -> Result<(), StreamError> {
        admin::start_update_shard_count(&self.0, name, target).await
    }

    async fn set_retention(
        &self,
        name: &str,
        current: u32,
        target: u32,
    ) -> Result<(), StreamError> {
        admin::set_retention(&self.0, name, current, target).await
    }

    async fn delete(&self, name: &str) -> Result<(), StreamError> {
        admin::delete_stream(&self.0, name).await
    }
}

/// Where the stream stands after one reconcile step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Active and as the spec says.
    Ready(StreamSummary),
    /// Moving towards the spec; `summary` when it exists already.
    Progressing {
        /// The stream as described before the step, if it exists.
        summary: Option<StreamSummary>,
        /// A condition reason: `Creating`, `Resharding` or `Updating`.
        reason: &'static str,
        /// What is going on, for `kubectl describe`.
        message: String,
    },
    /// Cannot be made ready by waiting.
    Failed {
        /// A condition reason.
        reason: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl StreamState {
    /// The stream's description, when there is one.
    pub fn summary(&self) -> Option<&StreamSummary> {
        match self {
            StreamState::Ready(summary) => Some(summary),
            StreamState::Progressing { summary, .. } => summary.as_ref(),
            StreamState::Failed { .. } => None,
        }
    }
}

/// Takes one step towards `spec` and says where the stream stands.
pub async fn reconcile(
    control: &dyn StreamControl,
    spec: &StreamSpec,
) -> Result<StreamState, StreamError> {
    let name = spec.name.as_str();
    let Some(summary) = control.describe(name).await? else {
        if !spec.create {
            return Ok(StreamState::Failed {
                reason: "StreamNotFound",
                message: format!(
                    "stream {name} does not exist and spec.stream.create is false: create it, or set create: true"
                ),
            });
        }
        control.create(name, spec.shards).await?;
        return Ok(StreamState::Progressing {
            summary: None,
            reason: "Creating",
            message: format!("creating stream {name}"),
        });
    };
    if !summary.active {
        return Ok(StreamState::Progressing {
            summary: Some(summary),
            reason: "Updating",
            message: format!("stream {name} is being created or updated"),
        });
    }
    if !spec.create {
        return Ok(StreamState::Ready(summary));
    }
    if let Some(target) = spec.shards
        && !summary.on_demand
        && summary.open_shards != target
    {
        let step = next_shard_count(summary.open_shards, target);
        control.resize(name, step).await?;
        let message = format!(
            "resharding stream {name} from {} to {step} shards (target {target})",
            summary.open_shards
        );
        return Ok(StreamState::Progressing {
            summary: Some(summary),
            reason: "Resharding",
            message,
        });
    }
    if summary.retention_hours != spec.retention_hours {
        control
            .set_retention(name, summary.retention_hours, spec.retention_hours)
            .await?;
        let message = format!(
            "changing the retention of stream {name} from {} to {} hours",
            summary.retention_hours, spec.retention_hours
        );
        return Ok(StreamState::Progressing {
            summary: Some(summary),
            reason: "Updating",
            message,
        });
    }
    Ok(StreamState::Ready(summary))
}

/// Deletes the stream when the pipeline is deleted, if the spec created it and asks for that.
pub async fn cleanup(control: &dyn StreamControl, spec: &StreamSpec) -> Result<(), StreamError> {
    if spec.create && spec.deletion_policy == DeletionPolicy::Delete {
        control.delete(&spec.name).await?;
    }
    Ok(())
}

/// One UpdateShardCount call may at most double or halve the open shards.
fn next_shard_count(current: u32, target: u32) -> u32 {
    let current = current.max(1);
    target.clamp(current.div_ceil(2), current.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Fake {
        stream: Mutex<Option<StreamSummary>>,
        calls: Mutex<Vec<String>>,
    }

    fn summary(open_shards: u32, retention_hours: u32, active: bool) -> StreamSummary {
        StreamSummary {
            arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".to_owned(),
            open_shards,
            retention_hours,
            on_demand: false,
            active,
        }
    }

    #[async_trait]
    impl StreamControl for Fake {
        async fn describe(&self, _: &str) -> Result<Option<StreamSummary>, StreamError> {
            Ok(self.stream.lock().unwrap().clone())
        }
        async fn create(&self, name: &str, shards: Option<u32>) -> Result<(), StreamError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("create {name} {shards:?}"));
            Ok(())
        }
        async fn resize(&self, name: &str, target: u32) -> Result<(), StreamError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("resize {name} {target}"));
            Ok(())
        }
        async fn set_retention(&self, name: &str, from: u32, to: u32) -> Result<(), StreamError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("retention {name} {from}->{to}"));
            Ok(())
        }
        async fn delete(&self, name: &str) -> Result<(), StreamError> {
            self.calls.lock().unwrap().push(format!("delete {name}"));
            Ok(())
        }
    }

    fn spec(shards: Option<u32>) -> StreamSpec {
        StreamSpec {
            name: "s".to_owned(),
            create: true,
            shards,
            retention_hours: 24,
            deletion_policy: DeletionPolicy::Retain,
        }
    }

    #[tokio::test]
    async fn a_missing_stream_is_created_with_the_spec_shards() {
        let fake = Fake::default();
        let state = reconcile(&fake, &spec(Some(2))).await.unwrap();
        assert!(matches!(
            state,
            StreamState::Progressing {
                reason: "Creating",
                ..
            }
        ));
        assert_eq!(*fake.calls.lock().unwrap(), ["create s Some(2)"]);
    }

    #[tokio::test]
    async fn a_missing_stream_the_pipeline_may_not_create_is_a_failure() {
        let fake = Fake::default();
        let state = reconcile(
            &fake,
            &StreamSpec {
                create: false,
                ..spec(Some(2))
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            state,
            StreamState::Failed {
                reason: "StreamNotFound",
                ..
            }
        ));
        assert!(fake.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn resharding_goes_at_most_double_per_step() {
        let fake = Fake::default();
        *fake.stream.lock().unwrap() = Some(summary(2, 24, true));
        reconcile(&fake, &spec(Some(16))).await.unwrap();
        *fake.stream.lock().unwrap() = Some(summary(16, 24, true));
        reconcile(&fake, &spec(Some(3))).await.unwrap();
        assert_eq!(*fake.calls.lock().unwrap(), ["resize s 4", "resize s 8"]);
    }

    #[tokio::test]
    async fn a_stream_as_specified_is_ready_without_any_call() {
        let fake = Fake::default();
        *fake.stream.lock().unwrap() = Some(summary(2, 24, true));
        let state = reconcile(&fake, &spec(Some(2))).await.unwrap();
        assert_eq!(state, StreamState::Ready(summary(2, 24, true)));
        *fake.stream.lock().unwrap() = Some(summary(2, 24, false));
        let state = reconcile(&fake, &spec(Some(2))).await.unwrap();
        assert!(matches!(
            state,
            StreamState::Progressing {
                reason: "Updating",
                ..
            }
        ));
        assert!(fake.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn retention_follows_the_spec() {
        let fake = Fake::default();
        *fake.stream.lock().unwrap() = Some(summary(2, 48, true));
        reconcile(&fake, &spec(Some(2))).await.unwrap();
        assert_eq!(*fake.calls.lock().unwrap(), ["retention s 48->24"]);
    }

    #[tokio::test]
    async fn only_delete_policy_deletes_the_stream() {
        let fake = Fake::default();
        cleanup(&fake, &spec(Some(2))).await.unwrap();
        let delete = StreamSpec {
            deletion_policy: DeletionPolicy::Delete,
            ..spec(Some(2))
        };
        cleanup(&fake, &delete).await.unwrap();
        let not_ours = StreamSpec {
            create: false,
            ..delete
        };
        cleanup(&fake, &not_ours).await.unwrap();
        assert_eq!(*fake.calls.lock().unwrap(), ["delete s"]);
    }
}
