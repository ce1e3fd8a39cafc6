//! Lease expiry as KCL judges it: a lease is expired when its counter has not moved for the
//! lease duration, as seen by this worker's own monotonic clock. No clock of another host is
//! ever compared with ours, so clock skew between workers cannot expire a live lease.
//!
//! ```text
//! scan ─▶ observe(shard, counter, now) ─▶ how long the counter has been unchanged
//!         (a new counter, or a shard seen for the first time, restarts the count)
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When this worker first saw each lease's current counter.
#[derive(Debug, Default)]
pub(crate) struct ExpiryClock {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    counter: u64,
    since: Instant,
}

impl ExpiryClock {
    /// Records that `shard`'s lease has `counter` at `now`; returns for how long this worker
    /// has seen that same counter.
    pub(crate) fn observe(&mut self, shard: &str, counter: u64, now: Instant) -> Duration {
        match self.seen.get_mut(shard) {
            Some(seen) if seen.counter == counter => now.saturating_duration_since(seen.since),
            Some(seen) => {
                *seen = Seen {
                    counter,
                    since: now,
                };
                Duration::ZERO
            }
            None => {
                self.seen.insert(
                    shard.to_owned(),
                    Seen {
                        counter,
                        since: now,
                    },
                );
                Duration::ZERO
            }
        }
    }

    /// Forgets the shards for which `keep` is false (their items left the table).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.seen.retain(|shard, _| keep(shard));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_stands_still_ages_and_a_moving_one_does_not() {
        let start = Instant::now();
        let mut clock = ExpiryClock::default();
        assert_eq!(clock.observe("a", 7, start), Duration::ZERO);
        let later = start + Duration::from_secs(4);
        assert_eq!(clock.observe("a", 7, later), Duration::from_secs(4));
        assert_eq!(clock.observe("a", 8, later), Duration::ZERO);
        assert_eq!(
            clock.observe("a", 8, later + Duration::from_secs(11)),
            Duration::from_secs(11)
        );
    }

    #[test]
    fn a_forgotten_shard_starts_over() {
        let start = Instant::now();
        let mut clock = ExpiryClock::default();
        clock.observe("a", 1, start);
        clock.observe("b", 1, start);
        clock.retain(|shard| shard == "b");
        let later = start + Duration::from_secs(30);
        assert_eq!(clock.observe("a", 1, later), Duration::ZERO);
        assert_eq!(clock.observe("b", 1, later), Duration::from_secs(30));
    }
}
