//! Creation of the lease table: the deliverer, like KCL, creates the table it owns when it is
//! missing, on demand billing (one small item per shard, a few writes a second), and waits
//! until DynamoDB reports it `ACTIVE`. Every worker of a group may call it at once.

use std::time::Duration;

use adpipe_core::stream::StreamError;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};

use crate::error::{Failure, classify};
use crate::item::SHARD_ID;

/// How often the table's status is polled while it is being created: DynamoDB creates an
/// on-demand table in seconds.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a table may take to become active before start-up fails: far beyond what
/// DynamoDB needs, short enough that a stuck start-up is reported.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The DynamoDB table of a consumer group's leases and checkpoints.
#[derive(Debug)]
pub struct LeaseTable;

impl LeaseTable {
    /// Creates the table `name` (key `shard_id`, on-demand billing) when it is missing and
    /// waits until it is active; idempotent, and safe when several workers race to create it.
    pub async fn ensure(client: &Client, name: &str) -> Result<(), StreamError> {
        match status(client, name).await? {
            Some(TableStatus::Active) => return Ok(()),
            Some(_) => {}
            None => create(client, name).await?,
        }
        let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
        loop {
            if status(client, name).await? == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StreamError::Unavailable(format!(
                    "failed to see lease table {name} become active within {}s",
                    ACTIVE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The table's status; `None` when it does not exist.
async fn status(client: &Client, name: &str) -> Result<Option<TableStatus>, StreamError> {
    match client.describe_table().table_name(name).send().await {
        Ok(output) => Ok(output.table().and_then(|t| t.table_status()).cloned()),
        Err(err) => match classify(&format!("describe lease table {name}"), err) {
            Failure::Stream(StreamError::NotFound(_)) => Ok(None),
            other => Err(other.into_stream()),
        },
    }
}

async fn create(client: &Client, name: &str) -> Result<(), StreamError> {
    let definition = |step: &str, e: aws_sdk_dynamodb::error::BuildError| {
        StreamError::Unavailable(format!("failed to {step} of lease table {name}: {e}"))
    };
    let key = KeySchemaElement::builder()
        .attribute_name(SHARD_ID)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| definition("build the key schema", e))?;
    let attribute = AttributeDefinition::builder()
        .attribute_name(SHARD_ID)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| definition("build the key attribute", e))?;
    let created = client
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(attribute)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {
            tracing::info!(table = name, "created lease table");
            Ok(())
        }
        Err(err) => match classify(&format!("create lease table {name}"), err) {
            // Another worker created it between our describe and create.
            Failure::AlreadyExists(_) => Ok(()),
            other => Err(other.into_stream()),
        },
    }
}
