//! The deliverer's consumer group on DynamoDB, the way KCL does it: one lease item per shard,
//! a fencing counter moved by every write, expiry judged by each worker's own clock, and the
//! checkpoint kept in the lease item so that progress can only be written under the lease.
//!
//! ```text
//! supervisor ── every renew interval ──▶ DynamoCoordinator::sync(shards) ──▶ shards held now
//! shard worker ── load / begin / commit ──▶ checkpoints() ──(owner = me AND counter = mine)──▶ table
//! shutdown ── release_all() ──▶ owner removed: the others take over at their next sync
//! ```
//!
//! # The table
//!
//! [`LeaseTable::ensure`] creates it when missing (on-demand billing) and waits until it is
//! active. Key `shard_id` (S); one item per shard of the stream:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `shard_id` | S | the Kinesis shard id (partition key) |
//! | `owner` | S | the worker holding the lease; absent when the lease is free |
//! | `counter` | N | the fencing token: +1 on every take, renewal, release, `begin` and `commit` |
//! | `checkpoint` | S | every record up to this sequence number is in the lake; absent before the first commit |
//! | `pending_first`, `pending_last` | S | the range being written; absent when none is |
//! | `finished` | BOOL | the shard was read to its end and everything is in the lake |
//! | `parents` | SS | the shard's parents when the item was created; absent for a shard without |
//!
//! # The rules of one `sync`
//!
//! 1. Renew each held lease: `counter = counter + 1` if `owner = me AND counter = mine`. A
//!    failed condition means another worker took it: it is dropped.
//! 2. Scan the table and create the items of listed shards that have none
//!    (`attribute_not_exists(shard_id)`; the loser of a race sees the winner's item next time).
//! 3. A lease is expired when its counter has not moved for `lease_duration` as observed by
//!    this worker's monotonic clock; no two hosts' clocks are ever compared. A lease is free
//!    when it has no owner, is expired, or names this worker without this process holding it
//!    (a previous incarnation's). A shard is eligible when it is not finished and every parent
//!    still listed is finished, so one partition key's records stay in order across a reshard.
//! 4. Fair share = ceil(active shards / live workers), where active shards are the unfinished
//!    listed ones that are eligible or held by a live worker, and live workers are the distinct
//!    owners of unexpired active leases plus this one. Free eligible shards are taken, lowest id
//!    first, up to the share, each conditional on the counter observed (`counter = :seen`; the
//!    loser of a race skips it). Still below the share while another worker holds more than
//!    it: steal ONE lease per sync from the most loaded worker, conditional the same way.
//!    Held leases of finished or no longer listed shards are released.
//! 5. Return the shards held, never a finished one.
//!
//! [`ShardCoordinator::release_all`](adpipe_core::group::ShardCoordinator::release_all)
//! removes `owner` from each held lease (fenced like every write), so the others take the
//! shards at their next sync instead of waiting for expiry.
//!
//! # Checkpoints and fencing
//!
//! `load` is a consistent read of the item and ignores the owner: a new owner reads the
//! pending range its predecessor left and rewrites exactly that range. `begin` sets the
//! pending range; `commit` sets `checkpoint` and `finished` and removes the pending range.
//! Both are conditional on `owner = me AND counter = mine` and move the counter, like a
//! renewal; the counter of each held lease sits behind an async mutex, so a renewal and a
//! commit of one shard never race each other. A worker whose lease was taken — a zombie that
//! paused past its lease — finds the counter moved and gets
//! [`StreamError::LeaseLost`](adpipe_core::stream::StreamError::LeaseLost) from its next write;
//! it can never overwrite its successor's progress.
//!
//! Failures are classified in one place: throttling → `Throttled`, a missing table →
//! `NotFound`, everything else (5xx, timeouts) → `Unavailable`.

mod balance;
mod checkpoints;
mod coordinator;
mod error;
mod expiry;
mod fence;
mod item;
mod table;

pub use coordinator::{DynamoCoordinator, LeaseSettings};
pub use table::LeaseTable;
