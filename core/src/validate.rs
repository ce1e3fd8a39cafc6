//! Reading and checking `PartnerPipeline` files offline, with the rules the API server
//! enforces through the CRD's schema and CEL rules.
//!
//! Every problem is reported, each as a [`FieldError`] naming the field by its path in the
//! document (`spec.receiver.replicas.min`), so `adpipe validate` prints one line per problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::event::StandardField;
use crate::source::SourceFormat;
use crate::spec::{
    API_GROUP, API_VERSION, AuthSpec, DelivererReplicas, KIND, PartnerPipelineSpec,
    PipelineDocument,
};

/// Names of owned objects append up to `-deliverer` (10 characters) to the pipeline's name,
/// and Kubernetes names of Services and labels stop at 63.
pub const MAX_PIPELINE_NAME: usize = 63 - "-deliverer".len();
/// The largest body a receiver may be configured to accept; bigger requests belong in
/// several calls, and the bound keeps a receiver's memory predictable.
pub const MAX_BODY_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
/// Kinesis allows 24 hours to 365 days of retention.
pub const RETENTION_HOURS: std::ops::RangeInclusive<u32> = 24..=8760;
/// Files younger than a second make tiny objects; older than an hour delay the lake too much.
pub const FILE_AGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
/// Parquet files below 1 MiB are inefficient to query; above 1 GiB they strain memory.
pub const FILE_BYTES: std::ops::RangeInclusive<u64> = 1024 * 1024..=1024 * 1024 * 1024;

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.receiver.replicas.min`.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Why a pipeline file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{file}: failed to read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds invalid pipelines; one line per problem.
    #[error("{}", render(file, problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<FieldError>,
    },
}

fn render(file: &Path, problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {p}", file.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads every pipeline of a YAML file (documents separated by `---`) and checks each.
pub fn load_file(file: &Path) -> Result<Vec<PipelineDocument>, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        file: file.to_owned(),
        source,
    })?;
    parse(&text).map_err(|problems| LoadError::Invalid {
        file: file.to_owned(),
        problems,
    })
}

/// Reads a file that must hold exactly one pipeline: what a workload is started with.
pub fn load_single(file: &Path) -> Result<PipelineDocument, LoadError> {
    let mut docs = load_file(file)?;
    if docs.len() != 1 {
        return Err(LoadError::Invalid {
            file: file.to_owned(),
            problems: vec![FieldError {
                path: "(file)".into(),
                reason: format!(
                    "holds {} pipelines; a workload serves exactly one",
                    docs.len()
                ),
            }],
        });
    }
    Ok(docs.remove(0))
}

/// Parses and checks the pipelines in `text`.
pub fn parse(text: &str) -> Result<Vec<PipelineDocument>, Vec<FieldError>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for (n, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let prefix = |path: String| {
            if n == 0 {
                path
            } else {
                format!("document {}: {path}", n + 1)
            }
        };
        match serde_path_to_error::deserialize::<_, Option<PipelineDocument>>(de) {
            Ok(None) => {}
            Ok(Some(doc)) => {
                let errors = validate(&doc);
                if errors.is_empty() {
                    documents.push(doc);
                }
                problems.extend(errors.into_iter().map(|e| FieldError {
                    path: prefix(e.path),
                    ..e
                }));
            }
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." {
                    "(document)".to_owned()
                } else {
                    path
                };
                problems.push(FieldError {
                    path: prefix(path),
                    reason: e.into_inner().to_string(),
                });
            }
        }
    }
    if documents.is_empty() && problems.is_empty() {
        problems.push(FieldError {
            path: "(file)".into(),
            reason: "holds no PartnerPipeline".into(),
        });
    }
    if problems.is_empty() {
        Ok(documents)
    } else {
        Err(problems)
    }
}

/// Every rule a pipeline must satisfy beyond its types.
pub fn validate(doc: &PipelineDocument) -> Vec<FieldError> {
    let mut errors = Errors::default();
    let expected_version = format!("{API_GROUP}/{API_VERSION}");
    if doc.api_version != expected_version {
        errors.push(
            "apiVersion",
            format!("must be `{expected_version}`, found `{}`", doc.api_version),
        );
    }
    if doc.kind != KIND {
        errors.push("kind", format!("must be `{KIND}`, found `{}`", doc.kind));
    }
    if !is_dns_label(&doc.metadata.name, MAX_PIPELINE_NAME) {
        errors.push(
            "metadata.name",
            format!("`{}` must be a DNS label of at most {MAX_PIPELINE_NAME} characters (lower-case letters, digits, `-`)", doc.metadata.name),
        );
    }
    validate_spec(&doc.spec, &mut errors);
    errors.0
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: &str, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    fn check(&mut self, ok: bool, path: &str, reason: impl FnOnce() -> String) {
        if !ok {
            self.push(path, reason());
        }
    }
}

fn validate_spec(spec: &PartnerPipelineSpec, errors: &mut Errors) {
    errors.check(is_dns_label(&spec.partner, 63), "spec.partner", || {
        format!(
            "`{}` must be a DNS label (lower-case letters, digits and `-`, at most 63 characters)",
            spec.partner
        )
    });

    let source = &spec.source;
    errors.check(
        source.mapping.contains_key(&StandardField::EventType),
        "spec.source.mapping.eventType",
        || "is required: every event needs a type".to_owned(),
    );
    for (field, selector) in &source.mapping {
        let path = format!("spec.source.mapping.{}", field_name(*field));
        match source.format {
            SourceFormat::Json | SourceFormat::MetaWebhook => {
                errors.check(selector.starts_with('/'), &path, || {
                    format!("`{selector}` must be a JSON pointer such as `/id`")
                })
            }
            SourceFormat::Pixel => errors.check(
                !selector.is_empty() && selector != crate::auth::PIXEL_SIGNATURE_PARAM,
                &path,
                || format!("`{selector}` must be a query parameter name other than `sig`"),
            ),
        }
    }
    for key in source.event_types.keys() {
        errors.check(!key.is_empty(), "spec.source.eventTypes", || {
            "keys must not be empty".to_owned()
        });
    }
    if source.format == SourceFormat::MetaWebhook && source.auth == AuthSpec::None {
        errors.push("spec.source.auth.type", "a meta-webhook partner needs a secret (hmac-sha256 or api-key): it is the verify token");
    }
    if let Some(secret) = source.auth.secret_ref() {
        errors.check(
            is_dns_subdomain(&secret.name),
            "spec.source.auth.secretRef.name",
            || format!("`{}` must be a Kubernetes Secret name", secret.name),
        );
        errors.check(
            !secret.key.is_empty()
                && secret
                    .key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
            "spec.source.auth.secretRef.key",
            || {
                format!(
                    "`{}` must be a Secret key (letters, digits, `-`, `_`, `.`)",
                    secret.key
                )
            },
        );
    }

    let receiver = &spec.receiver;
    errors.check(
        receiver.replicas.min >= 1,
        "spec.receiver.replicas.min",
        || "must be at least 1".to_owned(),
    );
    errors.check(
        receiver.replicas.min <= receiver.replicas.max,
        "spec.receiver.replicas",
        || {
            format!(
                "min ({}) must not exceed max ({})",
                receiver.replicas.min, receiver.replicas.max
            )
        },
    );
    errors.check(
        (1..=100).contains(&receiver.target_cpu_utilization_percentage),
        "spec.receiver.targetCPUUtilizationPercentage",
        || "must be between 1 and 100".to_owned(),
    );
    errors.check(
        (1..=MAX_BODY_BYTES_LIMIT).contains(&receiver.max_body_bytes),
        "spec.receiver.maxBodyBytes",
        || format!("must be between 1 and {MAX_BODY_BYTES_LIMIT}"),
    );
    if let Some(limit) = &receiver.rate_limit {
        errors.check(
            limit.requests_per_second >= 1,
            "spec.receiver.rateLimit.requestsPerSecond",
            || "must be at least 1".to_owned(),
        );
        errors.check(
            limit.burst != Some(0),
            "spec.receiver.rateLimit.burst",
            || "must be at least 1".to_owned(),
        );
    }
    if let Some(ingress) = &receiver.ingress {
        errors.check(
            is_dns_subdomain(&ingress.host),
            "spec.receiver.ingress.host",
            || format!("`{}` must be a DNS name", ingress.host),
        );
    }

    let stream = &spec.stream;
    errors.check(
        (1..=128).contains(&stream.name.len())
            && stream
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
        "spec.stream.name",
        || {
            format!(
                "`{}` must be 1–128 letters, digits, `_`, `.` or `-`",
                stream.name
            )
        },
    );
    if let Some(shards) = stream.shards {
        errors.check((1..=10_000).contains(&shards), "spec.stream.shards", || {
            "must be between 1 and 10000".to_owned()
        });
    }
    errors.check(
        RETENTION_HOURS.contains(&stream.retention_hours),
        "spec.stream.retentionHours",
        || {
            format!(
                "must be between {} and {}",
                RETENTION_HOURS.start(),
                RETENTION_HOURS.end()
            )
        },
    );

    let deliverer = &spec.deliverer;
    if let DelivererReplicas::Fixed(n) = deliverer.replicas {
        errors.check(n <= 10_000, "spec.deliverer.replicas", || {
            "must be `auto` or at most 10000".to_owned()
        });
    }
    let sink = &deliverer.sink;
    errors.check(
        is_bucket_name(&sink.bucket),
        "spec.deliverer.sink.bucket",
        || {
            format!(
                "`{}` must be an S3 bucket name (3–63 lower-case letters, digits, `.`, `-`)",
                sink.bucket
            )
        },
    );
    errors.check(
        !sink.prefix.starts_with('/') && !sink.prefix.ends_with('/') && !sink.prefix.contains("//"),
        "spec.deliverer.sink.prefix",
        || format!("`{}` must not start or end with `/`", sink.prefix),
    );
    errors.check(
        FILE_AGE.contains(&sink.max_file_age.0),
        "spec.deliverer.sink.maxFileAge",
        || format!("{} must be between 1s and 1h", sink.max_file_age),
    );
    errors.check(
        FILE_BYTES.contains(&sink.max_file_bytes),
        "spec.deliverer.sink.maxFileBytes",
        || {
            format!(
                "must be between {} and {}",
                FILE_BYTES.start(),
                FILE_BYTES.end()
            )
        },
    );
    if let Some(catalog) = &deliverer.catalog {
        errors.check(
            is_glue_name(&catalog.database),
            "spec.deliverer.catalog.database",
            || {
                format!(
                    "`{}` must be lower-case letters, digits and `_`",
                    catalog.database
                )
            },
        );
        errors.check(
            is_glue_name(&catalog.table),
            "spec.deliverer.catalog.table",
            || {
                format!(
                    "`{}` must be lower-case letters, digits and `_`",
                    catalog.table
                )
            },
        );
    }
    if let Some(table) = &deliverer.lease_table {
        errors.check(
            (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
            "spec.deliverer.leaseTable",
            || {
                format!(
                    "`{table}` must be a DynamoDB table name (3–255 letters, digits, `_`, `.`, `-`)"
                )
            },
        );
    }
}

fn field_name(field: StandardField) -> String {
    serde_json::to_value(field)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// RFC 1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|label| is_dns_label(label, 63))
}

fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len()) && s.split('.').all(|label| is_dns_label(label, 63))
}

fn is_glue_name(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/pipelines/acme-video.yaml");

    fn problems(yaml: &str) -> Vec<String> {
        parse(yaml)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_contract_example_is_accepted_as_written() {
        let docs = parse(EXAMPLE).unwrap();
        let spec = &docs[0].spec;
        assert_eq!(spec.partner, "acme-video");
        assert_eq!(spec.source.format, SourceFormat::Json);
        assert_eq!(spec.receiver.replicas.max, 20);
        assert_eq!(spec.receiver.target_cpu_utilization_percentage, 70);
        assert_eq!(spec.stream.shards, Some(2));
        assert_eq!(spec.deliverer.replicas, DelivererReplicas::Auto);
        assert_eq!(spec.deliverer.sink.max_file_age.0, Duration::from_secs(60));
    }

    #[test]
    fn every_shipped_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn every_rule_violation_is_reported_with_its_field() {
        let yaml = EXAMPLE
            .replace("partner: acme-video", "partner: Acme_Video")
            .replace("{min: 2, max: 20}", "{min: 5, max: 2}")
            .replace("retentionHours: 24", "retentionHours: 1")
            .replace("maxFileAge: 60s", "maxFileAge: 2h")
            .replace("eventId: /id", "eventId: id");
        let found = problems(&yaml);
        for expected in [
            "spec.partner: `Acme_Video` must be a DNS label",
            "spec.receiver.replicas: min (5) must not exceed max (2)",
            "spec.stream.retentionHours: must be between 24 and 8760",
            "spec.deliverer.sink.maxFileAge: 2h must be between 1s and 1h",
            "spec.source.mapping.eventId: `id` must be a JSON pointer",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 5, "{found:#?}");
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let found = problems(&EXAMPLE.replace("format: json", "format: xml"));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.source.format: "), "{}", found[0]);
        assert!(found[0].contains("unknown variant `xml`"), "{}", found[0]);
        let found = problems(&EXAMPLE.replace("replicas: auto", "replicas: many"));
        assert!(
            found[0].starts_with("spec.deliverer.replicas: "),
            "{}",
            found[0]
        );
        let found = problems(&EXAMPLE.replace(
            "  partner: acme-video\n",
            "  partner: acme-video\n  colour: red\n",
        ));
        assert!(found[0].contains("unknown field `colour`"), "{}", found[0]);
    }

    #[test]
    fn a_meta_webhook_needs_a_secret() {
        let yaml = EXAMPLE.replace("format: json", "format: meta-webhook").replace(
            "    auth:\n      type: hmac-sha256\n      secretRef: {name: acme-video-auth, key: secret}\n",
            "",
        );
        let found = problems(&yaml);
        assert!(
            found
                .iter()
                .any(|p| p
                    .starts_with("spec.source.auth.type: a meta-webhook partner needs a secret")),
            "{found:#?}"
        );
    }

    #[test]
    fn files_report_every_problem_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(
            &path,
            EXAMPLE.replace("{min: 2, max: 20}", "{min: 0, max: 20}"),
        )
        .unwrap();
        let message = load_file(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: spec.receiver.replicas.min: must be at least 1",
                path.display()
            )
        );
    }
}
