//! The AWS backends against a moto server (Kinesis, S3, Glue), started by [`support::moto`]
//! from the Python virtualenv of `scripts/python-env.sh`, one per run of this binary.
//!
//! ```text
//! KinesisStream / S3Sink / GlueCatalog ─SDK, standard chain─▶ moto on 127.0.0.1:FREE
//!   then read back with the plain SDK clients and compared with what was written
//! ```
//!
//! moto's Kinesis is patched at start-up where it differs from AWS on resharding; see
//! `scripts/moto_server.py` for exactly what and why.
#![cfg(feature = "external-tests")]
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod config;
mod glue;
mod kinesis;
mod s3;
