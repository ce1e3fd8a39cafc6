//! Creating and resizing a stream: what the operator does for a pipeline with
//! `stream.create: true`, and what the tests do to get a stream.
//!
//! ```text
//! create_stream ─▶ CreateStream (ResourceInUse: it exists) ─▶ wait ACTIVE ─▶ retention ─▶ ACTIVE
//! update_shard_count ─▶ UpdateShardCount (UNIFORM_SCALING) ─▶ wait ACTIVE
//! ```
//!
//! The operator never waits: it uses the `start_*` steps, [`set_retention`] and
//! [`describe_stream`] and comes back later. All of these are idempotent. An existing stream keeps its capacity mode and shard count: resizing
//! is an explicit `update_shard_count`.

use std::time::Duration;

use adpipe_core::stream::StreamError;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{ScalingType, StreamMode, StreamModeDetails, StreamStatus};
use tokio::time::Instant;

use super::errors::classify;

/// How often a stream's status is polled while it is not ACTIVE.
const STATUS_POLL: Duration = Duration::from_secs(1);

/// How long a stream may stay CREATING or UPDATING before we give up: creation takes under a
/// minute, resharding a large stream several minutes.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the operator reports about a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream's ARN.
    pub arn: String,
    /// Shards that take writes.
    pub open_shards: u32,
    /// How long records are kept.
    pub retention_hours: u32,
    /// Whether capacity is on-demand (else provisioned shards).
    pub on_demand: bool,
    /// Whether the stream is ACTIVE (else CREATING, UPDATING or DELETING).
    pub active: bool,
}

/// Creates `name` when missing — `shards` provisioned shards, or on-demand capacity when
/// `None` — waits until it is ACTIVE and sets its retention to `retention_hours`.
pub async fn create_stream(
    client: &Client,
    name: &str,
    shards: Option<u32>,
    retention_hours: u32,
) -> Result<StreamSummary, StreamError> {
    start_create_stream(client, name, shards).await?;
    let summary = wait_until_active(client, name).await?;
    if summary.retention_hours == retention_hours {
        return Ok(summary);
    }
    set_retention(client, name, summary.retention_hours, retention_hours).await?;
    wait_until_active(client, name).await
}

/// Asks Kinesis to create `name` and returns at once; the stream is CREATING until
/// [`describe_stream`] says it is active. An existing stream is left as it is.
pub async fn start_create_stream(
    client: &Client,
    name: &str,
    shards: Option<u32>,
) -> Result<(), StreamError> {
    let request = client.create_stream().stream_name(name);
    let request = match shards {
        Some(count) => request.shard_count(to_i32(count)),
        None => request.stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .map_err(|e| StreamError::Unavailable(format!("CreateStream: {e}")))?,
        ),
    };
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(classify("CreateStream", e)),
    }
}

/// Changes an ACTIVE stream's retention from `current` to `target` hours; the stream is
/// UPDATING for a moment afterwards.
pub async fn set_retention(
    client: &Client,
    name: &str,
    current: u32,
    target: u32,
) -> Result<(), StreamError> {
    let hours = to_i32(target);
    if target > current {
        client
            .increase_stream_retention_period()
            .stream_name(name)
            .retention_period_hours(hours)
            .send()
            .await
            .map_err(|e| classify("IncreaseStreamRetentionPeriod", e))?;
    } else if target < current {
        client
            .decrease_stream_retention_period()
            .stream_name(name)
            .retention_period_hours(hours)
            .send()
            .await
            .map_err(|e| classify("DecreaseStreamRetentionPeriod", e))?;
    }
    Ok(())
}

/// Asks Kinesis to reshard an ACTIVE provisioned stream to `target` open shards (uniform
/// hash key ranges) and returns at once. Kinesis allows at most doubling or halving per call.
pub async fn start_update_shard_count(
    client: &Client,
    name: &str,
    target: u32,
) -> Result<(), StreamError> {
    client
        .update_shard_count()
        .stream_name(name)
        .target_shard_count(to_i32(target))
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .map_err(|e| classify("UpdateShardCount", e))?;
    Ok(())
}

/// Deletes the stream and its data; a stream that is already gone is not an error.
pub async fn delete_stream(client: &Client, name: &str) -> Result<(), StreamError> {
    match client
        .delete_stream()
        .stream_name(name)
        .enforce_consumer_deletion(true)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(classify("DeleteStream", e)),
    }
}

/// Reshards a provisioned stream to `target` open shards with uniform hash key ranges and
/// waits until it is ACTIVE again. Kinesis allows at most doubling or halving per call, and a
/// limited number of calls per day.
pub async fn update_shard_count(
    client: &Client,
    name: &str,
    target: u32,
) -> Result<StreamSummary, StreamError> {
    let summary = wait_until_active(client, name).await?;
    if summary.open_shards == target {
        return Ok(summary);
    }
    start_update_shard_count(client, name, target).await?;
    wait_until_active(client, name).await
}

/// The stream's current state, without waiting.
pub async fn describe_stream(client: &Client, name: &str) -> Result<StreamSummary, StreamError> {
    let output = client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| classify("DescribeStreamSummary", e))?;
    let summary = output.stream_description_summary().ok_or_else(|| {
        StreamError::Unavailable(format!("DescribeStreamSummary: no summary of {name}"))
    })?;
    Ok(StreamSummary {
        arn: summary.stream_arn().to_owned(),
        open_shards: u32::try_from(summary.open_shard_count()).unwrap_or(0),
        retention_hours: u32::try_from(summary.retention_period_hours()).unwrap_or(0),
        on_demand: summary
            .stream_mode_details()
            .is_some_and(|mode| mode.stream_mode() == &StreamMode::OnDemand),
        active: summary.stream_status() == &StreamStatus::Active,
    })
}

/// Polls the stream until it is ACTIVE, for at most [`ACTIVE_TIMEOUT`].
pub async fn wait_until_active(client: &Client, name: &str) -> Result<StreamSummary, StreamError> {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let summary = describe_stream(client, name).await?;
        if summary.active {
            return Ok(summary);
        }
        if Instant::now() >= deadline {
            return Err(StreamError::Unavailable(format!(
                "stream {name} is not ACTIVE after {ACTIVE_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// Counts and hours are small; the API takes them as `i32`.
fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
