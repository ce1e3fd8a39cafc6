//! Every metric of one partner's deliverer, owned by one struct on an explicit registry.
//!
//! Names follow `adpipe_deliverer_<what>_<unit>[_total]`. `partner` is a constant label of
//! each collector, so several deliverers (one per pipeline in `adpipe local`) register the
//! same families on one registry and their series merge on scrape. Variable labels come
//! from bounded sets only: `shard` (bounded by the stream's shard count), decode error
//! `reason` (the categories of [`crate::decode::ErrorCategory`]) and object `kind`
//! (`data`, `errors`).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::batch::ObjectKind;
use crate::decode::ErrorCategory;

/// Flushes take from a few milliseconds (a small local file) to tens of seconds (a
/// 128 MiB object to S3 with retries).
const FLUSH_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The deliverer's metric handles for one partner.
#[derive(Clone, Debug)]
pub(crate) struct DelivererMetrics {
    records_read: IntCounterVec,
    user_records: IntCounterVec,
    events_written: IntCounter,
    decode_errors: IntCounterVec,
    files_written: IntCounterVec,
    bytes_written: IntCounterVec,
    flush_duration: Histogram,
    behind_latest: GaugeVec,
    read_retries: IntCounterVec,
    sink_retries: IntCounter,
    worker_restarts: IntCounterVec,
    leases_lost: IntCounterVec,
    shards_owned: IntGauge,
    partitions_registered: IntCounter,
    catalog_retries: IntCounter,
}

