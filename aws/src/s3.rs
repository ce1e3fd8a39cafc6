//! The lake's object store on S3.
//!
//! ```text
//! put(key, body)
//!   body < 16 MiB ─▶ PutObject
//!   otherwise     ─▶ CreateMultipartUpload ─▶ UploadPart × ⌈len / 8 MiB⌉ (4 at a time)
//!                    ─▶ CompleteMultipartUpload       (any failure: AbortMultipartUpload)
//! ```
//!
//! An object appears whole or not at all, so a worker that dies mid-upload leaves nothing a
//! query could read; the next owner writes the same key again. Retries of 5xx and `SlowDown`
//! answers are the SDK's (standard retry mode, [`crate::config::S3_MAX_ATTEMPTS`] attempts,
//! set by [`crate::config::s3_client`]); every part carries a CRC32 the service checks.

use adpipe_core::sink::{ObjectSink, SinkError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

/// Bodies from this size on go up in parts: fewer bytes to resend when one request fails,
/// and parts in parallel. Below it, one PutObject is one request instead of three.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;

/// Size of every part but the last (S3's minimum is 5 MiB, its maximum 10,000 parts: 8 MiB
/// parts allow objects far beyond any `maxFileBytes`).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts in flight at once for one object; bounds the sockets one upload holds.
const PARALLEL_PARTS: usize = 4;

/// Writes lake files into one S3 bucket.
#[derive(Clone, Debug)]
pub struct S3Sink {
    client: Client,
    bucket: String,
}

impl S3Sink {
    /// A sink writing into `bucket` (which must exist: buckets are the platform's) through
    /// `client` (see [`crate::config::s3_client`]).
    pub fn new(client: Client, bucket: impl Into<String>) -> S3Sink {
        S3Sink {
            client,
            bucket: bucket.into(),
        }
    }

    /// The bucket written to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| write_error(key, "PutObject", &e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| write_error(key, "CreateMultipartUpload", &e))?;
        let upload_id = created.upload_id().ok_or_else(|| SinkError::Write {
            key: key.to_owned(),
            message: "CreateMultipartUpload returned no upload id".to_owned(),
        })?;
        let uploaded = self.upload_and_complete(key, upload_id, body).await;
        if uploaded.is_err() {
            // NOTE: best effort; parts of an upload whose abort failed are removed by the
            // bucket's AbortIncompleteMultipartUpload lifecycle rule, which lake buckets need.
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::warn!(
                    key,
                    upload_id,
                    error = %DisplayErrorContext(&e),
                    "failed to abort a multipart upload"
                );
            }
        }
        uploaded
    }

    async fn upload_and_complete(
        &self,
        key: &str,
        upload_id: &str,
        body: Bytes,
    ) -> Result<(), SinkError> {
        let parts: Vec<CompletedPart> = futures::stream::iter(part_ranges(body.len()))
            .map(|(number, range)| self.upload_part(key, upload_id, number, body.slice(range)))
            .buffered(PARALLEL_PARTS)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| write_error(key, "CompleteMultipartUpload", &e))?;
        Ok(())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        part: Bytes,
    ) -> Result<CompletedPart, SinkError> {
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| write_error(key, "UploadPart", &e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(uploaded.e_tag().map(str::to_owned))
            .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
            .build())
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        if body.len() < MULTIPART_THRESHOLD {
            self.put_object(key, body).await
        } else {
            self.put_multipart(key, body).await
        }
    }
}

/// The 1-based part numbers and byte ranges of a body of `len` bytes.
fn part_ranges(len: usize) -> impl Iterator<Item = (i32, std::ops::Range<usize>)> {
    (0..len.div_ceil(PART_SIZE)).map(move |index| {
        let start = index * PART_SIZE;
        let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        (number, start..(start + PART_SIZE).min(len))
    })
}

fn write_error<E>(key: &str, operation: &str, err: &SdkError<E>) -> SinkError
where
    E: std::error::Error + 'static,
{
    SinkError::Write {
        key: key.to_owned(),
        message: format!("{operation}: {}", DisplayErrorContext(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_body_exactly_once_in_order() {
        let len = 2 * PART_SIZE + 3;
        let parts: Vec<_> = part_ranges(len).collect();
        assert_eq!(
            parts,
            vec![
                (1, 0..PART_SIZE),
                (2, PART_SIZE..2 * PART_SIZE),
                (3, 2 * PART_SIZE..len)
            ]
        );
        assert_eq!(part_ranges(2 * PART_SIZE).count(), 2);
    }
}
