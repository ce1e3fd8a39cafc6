//! Consumer-group fakes: leases that a test assigns by hand, a coordinator view per worker
//! whose checkpoint writes are fenced by those leases, and a catalog that can fail.
//!
//! ```text
//! test ── assign / hand_over_at_commit / fail_syncs ──▶ FakeLeases ◀── FakeCoordinator("w1")
//!                                                           │     ◀── FakeCoordinator("w2")
//!                                                           ▼
//!                      FakeCheckpoints (one state for the group, every write journaled)
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use adpipe_core::group::{Catalog, CatalogError, ShardCoordinator};
use adpipe_core::lake::Partition;
use adpipe_core::stream::{
    Checkpoint, CheckpointStore, PendingRange, SequenceNumber, Shard, StreamError,
};
use async_trait::async_trait;

use super::{Entry, FakeCheckpoints, Journal};

/// The leases of a group: one owner per shard, set by the test. Checkpoint writes of a
/// worker that is not the owner fail with [`StreamError::LeaseLost`].
#[derive(Debug)]
pub struct FakeLeases {
    checkpoints: FakeCheckpoints,
    owners: Mutex<HashMap<String, String>>,
    hand_overs: Mutex<HashMap<String, String>>,
    failing_syncs: AtomicUsize,
    journal: Arc<Journal>,
}

impl FakeLeases {
    pub fn new(journal: Arc<Journal>) -> Arc<FakeLeases> {
        Arc::new(FakeLeases {
            checkpoints: FakeCheckpoints::recording_to(journal.clone()),
            owners: Mutex::new(HashMap::new()),
            hand_overs: Mutex::new(HashMap::new()),
            failing_syncs: AtomicUsize::new(0),
            journal,
        })
    }

    /// The group's checkpoints, as stored.
    pub fn checkpoints(&self) -> &FakeCheckpoints {
        &self.checkpoints
    }

    /// Gives `shard`'s lease to `worker`, whoever held it.
    pub fn assign(&self, shard: &str, worker: &str) {
        self.owners
            .lock()
            .unwrap()
            .insert(shard.to_owned(), worker.to_owned());
    }

    /// The next commit of `shard` by its owner finds the lease taken by `to`: the lease moves
    /// and the commit is refused, as when a worker stalls past its lease mid-batch.
    pub fn hand_over_at_commit(&self, shard: &str, to: &str) {
        self.hand_overs
            .lock()
            .unwrap()
            .insert(shard.to_owned(), to.to_owned());
    }

    /// The next `n` syncs, of any worker, fail.
    pub fn fail_syncs(&self, n: usize) {
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    /// A worker's view of the group.
    pub fn coordinator(self: &Arc<Self>, worker: &str) -> Arc<FakeCoordinator> {
        Arc::new(FakeCoordinator {
            worker: worker.to_owned(),
            leases: self.clone(),
        })
    }

    /// Runs `write` if `worker` holds `shard`'s lease, atomically with the check.
    fn fenced<T>(
        &self,
        worker: &str,
        shard: &str,
        hand_over: bool,
        write: impl FnOnce() -> Result<T, StreamError>,
    ) -> Result<T, StreamError> {
        let mut owners = self.owners.lock().unwrap();
        if hand_over
            && owners.get(shard).is_some_and(|o| o == worker)
            && let Some(to) = self.hand_overs.lock().unwrap().remove(shard)
        {
            owners.insert(shard.to_owned(), to);
        }
        if owners.get(shard).is_none_or(|o| o != worker) {
            self.journal.record(Entry::Refused {
                worker: worker.to_owned(),
                shard: shard.to_owned(),
            });
            return Err(StreamError::LeaseLost(format!(
                "{worker} does not hold the lease of {shard}"
            )));
        }
        write()
    }
}

/// One worker's view of [`FakeLeases`]: owns the listed shards assigned to it.
#[derive(Debug)]
pub struct FakeCoordinator {
    worker: String,
    leases: Arc<FakeLeases>,
}

#[async_trait]
impl ShardCoordinator for FakeCoordinator {
    async fn sync(&self, shards: &[Shard]) -> Result<Vec<String>, StreamError> {
        let leases = &self.leases;
        if take_one(&leases.failing_syncs) {
            leases.journal.record(Entry::Synced {
                worker: self.worker.clone(),
                owned: None,
            });
            return Err(StreamError::Unavailable("injected sync failure".into()));
        }
        let owners = leases.owners.lock().unwrap();
        let owned: Vec<String> = shards
            .iter()
            .filter(|s| owners.get(&s.id).is_some_and(|o| *o == self.worker))
            .map(|s| s.id.clone())
            .collect();
        leases.journal.record(Entry::Synced {
            worker: self.worker.clone(),
            owned: Some(owned.clone()),
        });
        Ok(owned)
    }

    async fn release_all(&self) -> Result<(), StreamError> {
        self.leases
            .owners
            .lock()
            .unwrap()
            .retain(|_, owner| *owner != self.worker);
        self.leases.journal.record(Entry::Released {
            worker: self.worker.clone(),
        });
        Ok(())
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(FencedCheckpoints {
            worker: self.worker.clone(),
            leases: self.leases.clone(),
        })
    }
}

/// The group's checkpoints as one worker writes them: fenced by its leases.
struct FencedCheckpoints {
    worker: String,
    leases: Arc<FakeLeases>,
}

#[async_trait]
impl CheckpointStore for FencedCheckpoints {
    async fn load(&self, shard_id: &str) -> Result<Checkpoint, StreamError> {
        Ok(self.leases.checkpoints.get(shard_id))
    }

    async fn begin(&self, shard_id: &str, range: &PendingRange) -> Result<(), StreamError> {
        self.leases.fenced(&self.worker, shard_id, false, || {
            self.leases
                .checkpoints
                .begin_as(&self.worker, shard_id, range);
            Ok(())
        })
    }

    async fn commit(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError> {
        self.leases.fenced(&self.worker, shard_id, true, || {
            self.leases
                .checkpoints
                .commit_as(&self.worker, shard_id, last, finished)
        })
    }
}

/// A catalog that records what it is told and fails on demand.
#[derive(Debug)]
pub struct FakeCatalog {
    journal: Arc<Journal>,
    ensure_failures: AtomicUsize,
    add_failures: AtomicUsize,
}

impl FakeCatalog {
    pub fn new(journal: Arc<Journal>) -> FakeCatalog {
        FakeCatalog {
            journal,
            ensure_failures: AtomicUsize::new(0),
            add_failures: AtomicUsize::new(0),
        }
    }

    /// The next `n` calls of `ensure_table` fail.
    pub fn fail_ensures(&self, n: usize) {
        self.ensure_failures.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls of `add_partition` fail.
    pub fn fail_adds(&self, n: usize) {
        self.add_failures.store(n, Ordering::SeqCst);
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Catalog for FakeCatalog {
    async fn ensure_table(&self) -> Result<(), CatalogError> {
        if take_one(&self.ensure_failures) {
            return Err(CatalogError {
                step: "create table".into(),
                message: "injected failure".into(),
            });
        }
        self.journal.record(Entry::TableEnsured);
        Ok(())
    }

    async fn add_partition(&self, partner: &str, partition: Partition) -> Result<(), CatalogError> {
        if take_one(&self.add_failures) {
            return Err(CatalogError {
                step: format!("create partition {partition}"),
                message: "injected failure".into(),
            });
        }
        self.journal.record(Entry::PartitionAdded {
            partner: partner.to_owned(),
            partition,
        });
        Ok(())
    }
}
