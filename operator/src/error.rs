//! Why a reconcile failed, sorted into a fixed set of reasons: the reasons are metric labels
//! and condition reasons, so they must stay few and stable.

use adpipe_core::stream::StreamError;

use crate::children::BuildError;

/// A failed reconcile; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A Kinesis control-plane call failed.
    #[error("kinesis call failed: {0}")]
    Stream(#[from] StreamError),
    /// The children could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer failed: {0}")]
    Finalizer(String),
}

/// The fixed set of failure reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The API server refused a write because the object changed meanwhile.
    Conflict,
    /// The operator's ServiceAccount may not do something it needs.
    Forbidden,
    /// Any other Kubernetes API failure.
    KubernetesApi,
    /// Kinesis is throttling the operator.
    StreamThrottled,
    /// Kinesis could not be reached or refused the call.
    StreamUnavailable,
    /// The pipeline cannot be turned into objects.
    InvalidSpec,
}

impl Reason {
    /// The label value and condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Conflict => "Conflict",
            Reason::Forbidden => "Forbidden",
            Reason::KubernetesApi => "KubernetesApiError",
            Reason::StreamThrottled => "StreamThrottled",
            Reason::StreamUnavailable => "StreamUnavailable",
            Reason::InvalidSpec => "InvalidSpec",
        }
    }
}

impl Error {
    /// The reason this failure is counted and reported under.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => Reason::Conflict,
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => Reason::Forbidden,
            Error::Kube(_) | Error::Finalizer(_) => Reason::KubernetesApi,
            Error::Stream(StreamError::Throttled(_)) => Reason::StreamThrottled,
            Error::Stream(_) => Reason::StreamUnavailable,
            Error::Build(_) => Reason::InvalidSpec,
        }
    }
}
