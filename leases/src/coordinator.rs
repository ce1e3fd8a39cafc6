//! `DynamoCoordinator`: one worker of a consumer group. Each `sync` renews what it holds,
//! reads the whole lease table (one small item per shard), creates the items of new shards,
//! judges expiry by its own clock, and carries out the pure [`balance::plan`] with
//! conditional writes — a write that loses a race is skipped, never retried blindly.
//!
//! ```text
//! sync(shards)
//!   1 renew held leases ──(condition failed)──▶ dropped: stolen or expired
//!   2 scan table, put items of unlisted shards (attribute_not_exists)
//!   3 ExpiryClock: counter unchanged for lease_duration ⇒ expired
//!   4 plan: release finished, take free up to the fair share, steal ≤ 1
//!   5 ──▶ the shards held now, finished ones left out
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adpipe_core::group::ShardCoordinator;
use adpipe_core::stream::{CheckpointStore, Shard, StreamError};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;

use crate::balance::{self, Claim, LeaseView};
use crate::checkpoints::DynamoCheckpoints;
use crate::error::{Failure, classify};
use crate::expiry::ExpiryClock;
use crate::fence::{Fence, Write};
use crate::item::{COUNTER, FINISHED, LeaseItem, OWNER, PARENTS, SHARD_ID};

/// KCL's default failover time: how long a dead worker's shards go unread, against how
/// often leases must be renewed.
const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(10);

/// Renewals per lease duration: a lease survives two missed renewals in a row.
const RENEWALS_PER_LEASE: u32 = 3;

/// How the leases of a group are timed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// A lease whose counter has not moved for this long, as seen by another worker, is
    /// taken over by it. Every worker of a group must use the same value.
    pub lease_duration: Duration,
}

impl Default for LeaseSettings {
    fn default() -> LeaseSettings {
        LeaseSettings {
            lease_duration: DEFAULT_LEASE_DURATION,
        }
    }
}

impl LeaseSettings {
    /// How often the supervisor should call [`ShardCoordinator::sync`] so that the leases it
    /// holds never look expired to the others.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / RENEWALS_PER_LEASE
    }
}

/// A worker of a consumer group whose leases and checkpoints live in a DynamoDB table
/// (see the crate docs for the table and the rules).
#[derive(Debug)]
pub struct DynamoCoordinator {
    fence: Arc<Fence>,
    checkpoints: Arc<DynamoCheckpoints>,
    settings: LeaseSettings,
    expiry: Mutex<ExpiryClock>,
}

impl DynamoCoordinator {
    /// Worker `worker_id` of the group whose leases are in `table` (which
    /// [`LeaseTable::ensure`](crate::LeaseTable::ensure) created). The id must be unique
    /// among the group's live processes; a restarted process may reuse its predecessor's and
    /// then takes its leases back at its first sync.
    pub fn new(
        client: Client,
        table: impl Into<String>,
        worker_id: impl Into<String>,
        settings: LeaseSettings,
    ) -> DynamoCoordinator {
        let fence = Arc::new(Fence::new(client, table.into(), worker_id.into()));
        DynamoCoordinator {
            checkpoints: Arc::new(DynamoCheckpoints::new(Arc::clone(&fence))),
            fence,
            settings,
            expiry: Mutex::new(ExpiryClock::default()),
        }
    }

