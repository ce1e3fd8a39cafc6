//! One item of the lease table: the attribute names every request uses, and the parse of an
//! item read back into the lease state and the [`Checkpoint`] it carries.

use std::collections::HashMap;

use adpipe_core::stream::{Checkpoint, PendingRange, SequenceNumber, StreamError};
use aws_sdk_dynamodb::types::AttributeValue;

/// Partition key: the Kinesis shard id (S).
pub(crate) const SHARD_ID: &str = "shard_id";
/// The worker holding the lease (S); absent when the lease is free.
pub(crate) const OWNER: &str = "owner";
/// The fencing token (N): incremented by every take, renewal, release and checkpoint write.
pub(crate) const COUNTER: &str = "counter";
/// Every record up to this sequence number is in the lake (S); absent before the first commit.
pub(crate) const CHECKPOINT: &str = "checkpoint";
/// First sequence number of the range being written (S); absent when none is.
pub(crate) const PENDING_FIRST: &str = "pending_first";
/// Last sequence number of the range being written (S); absent when none is.
pub(crate) const PENDING_LAST: &str = "pending_last";
/// The shard was read to its end and everything is in the lake (BOOL).
pub(crate) const FINISHED: &str = "finished";
/// The shard's parents at the time the item was created (SS); absent for a shard without.
pub(crate) const PARENTS: &str = "parents";

/// A lease item as read from the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseItem {
    /// The shard the lease is for.
    pub(crate) shard_id: String,
    /// Who holds it, if anyone.
    pub(crate) owner: Option<String>,
    /// The fencing token.
    pub(crate) counter: u64,
    /// The progress recorded in it.
    pub(crate) checkpoint: Checkpoint,
}

type Item = HashMap<String, AttributeValue>;

impl LeaseItem {
    /// Parses an item; fails on one no version of this crate wrote.
    pub(crate) fn parse(item: &Item) -> Result<LeaseItem, StreamError> {
        let shard_id = string(item, SHARD_ID)
            .ok_or_else(|| invalid("?", "a lease item has no shard_id"))?
            .to_owned();
        let counter = match item.get(COUNTER) {
            Some(AttributeValue::N(n)) => n
                .parse()
                .map_err(|_| invalid(&shard_id, &format!("counter {n:?} is not a count")))?,
            _ => return Err(invalid(&shard_id, "counter is missing")),
        };
        let sequence = |name: &str| {
            string(item, name)
                .map(|text| {
                    SequenceNumber::parse(text).ok_or_else(|| {
                        invalid(
                            &shard_id,
                            &format!("{name} {text:?} is not a sequence number"),
                        )
                    })
                })
                .transpose()
        };
        let pending = match (sequence(PENDING_FIRST)?, sequence(PENDING_LAST)?) {
            (Some(first), Some(last)) => Some(PendingRange { first, last }),
            _ => None,
        };
        let checkpoint = Checkpoint {
            committed: sequence(CHECKPOINT)?,
            pending,
            finished: matches!(item.get(FINISHED), Some(AttributeValue::Bool(true))),
        };
        Ok(LeaseItem {
            owner: string(item, OWNER).map(ToOwned::to_owned),
            shard_id,
            counter,
            checkpoint,
        })
    }
}

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

fn invalid(shard_id: &str, what: &str) -> StreamError {
    StreamError::Unavailable(format!(
        "failed to read the lease of shard {shard_id}: {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    #[test]
    fn a_new_item_is_a_free_lease_with_the_default_checkpoint() {
        let item = Item::from([
            (SHARD_ID.to_owned(), s("shardId-000000000001")),
            (COUNTER.to_owned(), AttributeValue::N("0".to_owned())),
            (FINISHED.to_owned(), AttributeValue::Bool(false)),
        ]);
        assert_eq!(
            LeaseItem::parse(&item).unwrap(),
            LeaseItem {
                shard_id: "shardId-000000000001".to_owned(),
                owner: None,
                counter: 0,
                checkpoint: Checkpoint::default(),
            }
        );
    }

    #[test]
    fn a_held_item_carries_its_checkpoint_and_pending_range() {
        let item = Item::from([
            (SHARD_ID.to_owned(), s("shardId-000000000001")),
            (OWNER.to_owned(), s("worker-a")),
            (COUNTER.to_owned(), AttributeValue::N("42".to_owned())),
            (CHECKPOINT.to_owned(), s("4711")),
            (PENDING_FIRST.to_owned(), s("4712")),
            (PENDING_LAST.to_owned(), s("9001")),
            (FINISHED.to_owned(), AttributeValue::Bool(true)),
        ]);
        let lease = LeaseItem::parse(&item).unwrap();
        assert_eq!(lease.owner.as_deref(), Some("worker-a"));
        assert_eq!(lease.counter, 42);
        assert_eq!(
            lease.checkpoint,
            Checkpoint {
                committed: Some(SequenceNumber::from_u64(4711)),
                pending: Some(PendingRange {
                    first: SequenceNumber::from_u64(4712),
                    last: SequenceNumber::from_u64(9001),
                }),
                finished: true,
            }
        );
    }

    #[test]
    fn a_corrupt_item_is_an_error_not_a_fresh_start() {
        let item = Item::from([
            (SHARD_ID.to_owned(), s("shardId-000000000001")),
            (COUNTER.to_owned(), AttributeValue::N("1".to_owned())),
            (CHECKPOINT.to_owned(), s("not-a-number")),
        ]);
        let err = LeaseItem::parse(&item).unwrap_err();
        assert!(err.to_string().contains("shardId-000000000001"), "{err}");
    }
}
