//! The record frame of a shard log, as pure functions: a writer encodes a frame's head,
//! seals it with the CRC once the data is known, and readers decode frames from a buffer.
//!
//! ```text
//! frame   = payload_len: u32 LE | crc: u32 LE | payload[payload_len]
//! payload = arrival_ms: i64 LE | key_len: u16 LE | partition key (UTF-8)[key_len] | data
//! ```
//!
//! `crc` is the CRC-32 (IEEE, as `crc32fast` computes it) of the whole payload. The head is
//! everything before the data, so a writer can hand the data to the kernel as it came in
//! (a vectored write) instead of copying it next to its head.

use std::ops::Range;

/// Bytes before a frame's payload: the payload length and the CRC.
pub const HEADER_BYTES: usize = 8;

/// Bytes of the payload before the partition key: arrival time and key length.
const PAYLOAD_PREFIX_BYTES: usize = 10;

/// Kinesis' record limit, data and partition key together: the embedded stream refuses what
/// Kinesis would refuse, so `adpipe local` finds oversized records before the cloud does.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Kinesis' partition key limit, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// The largest payload a valid record produces; a longer length field is corruption, which
/// also keeps a garbage length from making a reader allocate gigabytes.
const MAX_PAYLOAD_BYTES: usize = PAYLOAD_PREFIX_BYTES + MAX_RECORD_BYTES;

/// Why a record cannot be stored: the same rules Kinesis applies to `PutRecords` entries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// The partition key is empty or longer than Kinesis allows.
    #[error("failed to accept partition key of {chars} characters: it must have 1 to 256")]
    PartitionKeyLength {
        /// Characters in the key.
        chars: usize,
    },
    /// Data and partition key exceed the record limit.
    #[error(
        "failed to accept record of {bytes} bytes: data and partition key together must not exceed 1048576"
    )]
    TooLarge {
        /// Data and partition key bytes.
        bytes: usize,
    },
}

/// What is wrong with a frame that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file ends inside the frame.
    #[error("the frame is cut short")]
    Truncated,
    /// The length field cannot belong to a valid frame.
    #[error("impossible payload length {0}")]
    BadLength(u32),
    /// The payload does not match its CRC.
    #[error("CRC mismatch")]
    CrcMismatch,
    /// The CRC matches but the partition key does not fit the payload or is not UTF-8.
    #[error("malformed partition key")]
    BadKey,
}

/// One frame decoded from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Bytes of the whole frame, header included.
    pub frame_len: usize,
    /// When the stream accepted the record, in Unix milliseconds.
    pub arrival_ms: i64,
    /// The partition key it was written with.
    pub partition_key: &'a str,
    /// Where the data lies in the decoded buffer.
    pub data: Range<usize>,
}

/// The result of decoding the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame.
    Frame(FrameRef<'a>),
    /// The buffer ends inside the frame; `needed` is the frame's full length once the header
    /// is there.
    Incomplete {
        /// The frame's length, when the header could be read.
        needed: Option<usize>,
    },
    /// The frame is invalid.
    Corrupt {
        /// What is wrong.
        problem: Problem,
        /// The frame length its header claims.
        claimed_len: usize,
    },
}

/// Checks a record against Kinesis' limits and appends its frame head (header with a zero CRC,
/// arrival time, partition key) to `buf`; `seal` fills the CRC once the head is in place.
pub fn encode_head(
    buf: &mut Vec<u8>,
    arrival_ms: i64,
    partition_key: &str,
    data_len: usize,
) -> Result<(), InvalidRecord> {
    let chars = partition_key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(InvalidRecord::PartitionKeyLength { chars });
    }
    let record_bytes = partition_key.len() + data_len;
    if record_bytes > MAX_RECORD_BYTES {
        return Err(InvalidRecord::TooLarge {
            bytes: record_bytes,
        });
    }
    // Both conversions succeed after the checks above; the fallbacks only satisfy the types.
    let payload_len = u32::try_from(PAYLOAD_PREFIX_BYTES + record_bytes).unwrap_or(u32::MAX);
    let key_len = u16::try_from(partition_key.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&payload_len.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&arrival_ms.to_le_bytes());
    buf.extend_from_slice(&key_len.to_le_bytes());
    buf.extend_from_slice(partition_key.as_bytes());
    Ok(())
}

