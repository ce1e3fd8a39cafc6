//! The operator's Prometheus metrics: how often it reconciles, how long that takes, why it
//! fails, how many API writes it makes (zero at steady state) and how many pipelines are
//! ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::error::Reason;

/// Reconciles of one pipeline take milliseconds (reads) to seconds (AWS calls).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Handles to every operator metric; cheap to clone.
#[derive(Clone)]
pub struct OperatorMetrics {
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    writes: IntCounterVec,
    pipelines: IntGaugeVec,
    readiness: Arc<Mutex<HashMap<String, &'static str>>>,
}

/// The metrics could not be registered (a name registered twice).
#[derive(Debug, thiserror::Error)]
#[error("failed to register the operator metrics: {0}")]
pub struct RegisterError(#[from] prometheus::Error);

impl OperatorMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, RegisterError> {
        let reconciles = IntCounterVec::new(
            Opts::new(
                "adpipe_operator_reconciles_total",
                "Reconciles of PartnerPipelines, by result",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "adpipe_operator_reconcile_errors_total",
                "Failed reconciles, by reason",
            ),
            &["reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "adpipe_operator_reconcile_duration_seconds",
                "Time to reconcile one PartnerPipeline",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &[],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "adpipe_operator_api_writes_total",
                "Creates, patches and deletes of owned objects, by kind (0 at steady state)",
            ),
            &["kind"],
        )?;
        let pipelines = IntGaugeVec::new(
            Opts::new(
                "adpipe_operator_pipelines",
                "PartnerPipelines by the status of a condition",
            ),
            &["condition", "status"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(pipelines.clone()))?;
        Ok(Self {
            reconciles,
            errors,
            duration,
            writes,
            pipelines,
            readiness: Arc::default(),
        })
    }

    /// Times one reconcile; the result is counted when the guard is finished.
    pub fn start(&self) -> prometheus::HistogramTimer {
        self.duration.with_label_values::<&str>(&[]).start_timer()
    }

    /// Counts a reconcile that succeeded.
    pub fn succeeded(&self) {
        self.reconciles.with_label_values(&["success"]).inc();
    }

    /// Counts a reconcile that failed for `reason`.
    pub fn failed(&self, reason: Reason) {
        self.reconciles.with_label_values(&["error"]).inc();
        self.errors.with_label_values(&[reason.as_str()]).inc();
    }

    /// Counts one write of an object of `kind`.
    pub fn write(&self, kind: &str) {
        self.writes.with_label_values(&[kind]).inc();
    }

    /// Records the `Ready` status of pipeline `key` (`namespace/name`); `None` when it was
    /// deleted.
    pub fn set_ready(&self, key: &str, status: Option<&'static str>) {
        let Ok(mut readiness) = self.readiness.lock() else {
            return;
        };
        match status {
            Some(status) => readiness.insert(key.to_owned(), status),
            None => readiness.remove(key),
        };
        for status in ["True", "False", "Unknown"] {
            let count = readiness.values().filter(|s| **s == status).count();
            self.pipelines
                .with_label_values(&["Ready", status])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}
