//! The leases this worker holds and every write made under them. Each write — renewal,
//! `begin`, `commit`, release — is one `UpdateItem` conditional on `owner = me AND counter =
//! the counter of my last write`, and moves the counter on by one. So the first write of a
//! worker whose lease was taken fails (the taker moved the counter) and reports the lease
//! lost: a zombie never overwrites its successor.
//!
//! ```text
//! held: shard ──▶ slot { counter } (an async mutex: writes of one shard never race each
//!                                   other, so a renewal cannot invalidate a commit's counter)
//! write(shard, Renew | Begin | Commit | Release)
//!   ok               ─▶ counter + 1 (Release: forget the slot)
//!   condition failed ─▶ forget the slot, StreamError::LeaseLost
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use adpipe_core::stream::{PendingRange, SequenceNumber, StreamError};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use crate::error::{Failure, classify};
use crate::item::{CHECKPOINT, COUNTER, FINISHED, OWNER, PENDING_FIRST, PENDING_LAST, SHARD_ID};

/// A write made under a held lease.
#[derive(Clone, Debug)]
pub(crate) enum Write {
    /// Only moves the counter, so the others see the lease alive.
    Renew,
    /// Records the range about to be written.
    Begin(PendingRange),
    /// Records progress and clears the pending range.
    Commit {
        /// Every record up to this one is in the lake.
        last: SequenceNumber,
        /// The shard was read to its end.
        finished: bool,
    },
    /// Gives the lease up, so another worker takes it at its next sync.
    Release,
}

impl Write {
    fn describe(&self) -> &'static str {
        match self {
            Write::Renew => "renew lease",
            Write::Begin(_) => "record pending range",
            Write::Commit { .. } => "commit checkpoint",
            Write::Release => "release lease",
        }
    }

    /// Adds this write's update expression, names and values to `request`.
    fn apply(self, request: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        let s = |text: String| AttributeValue::S(text);
        match self {
            Write::Renew => request.update_expression("SET #counter = #counter + :one"),
            Write::Begin(range) => request
                .update_expression(
                    "SET #counter = #counter + :one, #pending_first = :first, \
                     #pending_last = :last",
                )
                .expression_attribute_names("#pending_first", PENDING_FIRST)
                .expression_attribute_names("#pending_last", PENDING_LAST)
                .expression_attribute_values(":first", s(range.first.to_string()))
                .expression_attribute_values(":last", s(range.last.to_string())),
            Write::Commit { last, finished } => request
                .update_expression(
                    "SET #counter = #counter + :one, #checkpoint = :checkpoint, \
                     #finished = :finished REMOVE #pending_first, #pending_last",
                )
                .expression_attribute_names("#checkpoint", CHECKPOINT)
                .expression_attribute_names("#finished", FINISHED)
                .expression_attribute_names("#pending_first", PENDING_FIRST)
                .expression_attribute_names("#pending_last", PENDING_LAST)
                .expression_attribute_values(":checkpoint", s(last.to_string()))
                .expression_attribute_values(":finished", AttributeValue::Bool(finished)),
            Write::Release => {
                request.update_expression("SET #counter = #counter + :one REMOVE #owner")
            }
        }
    }
}

/// A held lease: the counter its last write left in the table.
#[derive(Debug)]
struct Slot {
    counter: u64,
    /// Set once the lease is lost or released, for a writer that waited on the slot meanwhile.
    gone: bool,
}

/// The leases of one worker and the fenced writes on them.
#[derive(Debug)]
pub(crate) struct Fence {
    client: Client,
    table: String,
    worker_id: String,
    held: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Fence {
    /// No leases held yet.
    pub(crate) fn new(client: Client, table: String, worker_id: String) -> Fence {
        Fence {
            client,
            table,
            worker_id,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// The DynamoDB client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The lease table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// This worker's name, written into the leases it holds.
    pub(crate) fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The shards whose leases are held.
    pub(crate) fn held(&self) -> BTreeSet<String> {
        self.slots().keys().cloned().collect()
    }

    /// Records a lease just taken, whose write left `counter` in the table.
    pub(crate) fn hold(&self, shard_id: &str, counter: u64) {
        let slot = Slot {
            counter,
            gone: false,
        };
        self.slots()
            .insert(shard_id.to_owned(), Arc::new(tokio::sync::Mutex::new(slot)));
    }

    /// Makes `write` on `shard_id`'s lease, fenced by its counter.
    pub(crate) async fn write(&self, shard_id: &str, write: Write) -> Result<(), StreamError> {
        let step = write.describe();
        let Some(slot) = self.slots().get(shard_id).cloned() else {
            return Err(lost(shard_id, step, "this worker does not hold it"));
        };
        let mut guard = slot.lock().await;
        if guard.gone {
            return Err(lost(shard_id, step, "this worker no longer holds it"));
        }
        let releasing = matches!(write, Write::Release);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(SHARD_ID, AttributeValue::S(shard_id.to_owned()))
            .condition_expression("#owner = :me AND #counter = :mine")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#counter", COUNTER)
            .expression_attribute_values(":me", AttributeValue::S(self.worker_id.clone()))
            .expression_attribute_values(":mine", AttributeValue::N(guard.counter.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match write.apply(request).send().await {
            Ok(_) => {
                guard.counter += 1;
                if releasing {
                    guard.gone = true;
                    self.forget(shard_id, &slot);
                }
                Ok(())
            }
            Err(err) => {
                let holder = current_owner(&err);
                match classify(&format!("{step} of shard {shard_id}"), err) {
                    // NOTE: a condition failure is taken as the lease lost even when the cause
                    // was our own earlier write whose answer was lost: the lease then stays
                    // under our name with a counter we do not know, and the next sync takes
                    // it back (see `balance`), so no other worker is affected.
                    Failure::ConditionFailed(_) => {
                        guard.gone = true;
                        self.forget(shard_id, &slot);
                        let now = holder.map_or_else(
                            || "it is free now".to_owned(),
                            |owner| format!("{owner} holds it now"),
                        );
                        Err(lost(shard_id, step, &now))
                    }
                    other => Err(other.into_stream()),
                }
            }
        }
    }

    /// Drops `shard_id`'s slot if it is still `slot` (not one taken again since).
    fn forget(&self, shard_id: &str, slot: &Arc<tokio::sync::Mutex<Slot>>) {
        let mut slots = self.slots();
        if slots.get(shard_id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(shard_id);
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<tokio::sync::Mutex<Slot>>>> {
        // The map is only read and replaced entry by entry: a panic elsewhere cannot leave it
        // half-updated.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who the table named as the owner when a fenced write's condition failed.
fn current_owner(
    err: &aws_sdk_dynamodb::error::SdkError<
        UpdateItemError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> Option<String> {
    match err.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(failed) => {
            match failed.item()?.get(OWNER)? {
                AttributeValue::S(owner) => Some(owner.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn lost(shard_id: &str, step: &str, why: &str) -> StreamError {
    StreamError::LeaseLost(format!("failed to {step} of shard {shard_id}: {why}"))
}