    /// Renews every held lease; a lease whose renewal finds it taken is dropped.
    async fn renew(&self) -> Result<(), StreamError> {
        let held: Vec<String> = self.fence.held().into_iter().collect();
        let renewals = join_all(held.iter().map(|id| self.fence.write(id, Write::Renew))).await;
        let mut failure = None;
        for (shard, renewal) in held.iter().zip(renewals) {
            match renewal {
                Ok(()) => {}
                Err(StreamError::LeaseLost(why)) => {
                    tracing::warn!(shard = %shard, worker = self.fence.worker_id(), %why, "lost lease");
                }
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Every item of the table, read consistently.
    async fn scan(&self) -> Result<Vec<LeaseItem>, StreamError> {
        let items = self
            .fence
            .client()
            .scan()
            .table_name(self.fence.table())
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|err| classify("scan the lease table", err).into_stream())?;
        items.iter().map(LeaseItem::parse).collect()
    }

    /// Puts a free lease item for each listed shard without one; returns `items` with the
    /// ones created. An item another worker created first is seen at the next sync.
    async fn create_missing(
        &self,
        shards: &[Shard],
        mut items: Vec<LeaseItem>,
    ) -> Result<Vec<LeaseItem>, StreamError> {
        let known: HashSet<&str> = items.iter().map(|i| i.shard_id.as_str()).collect();
        let missing: Vec<&Shard> = shards
            .iter()
            .filter(|s| !known.contains(s.id.as_str()))
            .collect();
        for shard in missing {
            let parents: Vec<String> = [&shard.parent_shard_id, &shard.adjacent_parent_shard_id]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let mut put = self
                .fence
                .client()
                .put_item()
                .table_name(self.fence.table())
                .item(SHARD_ID, AttributeValue::S(shard.id.clone()))
                .item(COUNTER, AttributeValue::N("0".to_owned()))
                .item(FINISHED, AttributeValue::Bool(false))
                .condition_expression("attribute_not_exists(#shard_id)")
                .expression_attribute_names("#shard_id", SHARD_ID);
            // A string set may not be empty.
            if !parents.is_empty() {
                put = put.item(PARENTS, AttributeValue::Ss(parents));
            }
            match put.send().await {
                Ok(_) => items.push(LeaseItem {
                    shard_id: shard.id.clone(),
                    owner: None,
                    counter: 0,
                    checkpoint: Default::default(),
                }),
                Err(err) => match classify(&format!("create lease of shard {}", shard.id), err) {
                    Failure::ConditionFailed(_) => {}
                    other => return Err(other.into_stream()),
                },
            }
        }
        Ok(items)
    }

    /// Writes this worker's name into a lease if its counter is still the one observed;
    /// `false` when another worker wrote it first.
    async fn take(&self, claim: &Claim) -> Result<bool, StreamError> {
        let taken = self
            .fence
            .client()
            .update_item()
            .table_name(self.fence.table())
            .key(SHARD_ID, AttributeValue::S(claim.shard_id.clone()))
            .update_expression("SET #owner = :me, #counter = #counter + :one")
            .condition_expression("#counter = :seen")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#counter", COUNTER)
            .expression_attribute_values(
                ":me",
                AttributeValue::S(self.fence.worker_id().to_owned()),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":seen", AttributeValue::N(claim.counter.to_string()))
            .send()
            .await;
        match taken {
            Ok(_) => {
                self.fence.hold(&claim.shard_id, claim.counter + 1);
                Ok(true)
            }
            Err(err) => match classify(&format!("take lease of shard {}", claim.shard_id), err) {
                Failure::ConditionFailed(_) => Ok(false),
                other => Err(other.into_stream()),
            },
        }
    }

    /// Takes a lease, logging the outcome; a failure is left to the next sync.
    async fn take_logged(&self, claim: &Claim, from: Option<&str>) {
        let worker = self.fence.worker_id();
        let shard = claim.shard_id.as_str();
        match self.take(claim).await {
            Ok(true) => match from {
                Some(victim) => tracing::info!(shard, worker, victim, "stole lease"),
                None => tracing::info!(shard, worker, "took lease"),
            },
            Ok(false) => tracing::debug!(shard, worker, "lost the race for a lease"),
            Err(err) => tracing::warn!(shard, worker, error = %err, "failed to take lease"),
        }
    }
}

#[async_trait]
impl ShardCoordinator for DynamoCoordinator {
    async fn sync(&self, shards: &[Shard]) -> Result<Vec<String>, StreamError> {
        self.renew().await?;
        let items = self.scan().await?;
        let items = self.create_missing(shards, items).await?;

        let now = Instant::now();
        let views: Vec<LeaseView<'_>> = {
            let mut clock = self.expiry.lock().unwrap_or_else(PoisonError::into_inner);
            let views = items
                .iter()
                .map(|item| LeaseView {
                    shard_id: &item.shard_id,
                    owner: item.owner.as_deref(),
                    counter: item.counter,
                    finished: item.checkpoint.finished,
                    expired: clock.observe(&item.shard_id, item.counter, now)
                        >= self.settings.lease_duration,
                })
                .collect();
            let in_table: HashSet<&str> = items.iter().map(|i| i.shard_id.as_str()).collect();
            clock.retain(|shard| in_table.contains(shard));
            views
        };

        let plan = balance::plan(self.fence.worker_id(), shards, &views, &self.fence.held());
        for shard in &plan.release {
            match self.fence.write(shard, Write::Release).await {
                Ok(()) | Err(StreamError::LeaseLost(_)) => {}
                Err(err) => tracing::warn!(shard = %shard, error = %err, "failed to release lease"),
            }
        }
        for claim in &plan.take {
            self.take_logged(claim, None).await;
        }
        if let Some(steal) = &plan.steal {
            self.take_logged(&steal.claim, Some(&steal.victim)).await;
        }

        let finished: HashSet<&str> = views
            .iter()
            .filter(|v| v.finished)
            .map(|v| v.shard_id)
            .collect();
        Ok(self
            .fence
            .held()
            .into_iter()
            .filter(|id| !finished.contains(id.as_str()))
            .collect())
    }

    async fn release_all(&self) -> Result<(), StreamError> {
        let held: Vec<String> = self.fence.held().into_iter().collect();
        let releases = join_all(held.iter().map(|id| self.fence.write(id, Write::Release))).await;
        let mut failure = None;
        for (shard, release) in held.iter().zip(releases) {
            match release {
                Ok(()) => {
                    tracing::info!(shard = %shard, worker = self.fence.worker_id(), "released lease")
                }
                Err(StreamError::LeaseLost(_)) => {}
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        self.checkpoints.clone()
    }
}
