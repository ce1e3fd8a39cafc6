//! AWS configuration from the SDK's standard chain, and the clients built on it.
//!
//! ```text
//! AWS_REGION, AWS_ENDPOINT_URL[_<SERVICE>], credentials (env, profile, IRSA / Pod Identity)
//!   └─▶ load() ─▶ SdkConfig ─▶ kinesis_client / s3_client / glue_client
//! ```
//!
//! There is deliberately no endpoint or region option of our own: what the SDK's standard
//! chain resolves is what every adpipe binary uses, in the cluster and against moto alike.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::retry::RetryConfig;

/// Attempts per S3 request, the first included. The SDK's standard retry mode retries 5xx
/// answers, `SlowDown` and other throttling with exponential backoff and jitter; five attempts
/// ride out a short S3 brown-out before the deliverer's own retry takes over.
pub const S3_MAX_ATTEMPTS: u32 = 5;

/// The service-specific endpoint variable of S3 (the global one, `AWS_ENDPOINT_URL`, shows up
/// in [`SdkConfig::endpoint_url`]).
const S3_ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_S3";

/// Loads region, credentials and endpoint from the SDK's standard chain.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A Kinesis client on `config`.
pub fn kinesis_client(config: &SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(config)
}

/// A Glue client on `config`.
pub fn glue_client(config: &SdkConfig) -> aws_sdk_glue::Client {
    aws_sdk_glue::Client::new(config)
}

/// An S3 client on `config`, with [`S3_MAX_ATTEMPTS`] attempts per request in the standard
/// retry mode.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config)
        .retry_config(RetryConfig::standard().with_max_attempts(S3_MAX_ATTEMPTS));
    // NOTE: path-style addressing (`http://host/bucket/key`) only when an endpoint is
    // configured: S3 emulators such as moto on 127.0.0.1 have no `{bucket}.host` names, while
    // real S3 wants virtual-hosted style (path style is deprecated there).
    let custom_endpoint =
        config.endpoint_url().is_some() || std::env::var_os(S3_ENDPOINT_ENV).is_some();
    aws_sdk_s3::Client::from_conf(builder.force_path_style(custom_endpoint).build())
}