impl DelivererMetrics {
    /// Creates `partner`'s collectors and registers them on `registry`.
    pub(crate) fn register(
        registry: &Registry,
        partner: &str,
    ) -> Result<DelivererMetrics, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("partner", partner);
        let m = DelivererMetrics {
            records_read: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_records_read_total",
                    "Stream records read, aggregated or plain",
                ),
                &["shard"],
            )?,
            user_records: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_user_records_total",
                    "User records unpacked from stream records",
                ),
                &["shard"],
            )?,
            events_written: IntCounter::with_opts(opts(
                "adpipe_deliverer_events_written_total",
                "Events in Parquet files that are durable and checkpointed",
            ))?,
            decode_errors: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_decode_errors_total",
                    "Records or user records sent to the error files, by reason",
                ),
                &["reason"],
            )?,
            files_written: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_files_written_total",
                    "Lake objects stored, by kind (data or errors)",
                ),
                &["kind"],
            )?,
            bytes_written: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_bytes_written_total",
                    "Bytes of lake objects stored, by kind (data or errors)",
                ),
                &["kind"],
            )?,
            flush_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "adpipe_deliverer_flush_duration_seconds",
                    "Time to encode, store and checkpoint one batch",
                )
                .const_label("partner", partner)
                .buckets(FLUSH_BUCKETS.to_vec()),
            )?,
            behind_latest: GaugeVec::new(
                opts(
                    "adpipe_deliverer_behind_latest_seconds",
                    "How far the last read record is behind the shard's tip",
                ),
                &["shard"],
            )?,
            read_retries: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_read_retries_total",
                    "Shard reads retried after throttling or unavailability",
                ),
                &["shard"],
            )?,
            sink_retries: IntCounter::with_opts(opts(
                "adpipe_deliverer_sink_retries_total",
                "Object puts retried after a sink error",
            ))?,
            worker_restarts: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_worker_restarts_total",
                    "Shard workers restarted from their checkpoint after an error",
                ),
                &["shard"],
            )?,
            leases_lost: IntCounterVec::new(
                opts(
                    "adpipe_deliverer_leases_lost_total",
                    "Shard workers stopped because another worker of the group took their lease",
                ),
                &["shard"],
            )?,
            shards_owned: IntGauge::with_opts(opts(
                "adpipe_deliverer_shards_owned",
                "Shards this worker held the lease of at the last successful sync",
            ))?,
            partitions_registered: IntCounter::with_opts(opts(
                "adpipe_deliverer_partitions_registered_total",
                "Lake partitions registered in the catalog by this process",
            ))?,
            catalog_retries: IntCounter::with_opts(opts(
                "adpipe_deliverer_catalog_retries_total",
                "Catalog calls (create table, add partition) retried after an error",
            ))?,
        };
        let collectors: [Box<dyn Collector>; 15] = [
            Box::new(m.records_read.clone()),
            Box::new(m.user_records.clone()),
            Box::new(m.events_written.clone()),
            Box::new(m.decode_errors.clone()),
            Box::new(m.files_written.clone()),
            Box::new(m.bytes_written.clone()),
            Box::new(m.flush_duration.clone()),
            Box::new(m.behind_latest.clone()),
            Box::new(m.read_retries.clone()),
            Box::new(m.sink_retries.clone()),
            Box::new(m.worker_restarts.clone()),
            Box::new(m.leases_lost.clone()),
            Box::new(m.shards_owned.clone()),
            Box::new(m.partitions_registered.clone()),
            Box::new(m.catalog_retries.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(m)
    }

    /// A stream record and the user records it held were read.
    pub(crate) fn record_read(&self, shard: &str, user_records: usize) {
        self.records_read.with_label_values(&[shard]).inc();
        self.user_records
            .with_label_values(&[shard])
            .inc_by(user_records as u64);
    }

    /// A record or user record went to an error file.
    pub(crate) fn decode_error(&self, category: ErrorCategory) {
        self.decode_errors
            .with_label_values(&[category.as_str()])
            .inc();
    }

    /// An object was stored.
    pub(crate) fn object_written(&self, kind: ObjectKind, bytes: usize) {
        self.files_written.with_label_values(&[kind.as_str()]).inc();
        self.bytes_written
            .with_label_values(&[kind.as_str()])
            .inc_by(bytes as u64);
    }

    /// A batch was stored and checkpointed.
    pub(crate) fn batch_flushed(&self, events: usize, took: Duration) {
        self.events_written.inc_by(events as u64);
        self.flush_duration.observe(took.as_secs_f64());
    }

    /// The backend said how far the shard's reader is behind.
    pub(crate) fn behind_latest(&self, shard: &str, millis: u64) {
        self.behind_latest
            .with_label_values(&[shard])
            .set(millis as f64 / 1000.0);
    }

    /// A read failed transiently and will be retried.
    pub(crate) fn read_retried(&self, shard: &str) {
        self.read_retries.with_label_values(&[shard]).inc();
    }

    /// A put failed and will be retried.
    pub(crate) fn sink_retried(&self) {
        self.sink_retries.inc();
    }

    /// A shard worker failed and will restart from its checkpoint.
    pub(crate) fn worker_restarted(&self, shard: &str) {
        self.worker_restarts.with_label_values(&[shard]).inc();
    }

    /// A shard worker stopped because its lease was taken.
    pub(crate) fn lease_lost(&self, shard: &str) {
        self.leases_lost.with_label_values(&[shard]).inc();
    }

    /// A sync said how many shards this worker owns now.
    pub(crate) fn shards_owned(&self, shards: usize) {
        self.shards_owned
            .set(i64::try_from(shards).unwrap_or(i64::MAX));
    }

    /// A partition was registered in the catalog.
    pub(crate) fn partition_registered(&self) {
        self.partitions_registered.inc();
    }

    /// A catalog call failed and will be retried.
    pub(crate) fn catalog_retried(&self) {
        self.catalog_retries.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_partners_share_one_registry() {
        let registry = Registry::new();
        let acme = DelivererMetrics::register(&registry, "acme-video").unwrap();
        let beta = DelivererMetrics::register(&registry, "beta").unwrap();
        acme.record_read("shardId-0", 3);
        beta.record_read("shardId-0", 1);
        acme.batch_flushed(3, Duration::from_millis(20));
        assert!(
            DelivererMetrics::register(&registry, "acme-video").is_err(),
            "one deliverer per partner and registry"
        );

        let families = registry.gather();
        let user_records = families
            .iter()
            .find(|f| f.name() == "adpipe_deliverer_user_records_total")
            .unwrap();
        let mut series: Vec<(String, f64)> = user_records
            .get_metric()
            .iter()
            .map(|m| {
                let partner = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "partner")
                    .unwrap()
                    .value()
                    .to_owned();
                (partner, m.get_counter().get_value())
            })
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            series,
            [("acme-video".to_owned(), 3.0), ("beta".to_owned(), 1.0)]
        );
        assert!(
            families
                .iter()
                .any(|f| f.name() == "adpipe_deliverer_flush_duration_seconds")
        );
    }
}
