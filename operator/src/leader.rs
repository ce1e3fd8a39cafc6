//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas can run and
//! only one reconciles.
//!
//! ```text
//! acquire: GET lease ─▶ absent ─▶ create (holder = me)
//!                   ─▶ held by me ─▶ renew
//!                   ─▶ held by another, unchanged for a whole lease duration ─▶ take over
//!                   ─▶ otherwise wait and retry
//! hold:    renew every RENEW_EVERY; returns when the lease is lost (the process then exits,
//!          and its restart becomes a candidate again)
//! release: on shutdown, clear the holder so a standby takes over at once
//! ```
//!
//! Writes are guarded by the Lease's `resourceVersion`, so two candidates can never both
//! win a round. Expiry is judged on this process's monotonic clock from when it last saw the
//! record change, not on the holder's timestamps, so clock skew between nodes does not
//! matter. (Existing crates, `kube-leader-election` and `kube-lease-manager`, pin kube
//! versions this workspace does not use.)

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a holder that stopped renewing keeps the lease.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and a candidate retries.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The lease record as another holder last wrote it, and when this process first saw it so.
struct Observed {
    holder: Option<String>,
    renewed: Option<MicroTime>,
    since: Instant,
}

/// One candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The record last seen and when it was first seen in that state.
    observed: Mutex<Option<Observed>>,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `name` that `api` points into.
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            observed: Mutex::new(None),
        }
    }

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        loop {
            if self.try_acquire_or_renew().await? {
                tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                return Ok(());
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews the lease until it is lost; returns then.
    pub async fn hold(&self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to renew the leader lease");
                    if last_renewed.elapsed() >= LEASE_DURATION {
                        break;
                    }
                }
            }
        }
        tracing::error!(lease = %self.name, "lost the leader lease");
    }

    /// Gives the lease up so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "failed to release the leader lease");
        }
    }

    /// One round: `true` when this candidate holds the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(&self.identity);
        if !mine && holder.is_some() && !self.expired(&spec).await {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if mine {
            LeaseSpec {
                renew_time: Some(now),
                ..spec
            }
        } else {
            self.held_spec(now, transitions.saturating_add(1))
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn held_spec(&self, now: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(LEASE_DURATION.as_secs()).ok(),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether the other holder's record has stood still for a whole lease duration.
    async fn expired(&self, spec: &LeaseSpec) -> bool {
        let mut observed = self.observed.lock().await;
        match &*observed {
            Some(seen)
                if seen.holder == spec.holder_identity && seen.renewed == spec.renew_time =>
            {
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(LEASE_DURATION, Duration::from_secs);
                seen.since.elapsed() >= duration
            }
            _ => {
                *observed = Some(Observed {
                    holder: spec.holder_identity.clone(),
                    renewed: spec.renew_time.clone(),
                    since: Instant::now(),
                });
                false
            }
        }
    }
}
