//! Every metric of the receiver, owned by one struct on an explicit registry.
//!
//! Names follow `adpipe_receiver_<what>_<unit>[_total]`; labels come from bounded sets only
//! (partner, route, status code, rejection reason, retry cause).

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Kinesis bills PUT payload in units of 25 KB per record, rounded up.
pub const PUT_PAYLOAD_UNIT_BYTES: usize = 25 * 1024;

/// The receiver's metric families.
#[derive(Clone, Debug)]
pub struct ReceiverMetrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    events_accepted: IntCounterVec,
    events_rejected: IntCounterVec,
    buffered_bytes: IntGaugeVec,
    put_duration: HistogramVec,
    put_calls: IntCounterVec,
    stream_records: IntCounterVec,
    user_records_per_record: HistogramVec,
    put_retries: IntCounterVec,
    billed_units: IntCounterVec,
    connections: ConnectionMetrics,
}

/// The accept loop's metrics: receiver-wide, as connections belong to no partner until a
/// request names one.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounter,
}

impl ConnectionMetrics {
    /// A connection was accepted, to be served or refused.
    pub fn opened(&self) {
        self.open.inc();
    }

    /// A connection ended.
    pub fn closed(&self) {
        self.open.dec();
    }

    /// A connection past the limit was answered `503`.
    pub fn refused(&self) {
        self.refused.inc();
    }
}

impl ReceiverMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<ReceiverMetrics, prometheus::Error> {
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let m = ReceiverMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_requests_total",
                    "HTTP requests by partner, route and status code",
                ),
                &["partner", "route", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "adpipe_receiver_request_duration_seconds",
                    "Time from request to response",
                )
                .buckets(latency.clone()),
                &["partner", "route"],
            )?,
            events_accepted: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_events_accepted_total",
                    "Events accepted into the stream buffer",
                ),
                &["partner"],
            )?,
            events_rejected: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_events_rejected_total",
                    "Events rejected, by reason",
                ),
                &["partner", "reason"],
            )?,
            buffered_bytes: IntGaugeVec::new(
                Opts::new(
                    "adpipe_receiver_buffered_bytes",
                    "Bytes of events waiting for the stream to acknowledge them",
                ),
                &["partner"],
            )?,
            put_duration: HistogramVec::new(
                HistogramOpts::new(
                    "adpipe_receiver_put_duration_seconds",
                    "Duration of stream put calls",
                )
                .buckets(latency),
                &["partner"],
            )?,
            put_calls: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_put_calls_total",
                    "Stream put calls by result",
                ),
                &["partner", "result"],
            )?,
            stream_records: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_stream_records_total",
                    "Aggregated records accepted by the stream",
                ),
                &["partner"],
            )?,
            user_records_per_record: HistogramVec::new(
                HistogramOpts::new(
                    "adpipe_receiver_user_records_per_stream_record",
                    "Events packed into one aggregated stream record",
                )
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                ]),
                &["partner"],
            )?,
            put_retries: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_put_retries_total",
                    "Stream records sent again, by cause",
                ),
                &["partner", "cause"],
            )?,
            billed_units: IntCounterVec::new(
                Opts::new(
                    "adpipe_receiver_billed_put_units_total",
                    "Kinesis PUT payload units (25 KB each, per record) used",
                ),
                &["partner"],
            )?,
            connections: ConnectionMetrics {
                open: IntGauge::new(
                    "adpipe_receiver_connections",
                    "Client connections open, served or being refused",
                )?,
                refused: IntCounter::new(
                    "adpipe_receiver_connections_refused_total",
                    "Connections answered 503 because the receiver had as many open as it serves",
                )?,
            },
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.events_accepted.clone()))?;
        registry.register(Box::new(m.events_rejected.clone()))?;
        registry.register(Box::new(m.buffered_bytes.clone()))?;
        registry.register(Box::new(m.put_duration.clone()))?;
        registry.register(Box::new(m.put_calls.clone()))?;
        registry.register(Box::new(m.stream_records.clone()))?;
        registry.register(Box::new(m.user_records_per_record.clone()))?;
        registry.register(Box::new(m.put_retries.clone()))?;
        registry.register(Box::new(m.billed_units.clone()))?;
        registry.register(Box::new(m.connections.open.clone()))?;
        registry.register(Box::new(m.connections.refused.clone()))?;
        Ok(m)
    }

    /// The handles of the accept loop.
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
    }

    /// The handles of one partner, with its label bound once.
    pub fn partner(&self, partner: &str) -> PartnerMetrics {
        PartnerMetrics {
            partner: partner.to_owned(),
            families: self.clone(),
            events_accepted: self.events_accepted.with_label_values(&[partner]),
            buffered_bytes: self.buffered_bytes.with_label_values(&[partner]),
            put_duration: self.put_duration.with_label_values(&[partner]),
            put_ok: self.put_calls.with_label_values(&[partner, "ok"]),
            put_error: self.put_calls.with_label_values(&[partner, "error"]),
            stream_records: self.stream_records.with_label_values(&[partner]),
            user_records_per_record: self.user_records_per_record.with_label_values(&[partner]),
            retries_throttled: self.put_retries.with_label_values(&[partner, "throttled"]),
            retries_failed: self.put_retries.with_label_values(&[partner, "failed"]),
            billed_units: self.billed_units.with_label_values(&[partner]),
        }
    }
}

/// One partner's metric handles.
#[derive(Clone, Debug)]
pub struct PartnerMetrics {
    partner: String,
    families: ReceiverMetrics,
    events_accepted: IntCounter,
    buffered_bytes: IntGauge,
    put_duration: Histogram,
    put_ok: IntCounter,
    put_error: IntCounter,
    stream_records: IntCounter,
    user_records_per_record: Histogram,
    retries_throttled: IntCounter,
    retries_failed: IntCounter,
    billed_units: IntCounter,
}

impl PartnerMetrics {
    /// A request was answered.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.families
            .requests
            .with_label_values(&[self.partner.as_str(), route, status_label(status)])
            .inc();
        self.families
            .request_duration
            .with_label_values(&[self.partner.as_str(), route])
            .observe(took.as_secs_f64());
    }

    /// Events were handed to the producer.
    pub fn events_accepted(&self, n: usize) {
        self.events_accepted.inc_by(n as u64);
    }

    /// An event was rejected for `reason` (a bounded category).
    pub fn event_rejected(&self, reason: &str) {
        self.families
            .events_rejected
            .with_label_values(&[self.partner.as_str(), reason])
            .inc();
    }

    /// The producer's current buffer use, set at scrape time.
    pub fn set_buffered_bytes(&self, bytes: usize) {
        self.buffered_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A stream put call returned.
    pub fn put_finished(&self, took: Duration, ok: bool) {
        self.put_duration.observe(took.as_secs_f64());
        if ok {
            self.put_ok.inc()
        } else {
            self.put_error.inc()
        }
    }

    /// An aggregated record was sealed with `user_records` events.
    pub fn record_sealed(&self, user_records: usize) {
        self.user_records_per_record.observe(user_records as f64);
    }

    /// The stream accepted an aggregated record of `bytes` bytes.
    pub fn record_put(&self, bytes: usize) {
        self.stream_records.inc();
        self.billed_units
            .inc_by(bytes.div_ceil(PUT_PAYLOAD_UNIT_BYTES) as u64);
    }

    /// A record is sent again.
    pub fn put_retried(&self, throttled: bool) {
        if throttled {
            self.retries_throttled.inc()
        } else {
            self.retries_failed.inc()
        }
    }
}

/// Status codes as label values without allocating.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}
