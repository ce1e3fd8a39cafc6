//! One partner as the receiver serves it: its compiled source, its auth, its limits and the
//! producer that carries its events to its stream.

use std::num::NonZeroU32;
use std::path::Path;

use adpipe_core::secrets::{Secret, SecretError, SecretFile};
use adpipe_core::source::{Mapper, SourceFormat};
use adpipe_core::spec::{AckMode, AuthSpec, PipelineDocument};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::metrics::PartnerMetrics;
use crate::producer::Producer;

/// Everything the handler needs to serve one partner.
#[derive(Debug)]
pub struct Partner {
    /// `spec.partner`.
    pub name: String,
    /// What the partner sends.
    pub format: SourceFormat,
    /// The compiled mapping.
    pub mapper: Mapper,
    /// The auth scheme.
    pub auth: AuthSpec,
    secret: Option<SecretFile>,
    /// What a success answer promises.
    pub ack: AckMode,
    /// Largest accepted body.
    pub max_body_bytes: u64,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The partner's stream producer.
    pub producer: Producer,
    /// The partner's metric handles.
    pub metrics: PartnerMetrics,
}

impl Partner {
    /// Prepares a partner; fails when its secret cannot be read, so a misconfigured
    /// receiver never starts accepting traffic it would refuse.
    pub fn new(
        pipeline: &PipelineDocument,
        secrets_dir: &Path,
        producer: Producer,
        metrics: PartnerMetrics,
    ) -> Result<Partner, SecretError> {
        let spec = &pipeline.spec;
        let secret = spec
            .source
            .auth
            .secret_ref()
            .map(|r| SecretFile::open(secrets_dir, r))
            .transpose()?;
        let limiter = spec.receiver.rate_limit.and_then(|limit| {
            let rate = NonZeroU32::new(limit.requests_per_second)?;
            let burst = limit.burst.and_then(NonZeroU32::new).unwrap_or(rate);
            Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Ok(Partner {
            name: spec.partner.clone(),
            format: spec.source.format,
            mapper: Mapper::new(&spec.partner, &spec.source),
            auth: spec.source.auth.clone(),
            secret,
            ack: spec.receiver.ack,
            max_body_bytes: spec.receiver.max_body_bytes,
            limiter,
            producer,
            metrics,
        })
    }

    /// The current secret, re-read when the mounted file changes.
    pub fn secret(&self) -> Option<std::sync::Arc<Secret>> {
        self.secret.as_ref().map(SecretFile::get)
    }

    /// Takes a token from the partner's rate limit; `false` means `429`.
    pub fn admit(&self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }
}
