//! The lake's object layout, in one place:
//!
//! ```text
//! {prefix}/partner={partner}/dt={YYYY-MM-DD}/hour={HH}/{shard}-{firstSeq}-{lastSeq}.parquet
//! {prefix}/_errors/partner={partner}/dt={YYYY-MM-DD}/{shard}-{firstSeq}-{lastSeq}.jsonl.gz
//! ```
//!
//! Date and hour are those of `received_at`, UTC. Names derive only from the shard and the
//! sequence range, so writing the same range twice produces the same keys.

use std::fmt;

use chrono::{Datelike, Timelike};

use crate::event::EpochMillis;
use crate::stream::SequenceNumber;

/// One Hive partition of a partner's lake: a UTC date and hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// Year.
    pub year: i32,
    /// Month, 1–12.
    pub month: u32,
    /// Day of month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
}

impl Partition {
    /// The partition of an event received at `received_at`; times outside chrono's range
    /// (which no validated event has) fall into the epoch's partition.
    pub fn of(received_at: EpochMillis) -> Partition {
        let t = received_at.to_datetime().unwrap_or_default();
        Partition {
            year: t.year(),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
        }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `HH`.
    pub fn hour(&self) -> String {
        format!("{:02}", self.hour)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dt={}/hour={}", self.date(), self.hour())
    }
}

/// The sequence range and shard a file covers: the file's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpan<'a> {
    /// The shard id.
    pub shard_id: &'a str,
    /// First record in the file.
    pub first: &'a SequenceNumber,
    /// Last record in the file.
    pub last: &'a SequenceNumber,
}

impl fmt::Display for FileSpan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.shard_id, self.first, self.last)
    }
}

/// The key of a Parquet data file.
pub fn data_key(prefix: &str, partner: &str, partition: Partition, span: &FileSpan<'_>) -> String {
    format!(
        "{}partner={partner}/{partition}/{span}.parquet",
        with_slash(prefix)
    )
}

/// The key of a file of records the deliverer could not decode.
pub fn error_key(prefix: &str, partner: &str, partition: Partition, span: &FileSpan<'_>) -> String {
    format!(
        "{}_errors/partner={partner}/dt={}/{span}.jsonl.gz",
        with_slash(prefix),
        partition.date()
    )
}

/// The location of a partner's data, for table and summary output.
pub fn partner_root(prefix: &str, partner: &str) -> String {
    format!("{}partner={partner}/", with_slash(prefix))
}

fn with_slash(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_contract() {
        // 2026-11-28T13:05:00Z
        let p = Partition::of(EpochMillis(1_795_871_100_000));
        let first = SequenceNumber::from_u64(0);
        let last = SequenceNumber::from_u64(4096);
        let span = FileSpan {
            shard_id: "shardId-000000000001",
            first: &first,
            last: &last,
        };
        assert_eq!(
            data_key("events", "acme-video", p, &span),
            "events/partner=acme-video/dt=2026-11-28/hour=13/shardId-000000000001-0-4096.parquet"
        );
        assert_eq!(
            error_key("/events/", "acme-video", p, &span),
            "events/_errors/partner=acme-video/dt=2026-11-28/shardId-000000000001-0-4096.jsonl.gz"
        );
        assert_eq!(
            data_key("", "p", p, &span),
            "partner=p/dt=2026-11-28/hour=13/shardId-000000000001-0-4096.parquet"
        );
    }
}