/// Fills the CRC of a frame whose head (as `encode_head` wrote it) is `head` and whose data
/// is `data`.
pub fn seal(head: &mut [u8], data: &[u8]) {
    let Some((header, payload_head)) = head.split_at_mut_checked(HEADER_BYTES) else {
        return;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(payload_head);
    hasher.update(data);
    header[4..].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Decodes the frame at the start of `buf`, checking its CRC.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some((len_bytes, crc_bytes)) = header(buf) else {
        return Decoded::Incomplete { needed: None };
    };
    let payload_len = u32::from_le_bytes(len_bytes);
    let claimed_len = HEADER_BYTES.saturating_add(payload_len as usize);
    if !(PAYLOAD_PREFIX_BYTES..=MAX_PAYLOAD_BYTES).contains(&(payload_len as usize)) {
        return Decoded::Corrupt {
            problem: Problem::BadLength(payload_len),
            claimed_len,
        };
    }
    let Some(payload) = buf.get(HEADER_BYTES..claimed_len) else {
        return Decoded::Incomplete {
            needed: Some(claimed_len),
        };
    };
    if crc32fast::hash(payload) != u32::from_le_bytes(crc_bytes) {
        return Decoded::Corrupt {
            problem: Problem::CrcMismatch,
            claimed_len,
        };
    }
    match split_payload(payload) {
        Some((arrival_ms, partition_key, data_start)) => Decoded::Frame(FrameRef {
            frame_len: claimed_len,
            arrival_ms,
            partition_key,
            data: HEADER_BYTES + data_start..claimed_len,
        }),
        None => Decoded::Corrupt {
            problem: Problem::BadKey,
            claimed_len,
        },
    }
}

/// The length and CRC fields of the header at the start of `buf`.
fn header(buf: &[u8]) -> Option<([u8; 4], [u8; 4])> {
    let len = buf.get(0..4)?.try_into().ok()?;
    let crc = buf.get(4..8)?.try_into().ok()?;
    Some((len, crc))
}

/// Arrival time, partition key and the offset of the data within a payload.
fn split_payload(payload: &[u8]) -> Option<(i64, &str, usize)> {
    let arrival_ms = i64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let key_len = u16::from_le_bytes(payload.get(8..10)?.try_into().ok()?) as usize;
    let key_end = PAYLOAD_PREFIX_BYTES + key_len;
    let key = std::str::from_utf8(payload.get(PAYLOAD_PREFIX_BYTES..key_end)?).ok()?;
    Some((arrival_ms, key, key_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(arrival_ms: i64, key: &str, data: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_head(&mut buf, arrival_ms, key, data.len()).unwrap();
        seal(&mut buf, data);
        buf.extend_from_slice(data);
        buf
    }

    #[test]
    fn a_sealed_frame_decodes_to_what_was_written() {
        let buf = frame(1_700_000_000_123, "session-ä", b"hello");
        let Decoded::Frame(decoded) = decode(&buf) else {
            panic!("not a frame: {:?}", decode(&buf));
        };
        assert_eq!(decoded.frame_len, buf.len());
        assert_eq!(decoded.arrival_ms, 1_700_000_000_123);
        assert_eq!(decoded.partition_key, "session-ä");
        assert_eq!(&buf[decoded.data], b"hello");
    }

    #[test]
    fn a_cut_frame_is_incomplete_and_says_how_long_it_is() {
        let buf = frame(1, "k", b"0123456789");
        assert_eq!(decode(&buf[..5]), Decoded::Incomplete { needed: None });
        assert_eq!(
            decode(&buf[..buf.len() - 1]),
            Decoded::Incomplete {
                needed: Some(buf.len())
            }
        );
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut buf = frame(1, "k", b"0123456789");
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert_eq!(
            decode(&buf),
            Decoded::Corrupt {
                problem: Problem::CrcMismatch,
                claimed_len: buf.len()
            }
        );
    }

    #[test]
    fn zeroes_and_huge_lengths_are_impossible_frames() {
        assert!(matches!(
            decode(&[0; 32]),
            Decoded::Corrupt {
                problem: Problem::BadLength(0),
                ..
            }
        ));
        assert!(matches!(
            decode(&[0xff; 32]),
            Decoded::Corrupt {
                problem: Problem::BadLength(u32::MAX),
                ..
            }
        ));
    }

    #[test]
    fn records_kinesis_would_refuse_are_refused() {
        let mut buf = Vec::new();
        assert_eq!(
            encode_head(&mut buf, 0, "", 1),
            Err(InvalidRecord::PartitionKeyLength { chars: 0 })
        );
        assert_eq!(
            encode_head(&mut buf, 0, &"k".repeat(257), 1),
            Err(InvalidRecord::PartitionKeyLength { chars: 257 })
        );
        assert_eq!(
            encode_head(&mut buf, 0, "key", MAX_RECORD_BYTES),
            Err(InvalidRecord::TooLarge {
                bytes: MAX_RECORD_BYTES + 3
            })
        );
        assert!(buf.is_empty());
        assert!(encode_head(&mut buf, 0, &"ü".repeat(256), MAX_RECORD_BYTES - 512).is_ok());
    }
}
