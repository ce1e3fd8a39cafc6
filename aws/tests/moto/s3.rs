//! `S3Sink`: a small object by PutObject and a large one by multipart upload both read back
//! byte for byte; a missing bucket is an error, not a silent success.

use adpipe_aws::S3Sink;
use adpipe_aws::config::s3_client;
use adpipe_aws::s3::{MULTIPART_THRESHOLD, PART_SIZE};
use adpipe_core::sink::{ObjectSink, SinkError};
use bytes::Bytes;

use crate::support::{moto, unique};

/// `len` bytes that differ from part to part, so a misplaced part changes the object.
fn body(len: usize) -> Bytes {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn read_back(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (Bytes, String) {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let etag = object.e_tag().unwrap_or_default().to_owned();
    (object.body.collect().await.unwrap().into_bytes(), etag)
}

#[tokio::test]
async fn small_and_multipart_objects_read_back_identical() {
    let client = s3_client(&moto().sdk_config().await);
    let bucket = unique("lake");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let sink = S3Sink::new(client.clone(), &bucket);

    let small = body(64 * 1024);
    let key = "events/partner=p/dt=2026-11-28/hour=13/shardId-000000000000-1-9.parquet";
    sink.put(key, small.clone()).await.unwrap();
    let (read, etag) = read_back(&client, &bucket, key).await;
    assert_eq!(read, small);
    assert!(
        !etag.contains('-'),
        "a single PutObject has a plain ETag, got {etag}"
    );

    // Two full parts and a short last one.
    let large = body(MULTIPART_THRESHOLD + PART_SIZE / 2);
    let key = "events/partner=p/dt=2026-11-28/hour=13/shardId-000000000000-10-99.parquet";
    sink.put(key, large.clone()).await.unwrap();
    let (read, etag) = read_back(&client, &bucket, key).await;
    assert_eq!(read.len(), large.len());
    assert!(
        read == large,
        "the multipart object differs from what was written"
    );
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "expected a 3-part ETag, got {etag}"
    );

    // Writing a key again replaces the object (replays after a crash rely on it).
    sink.put(key, small.clone()).await.unwrap();
    assert_eq!(read_back(&client, &bucket, key).await.0, small);
    let uploads = client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload is left open");
}

#[tokio::test]
async fn a_missing_bucket_fails_the_write() {
    let sink = S3Sink::new(
        s3_client(&moto().sdk_config().await),
        unique("no-such-bucket"),
    );
    for len in [10, MULTIPART_THRESHOLD] {
        let err = sink.put("k", body(len)).await.unwrap_err();
        assert!(
            matches!(&err, SinkError::Write { key, .. } if key == "k"),
            "{err}"
        );
    }
}
