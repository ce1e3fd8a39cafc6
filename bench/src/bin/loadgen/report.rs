//! What the load generator saw, tallied as answers come in and written out as JSON.
//!
//! ```text
//! answer (scheduled at, answered at, status | failure)
//!   ├─ scheduled inside the measured window ─▶ latency histogram, status / failure counts
//!   ├─ answered inside the measured window  ─▶ events acknowledged in the window (rate, CPU)
//!   └─ any time                             ─▶ whole-run counts
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded, in microseconds: one hour (longer is recorded as one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the latency histogram.
const LATENCY_DIGITS: u8 = 3;

/// Why a scheduled request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// The connection broke while sending or receiving.
    Io,
    /// No answer within `--timeout`.
    Timeout,
    /// Sent, but still unanswered when the run ended.
    Unfinished,
    /// Never sent: every connection was busy until the run ended.
    Unsent,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
            Failure::Unfinished => "unfinished",
            Failure::Unsent => "unsent",
        }
    }
}

/// The measured window and the tallies.
#[derive(Debug)]
pub struct Recorder {
    window: (Instant, Instant),
    batch: u64,
    latency_us: Histogram<u64>,
    scheduled: u64,
    statuses: BTreeMap<u16, u64>,
    failures: BTreeMap<Failure, u64>,
    missing_retry_after: u64,
    window_ok_events: u64,
    run_statuses: BTreeMap<u16, u64>,
    run_failures: BTreeMap<Failure, u64>,
}

impl Recorder {
    /// Tallies for requests of `batch` events, measuring those scheduled in `window`.
    pub fn new(window: (Instant, Instant), batch: usize) -> anyhow::Result<Recorder> {
        Ok(Recorder {
            window,
            batch: batch as u64,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_DIGITS)?,
            scheduled: 0,
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
            missing_retry_after: 0,
            window_ok_events: 0,
            run_statuses: BTreeMap::new(),
            run_failures: BTreeMap::new(),
        })
    }

    fn measured(&self, at: Instant) -> bool {
        at >= self.window.0 && at < self.window.1
    }

    fn latency(&mut self, scheduled: Instant, done: Instant) {
        self.scheduled += 1;
        let us = done.saturating_duration_since(scheduled).as_micros();
        self.latency_us
            .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
    }

    /// An HTTP answer; `retry_after` says whether it carried the header.
    pub fn answered(&mut self, scheduled: Instant, done: Instant, status: u16, retry_after: bool) {
        *self.run_statuses.entry(status).or_default() += 1;
        if status == 200 && self.measured(done) {
            self.window_ok_events += self.batch;
        }
        if self.measured(scheduled) {
            self.latency(scheduled, done);
            *self.statuses.entry(status).or_default() += 1;
            if matches!(status, 429 | 503) && !retry_after {
                self.missing_retry_after += 1;
            }
        }
    }

    /// A request that got no answer; its latency counts as at least `done - scheduled`.
    pub fn failed(&mut self, scheduled: Instant, done: Instant, failure: Failure) {
        *self.run_failures.entry(failure).or_default() += 1;
        if self.measured(scheduled) {
            self.latency(scheduled, done);
            *self.failures.entry(failure).or_default() += 1;
        }
    }

    /// The report of the run `header` describes.
    pub fn report(&self, header: Header, watched: Option<Watched>) -> Report {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let ok = self.statuses.get(&200).copied().unwrap_or(0);
        let failed_requests = self.scheduled - ok;
        let window = header.duration_s;
        Report {
            scheduled: self.scheduled,
            ok,
            ok_events: ok * self.batch,
            error_rate: if self.scheduled == 0 {
                0.0
            } else {
                failed_requests as f64 / self.scheduled as f64
            },
            statuses: labelled(&self.statuses),
            failures: self
                .failures
                .iter()
                .map(|(f, n)| (f.label().to_owned(), *n))
                .collect(),
            missing_retry_after: self.missing_retry_after,
            latency_ms: Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                max: self.latency_us.max() as f64 / 1000.0,
                mean: self.latency_us.mean() / 1000.0,
            },
            achieved_events_per_s: if window > 0.0 {
                self.window_ok_events as f64 / window
            } else {
                0.0
            },
            window_ok_events: self.window_ok_events,
            whole_run: WholeRun {
                statuses: labelled(&self.run_statuses),
                failures: self
                    .run_failures
                    .iter()
                    .map(|(f, n)| (f.label().to_owned(), *n))
                    .collect(),
            },
            header,
            watched,
        }
    }
}

fn labelled(counts: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    counts.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// What was asked of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// The URL posted to.
    pub url: String,
    /// Events per request.
    pub batch: usize,
    /// Bytes per request body.
    pub body_bytes: usize,
    /// Offered events a second.
    pub rate_events_per_s: f64,
    /// Seconds of warm-up before the window.
    pub warmup_s: f64,
    /// Seconds of the measured window.
    pub duration_s: f64,
    /// Keep-alive connections.
    pub connections: usize,
}

/// Latency percentiles from the scheduled send time, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Counts over warm-up, window and drain.
#[derive(Debug, Clone, Serialize)]
pub struct WholeRun {
    /// Answers by status.
    pub statuses: BTreeMap<String, u64>,
    /// Requests without an answer, by cause.
    pub failures: BTreeMap<String, u64>,
}

/// The process under test over the window (`--watch-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    /// Its pid.
    pub pid: u32,
    /// CPU seconds (user + system) it used during the window.
    pub cpu_seconds: f64,
    /// Largest resident size sampled during the run, KiB.
    pub rss_max_kib: u64,
    /// Its `VmHWM` at the end: the most it was ever resident, KiB.
    pub peak_kib: u64,
}

/// The JSON the load generator writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was asked.
    #[serde(flatten)]
    pub header: Header,
    /// Requests scheduled in the window.
    pub scheduled: u64,
    /// Of them, answered `200`.
    pub ok: u64,
    /// Events in those.
    pub ok_events: u64,
    /// Share of window requests without a `200`.
    pub error_rate: f64,
    /// Window answers by status.
    pub statuses: BTreeMap<String, u64>,
    /// Window requests without an answer, by cause.
    pub failures: BTreeMap<String, u64>,
    /// `429`/`503` answers without `Retry-After`.
    pub missing_retry_after: u64,
    /// Latency of window requests, from their scheduled time.
    pub latency_ms: Latency,
    /// Events acknowledged (`200`) during the window, a second.
    pub achieved_events_per_s: f64,
    /// Events acknowledged during the window.
    pub window_ok_events: u64,
    /// Counts over the whole run.
    pub whole_run: WholeRun,
    /// The process under test, when watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched: Option<Watched>,
}
