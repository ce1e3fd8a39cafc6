//! A moto server of `adpipe-testkit` per test, and DynamoDB clients pointed at it.

pub use adpipe_testkit::Moto;

/// A DynamoDB client of `moto`, with its endpoint and test credentials.
pub async fn dynamodb(moto: &Moto) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&moto.sdk_config().await)
}
