//! The one place DynamoDB failures are classified: the outcomes the lease logic branches on
//! (a failed condition, a table that already exists) and, for everything else, the
//! [`StreamError`] the deliverer retries or reports.

use adpipe_core::stream::StreamError;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What a failed DynamoDB call means to the lease logic.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The condition of a conditional write did not hold: someone else wrote the item first.
    ConditionFailed(String),
    /// `CreateTable` of a table that exists or is being created.
    AlreadyExists(String),
    /// Anything else, as the stream error the caller returns.
    Stream(StreamError),
}

impl Failure {
    /// The failure as a stream error, for a call where none of the expected outcomes applies.
    pub(crate) fn into_stream(self) -> StreamError {
        match self {
            Failure::ConditionFailed(message) | Failure::AlreadyExists(message) => {
                StreamError::Unavailable(message)
            }
            Failure::Stream(err) => err,
        }
    }
}

/// Error codes DynamoDB uses to ask a client to slow down.
const THROTTLING_CODES: [&str; 4] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Classifies a failed call; `step` says what was being done, for the message.
pub(crate) fn classify<E>(step: &str, err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(ToOwned::to_owned);
    let message = format!("failed to {step}: {}", DisplayErrorContext(&err));
    match code.as_deref() {
        Some("ConditionalCheckFailedException") => return Failure::ConditionFailed(message),
        Some("ResourceInUseException") => return Failure::AlreadyExists(message),
        Some("ResourceNotFoundException") => {
            return Failure::Stream(StreamError::NotFound(message));
        }
        Some(code) if THROTTLING_CODES.contains(&code) => {
            return Failure::Stream(StreamError::Throttled(message));
        }
        _ => {}
    }
    // NOTE: every other failure — 5xx, timeouts, connection errors, and 4xx the lease logic
    // does not expect — is reported as the backend being unavailable: the supervisor backs
    // off and calls again, and a lease it can no longer renew expires for the others.
    Failure::Stream(StreamError::Unavailable(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

    fn service_error(code: &str, status: u16) -> SdkError<UpdateItemError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("test").build();
        let response = HttpResponse::new(status.try_into().unwrap(), "".into());
        SdkError::service_error(UpdateItemError::generic(meta), response)
    }

    #[test]
    fn failures_are_sorted_into_what_the_caller_does_next() {
        let classify = |code, status| classify("update lease", service_error(code, status));
        assert!(matches!(
            classify("ConditionalCheckFailedException", 400),
            Failure::ConditionFailed(_)
        ));
        assert!(matches!(
            classify("ResourceInUseException", 400),
            Failure::AlreadyExists(_)
        ));
        assert!(matches!(
            classify("ProvisionedThroughputExceededException", 400),
            Failure::Stream(StreamError::Throttled(_))
        ));
        assert!(matches!(
            classify("ThrottlingException", 400),
            Failure::Stream(StreamError::Throttled(_))
        ));
        assert!(matches!(
            classify("ResourceNotFoundException", 400),
            Failure::Stream(StreamError::NotFound(_))
        ));
        match classify("InternalServerError", 500) {
            Failure::Stream(StreamError::Unavailable(message)) => {
                assert!(message.starts_with("failed to update lease"), "{message}");
            }
            other => panic!("5xx must be retried as unavailable, got {other:?}"),
        }
    }

    #[test]
    fn a_connection_failure_is_unavailable() {
        let err: SdkError<UpdateItemError, HttpResponse> =
            SdkError::timeout_error("no answer within the timeout");
        assert!(matches!(
            classify("renew lease", err),
            Failure::Stream(StreamError::Unavailable(_))
        ));
    }
}
