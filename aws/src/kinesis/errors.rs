//! What a Kinesis failure means to the caller, decided in one place:
//!
//! ```text
//! whole call failed ──▶ classify()      ──▶ StreamError::{NotFound, Throttled, Unavailable}
//! one entry failed  ──▶ entry_outcome() ──▶ PutOutcome::Failed { retryable }
//! ```
//!
//! The SDK has already retried transient failures (standard retry mode) by the time an error
//! reaches these functions; what is left is either persistent or throttling that the caller
//! treats as back-pressure.

use adpipe_core::stream::{PutOutcome, SequenceNumber, StreamError};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::PutRecordsResultEntry;

/// Error codes saying the stream or shard does not exist.
const NOT_FOUND_CODES: [&str; 1] = ["ResourceNotFoundException"];

/// Error codes saying "slow down": the shard's write or read limits, the account's control
/// plane limits, or KMS throttling on an encrypted stream.
const THROTTLING_CODES: [&str; 4] = [
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
];

/// HTTP status of a throttled request whatever its error code says.
const TOO_MANY_REQUESTS: u16 = 429;

/// Per-entry error codes of `PutRecords` that a second attempt can fix: the shard's write
/// limit, and the service's own transient failure. Any other code (KMS key disabled, access
/// denied, …) fails the same way again.
const RETRYABLE_ENTRY_CODES: [&str; 2] =
    ["ProvisionedThroughputExceededException", "InternalFailure"];

/// The code given to an entry the service answered with neither a result nor an error code.
const MALFORMED_ENTRY_CODE: &str = "MalformedResultEntry";

/// Maps a failed Kinesis call to the stream error the producer and the deliverer act on.
pub(crate) fn classify<E>(operation: &'static str, err: SdkError<E>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = format!("{operation}: {}", DisplayErrorContext(&err));
    if !matches!(err, SdkError::ServiceError(_)) {
        // Construction, dispatch, timeout and unparsable responses: the service may be
        // unreachable, or the local configuration (region, credentials) incomplete.
        return StreamError::Unavailable(message);
    }
    let code = err.code().unwrap_or_default();
    let status = err
        .raw_response()
        .map(|response| response.status().as_u16());
    if NOT_FOUND_CODES.contains(&code) {
        StreamError::NotFound(message)
    } else if THROTTLING_CODES.contains(&code) || status == Some(TOO_MANY_REQUESTS) {
        StreamError::Throttled(message)
    } else {
        StreamError::Unavailable(message)
    }
}

/// The outcome of one `PutRecords` result entry.
pub(crate) fn entry_outcome(entry: &PutRecordsResultEntry) -> PutOutcome {
    let sequence = entry.sequence_number().and_then(SequenceNumber::parse);
    match (entry.error_code(), entry.shard_id(), sequence) {
        (None, Some(shard_id), Some(sequence)) => PutOutcome::Accepted {
            shard_id: shard_id.to_owned(),
            sequence,
        },
        (Some(code), _, _) => PutOutcome::Failed {
            code: code.to_owned(),
            message: entry.error_message().unwrap_or_default().to_owned(),
            retryable: RETRYABLE_ENTRY_CODES.contains(&code),
        },
        // NOTE: retryable, because an entry the service did not report as failed may well be
        // stored; sending it again risks a duplicate, never a loss.
        (None, _, _) => PutOutcome::Failed {
            code: MALFORMED_ENTRY_CODE.to_owned(),
            message: "the result entry has no shard id or sequence number".to_owned(),
            retryable: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::config::http::HttpResponse;
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_sdk_kinesis::operation::list_shards::ListShardsError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn service_error(code: &str, status: u16) -> SdkError<ListShardsError> {
        let error = ListShardsError::generic(ErrorMetadata::builder().code(code).build());
        let response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(error, response)
    }

    #[test]
    fn whole_call_errors_map_to_not_found_throttled_or_unavailable() {
        for (code, status, expected) in [
            ("ResourceNotFoundException", 400, "not found"),
            ("ProvisionedThroughputExceededException", 400, "throttled"),
            ("LimitExceededException", 400, "throttled"),
            ("SomethingNew", 429, "throttled"),
            ("InternalFailure", 500, "unavailable"),
            ("AccessDeniedException", 400, "unavailable"),
        ] {
            let got = match classify("ListShards", service_error(code, status)) {
                StreamError::NotFound(message) => ("not found", message),
                StreamError::Throttled(message) => ("throttled", message),
                StreamError::Unavailable(message) => ("unavailable", message),
                other => panic!("{code}: {other}"),
            };
            assert_eq!(got.0, expected, "{code} {status}");
            assert!(
                got.1.starts_with("ListShards: ") && got.1.contains(code),
                "{}",
                got.1
            );
        }
        let timeout = SdkError::<ListShardsError>::timeout_error("no answer in 3.1 s");
        assert!(matches!(
            classify("ListShards", timeout),
            StreamError::Unavailable(_)
        ));
    }

    fn failed(code: &str) -> PutOutcome {
        entry_outcome(
            &PutRecordsResultEntry::builder()
                .error_code(code)
                .error_message("rate exceeded")
                .build(),
        )
    }

    #[test]
    fn accepted_entries_carry_shard_and_sequence() {
        let entry = PutRecordsResultEntry::builder()
            .shard_id("shardId-000000000001")
            .sequence_number("49590338271490256608559692538361571095921575989136588818")
            .build();
        assert_eq!(
            entry_outcome(&entry),
            PutOutcome::Accepted {
                shard_id: "shardId-000000000001".to_owned(),
                sequence: SequenceNumber::parse(
                    "49590338271490256608559692538361571095921575989136588818"
                )
                .unwrap(),
            }
        );
    }

    #[test]
    fn throughput_and_internal_failures_are_retryable_others_not() {
        for (code, retryable) in [
            ("ProvisionedThroughputExceededException", true),
            ("InternalFailure", true),
            ("KMSDisabledException", false),
            ("AccessDeniedException", false),
        ] {
            match failed(code) {
                PutOutcome::Failed {
                    code: got,
                    retryable: r,
                    message,
                } => {
                    assert_eq!((got.as_str(), r), (code, retryable));
                    assert_eq!(message, "rate exceeded");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_entry_without_result_is_a_retryable_failure() {
        let outcome = entry_outcome(&PutRecordsResultEntry::builder().shard_id("s").build());
        assert!(matches!(
            outcome,
            PutOutcome::Failed {
                retryable: true,
                ..
            }
        ));
    }
}
