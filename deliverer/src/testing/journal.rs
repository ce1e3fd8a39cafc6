//! What the fakes saw, in the order they saw it, shared by every fake of one test so that a
//! test can check the order of reads, writes, commits, catalog calls and lease operations.

use adpipe_core::lake::Partition;
use adpipe_core::stream::SequenceNumber;
use tokio::sync::watch;

/// The worker name the fakes record when they are used without a coordinator view.
pub const SOLE: &str = "sole";

/// One thing a fake saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A read of a shard, whatever it returned.
    Read { shard: String },
    /// A pending range was recorded.
    Begin { worker: String, shard: String },
    /// An object was stored.
    Put { worker: String, key: String },
    /// A checkpoint was committed.
    Commit {
        worker: String,
        shard: String,
        last: SequenceNumber,
        finished: bool,
    },
    /// A checkpoint write was refused because `worker` does not hold the shard's lease.
    Refused { worker: String, shard: String },
    /// A coordinator sync answered: the shards owned, or `None` when it failed.
    Synced {
        worker: String,
        owned: Option<Vec<String>>,
    },
    /// `release_all` was called.
    Released { worker: String },
    /// The catalog table was ensured.
    TableEnsured,
    /// A partition was registered in the catalog.
    PartitionAdded {
        partner: String,
        partition: Partition,
    },
}

/// An append-only list of entries that tests can wait on.
#[derive(Debug)]
pub struct Journal {
    entries: watch::Sender<Vec<Entry>>,
}

impl Default for Journal {
    fn default() -> Journal {
        Journal {
            entries: watch::Sender::new(Vec::new()),
        }
    }
}

impl Journal {
    pub fn record(&self, entry: Entry) {
        self.entries.send_modify(|entries| entries.push(entry));
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.borrow().clone()
    }

    /// Waits until `done` holds for the entries so far.
    pub async fn wait_for(&self, mut done: impl FnMut(&[Entry]) -> bool) {
        let mut entries = self.entries.subscribe();
        entries.wait_for(|e| done(e)).await.unwrap();
    }
}
