//! `config::load()`: production code finds moto through the SDK's standard chain alone —
//! `AWS_ENDPOINT_URL`, `AWS_REGION` and credentials from the environment — and S3 then uses
//! path-style addressing: the endpoint is given as `localhost`, where a virtual-hosted
//! `{bucket}.localhost` would not reach moto.
//!
//! The environment of a running test cannot be changed safely, so the test runs itself again
//! as a child process with that environment and checks that the child passed.

use std::process::Command;

use adpipe_aws::S3Sink;
use adpipe_aws::config::{kinesis_client, load, s3_client};
use adpipe_aws::kinesis::admin;
use adpipe_core::sink::ObjectSink;
use bytes::Bytes;

use crate::support::{REGION, moto, unique};

/// Set in the child: the test does the work instead of starting a child.
const CHILD: &str = "ADPIPE_AWS_STANDARD_CHAIN_CHILD";
const TEST_NAME: &str = "config::the_standard_chain_reaches_moto_through_the_environment";

#[tokio::test]
async fn the_standard_chain_reaches_moto_through_the_environment() {
    if std::env::var_os(CHILD).is_some() {
        let config = load().await;
        assert_eq!(config.region().map(|r| r.as_ref()), Some(REGION));
        let s3 = s3_client(&config);
        let bucket = unique("chain");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        S3Sink::new(s3.clone(), &bucket)
            .put("a/b.parquet", Bytes::from_static(b"PAR1"))
            .await
            .unwrap();
        let object = s3
            .get_object()
            .bucket(&bucket)
            .key("a/b.parquet")
            .send()
            .await
            .unwrap();
        assert_eq!(
            &object.body.collect().await.unwrap().into_bytes()[..],
            b"PAR1"
        );
        let stream = unique("chain");
        let summary = admin::create_stream(&kinesis_client(&config), &stream, None, 24)
            .await
            .unwrap();
        assert!(summary.on_demand && summary.active);
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env(
            "AWS_ENDPOINT_URL",
            moto().endpoint.replace("127.0.0.1", "localhost"),
        )
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        // Nothing from this machine's own AWS setup may take part.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("AWS_ENDPOINT_URL_KINESIS")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
}
