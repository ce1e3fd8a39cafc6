//! Kinesis' per-shard write limits, for overload runs: each shard takes at most 1 MiB and
//! 1 000 records a second; a record over the limit is refused with
//! `ProvisionedThroughputExceededException` and the producer must send it again later.
//!
//! ```text
//! record on shard S ─▶ S's buckets (bytes, records) refilled at the limit, one second deep
//!                        ├─ both hold enough ─▶ take, accept
//!                        └─ otherwise        ─▶ refuse (nothing taken)
//! ```

use std::time::Instant;

/// A shard's write limit in bytes (data plus partition key) per second.
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// A shard's write limit in records per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;

/// One shard's buckets.
#[derive(Debug, Clone)]
struct Buckets {
    bytes: f64,
    records: f64,
    at: Instant,
}

/// Write limits of every shard of a stream.
#[derive(Debug, Clone)]
pub struct Throttle {
    shards: Vec<Buckets>,
}

impl Throttle {
    /// Full buckets for `shards` shards at `now`.
    pub fn new(shards: usize, now: Instant) -> Throttle {
        Throttle {
            shards: vec![
                Buckets {
                    bytes: SHARD_BYTES_PER_SEC,
                    records: SHARD_RECORDS_PER_SEC,
                    at: now,
                };
                shards
            ],
        }
    }

    /// Whether shard `shard` takes a record of `bytes` at `now`; takes its share if so.
    pub fn admit(&mut self, shard: usize, bytes: usize, now: Instant) -> bool {
        let Some(b) = self.shards.get_mut(shard) else {
            return true;
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now;
        b.bytes = (b.bytes + elapsed * SHARD_BYTES_PER_SEC).min(SHARD_BYTES_PER_SEC);
        b.records = (b.records + elapsed * SHARD_RECORDS_PER_SEC).min(SHARD_RECORDS_PER_SEC);
        let size = bytes as f64;
        if b.bytes >= size && b.records >= 1.0 {
            b.bytes -= size;
            b.records -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_shard_takes_a_second_of_writes_then_refills() {
        let start = Instant::now();
        let mut throttle = Throttle::new(2, start);
        let taken = (0..1500).filter(|_| throttle.admit(0, 10, start)).count();
        assert_eq!(taken, 1000);
        // The other shard has its own limit.
        assert!(throttle.admit(1, 10, start));
        // Half a second later, half the records are allowed again.
        let later = start + Duration::from_millis(500);
        let taken = (0..1000).filter(|_| throttle.admit(0, 10, later)).count();
        assert_eq!(taken, 500);
    }

    #[test]
    fn bytes_are_limited_too() {
        let start = Instant::now();
        let mut throttle = Throttle::new(1, start);
        assert!(throttle.admit(0, 600 * 1024, start));
        assert!(!throttle.admit(0, 600 * 1024, start));
        assert!(throttle.admit(0, 400 * 1024, start));
    }
}
