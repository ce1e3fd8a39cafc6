//! The consumer group's checkpoints, kept in the lease items themselves so that progress and
//! ownership change in one conditional write. Reads are consistent and ignore the owner: a new
//! owner must see the pending range its predecessor left, to rewrite exactly that range.
//! Writes go through the [`Fence`] and fail with [`StreamError::LeaseLost`] once the lease is
//! gone.

use std::sync::Arc;

use adpipe_core::stream::{Checkpoint, CheckpointStore, PendingRange, SequenceNumber, StreamError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::classify;
use crate::fence::{Fence, Write};
use crate::item::{LeaseItem, SHARD_ID};

/// Per-shard progress in the lease table, writable only under a held lease.
#[derive(Debug)]
pub struct DynamoCheckpoints {
    fence: Arc<Fence>,
}

impl DynamoCheckpoints {
    pub(crate) fn new(fence: Arc<Fence>) -> DynamoCheckpoints {
        DynamoCheckpoints { fence }
    }
}

#[async_trait]
impl CheckpointStore for DynamoCheckpoints {
    async fn load(&self, shard_id: &str) -> Result<Checkpoint, StreamError> {
        let read = self
            .fence
            .client()
            .get_item()
            .table_name(self.fence.table())
            .key(SHARD_ID, AttributeValue::S(shard_id.to_owned()))
            .consistent_read(true)
            .send()
            .await;
        match read {
            Ok(output) => match output.item() {
                Some(item) => Ok(LeaseItem::parse(item)?.checkpoint),
                None => Ok(Checkpoint::default()),
            },
            Err(err) => {
                Err(classify(&format!("load checkpoint of shard {shard_id}"), err).into_stream())
            }
        }
    }

    async fn begin(&self, shard_id: &str, range: &PendingRange) -> Result<(), StreamError> {
        self.fence
            .write(shard_id, Write::Begin(range.clone()))
            .await
    }

    async fn commit(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError> {
        let write = Write::Commit {
            last: last.clone(),
            finished,
        };
        self.fence.write(shard_id, write).await
    }
}
