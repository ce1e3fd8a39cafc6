//! The `PartnerPipeline` resource as a platform team writes it.
//!
//! These types are the single source of truth for the YAML file that `adpipe validate`,
//! `adpipe local`, the workloads and (later) the operator's CRD all read. Every field carries
//! a `///` doc because it becomes `kubectl explain` text. Defaults live here, next to the
//! field they belong to, so every reader of a pipeline sees the same defaults.
//!
//! Rules the schema alone cannot express (min ≤ max, a DNS-label partner, …) live in
//! [`crate::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{EventType, StandardField};
use crate::source::SourceFormat;

/// The API group of the resource.
pub const API_GROUP: &str = "adpipe.io";
/// The served version of the resource.
pub const API_VERSION: &str = "v1alpha1";
/// The resource kind.
pub const KIND: &str = "PartnerPipeline";

/// A `PartnerPipeline` document as stored in a file: the Kubernetes envelope around the spec.
///
/// Outside the cluster there is no API server to fill in metadata, so only `name` is required.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineDocument {
    /// Must be `adpipe.io/v1alpha1`.
    pub api_version: String,
    /// Must be `PartnerPipeline`.
    pub kind: String,
    /// Name and namespace of the pipeline.
    pub metadata: DocumentMeta,
    /// The pipeline itself.
    pub spec: PartnerPipelineSpec,
}

/// The part of Kubernetes object metadata that a pipeline file uses.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DocumentMeta {
    /// Object name; owned objects are named after it.
    pub name: String,
    /// Namespace; absent in files meant for `adpipe local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels are accepted so that files written for `kubectl apply` parse unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations are accepted for the same reason as labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One ad partner's ingestion pipeline: how the partner sends events, how they are received,
/// the Kinesis stream they travel through, and how they land in the lake.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartnerPipelineSpec {
    /// The partner's name, a DNS label (lower-case letters, digits and `-`, at most 63
    /// characters). It appears in URLs (`/v1/{partner}/…`), object keys and metric labels.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub partner: String,
    /// What the partner sends and how requests are authenticated.
    pub source: SourceSpec,
    /// The HTTP receiver the partner calls.
    #[serde(default)]
    pub receiver: ReceiverSpec,
    /// The Kinesis Data Stream between receiver and deliverer.
    pub stream: StreamSpec,
    /// The consumer group that enriches events and writes the lake.
    pub deliverer: DelivererSpec,
}

/// What a partner sends and how adpipe turns it into standard ad events.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// The wire format: `json` (POST bodies), `pixel` (GET query strings) or
    /// `meta-webhook` (Meta-style webhook envelopes).
    pub format: SourceFormat,
    /// Standard field ← where to find it: a JSON pointer such as `/id` for `json` and
    /// `meta-webhook`, a query parameter name for `pixel`. Partner fields that are not
    /// mapped are kept as `attributes`.
    pub mapping: BTreeMap<StandardField, String>,
    /// The partner's event type value → the standard event type. A value not listed here
    /// is rejected. When empty, the standard names themselves are accepted.
    #[serde(default)]
    pub event_types: BTreeMap<String, EventType>,
    /// How the partner writes `eventTime`.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// How each request proves it comes from the partner.
    #[serde(default)]
    pub auth: AuthSpec,
}

/// How event times are written by the partner.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2026-11-28T12:00:00Z`, any offset.
    #[default]
    Rfc3339,
    /// Seconds since the Unix epoch, integer or fractional, as a number or a string.
    UnixSeconds,
    /// Milliseconds since the Unix epoch, as a number or a string.
    UnixMillis,
}

/// Request authentication. The secret itself never appears in the spec: it is read from
/// the referenced Kubernetes Secret, mounted as a file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthSpec {
    /// Anyone may send.
    #[default]
    None,
    /// Header `X-Api-Key: <secret>` or `Authorization: Bearer <secret>`.
    ApiKey {
        /// Where the key is stored.
        #[serde(rename = "secretRef")]
        secret_ref: SecretRef,
    },
    /// Header `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`; for pixels a
    /// `sig` query parameter over the query string without `sig`.
    HmacSha256 {
        /// Where the shared secret is stored.
        #[serde(rename = "secretRef")]
        secret_ref: SecretRef,
    },
}

impl AuthSpec {
    /// The secret this scheme needs, if any.
    pub fn secret_ref(&self) -> Option<&SecretRef> {
        match self {
            AuthSpec::None => None,
            AuthSpec::ApiKey { secret_ref } | AuthSpec::HmacSha256 { secret_ref } => {
                Some(secret_ref)
            }
        }
    }
}

/// A Kubernetes structural schema cannot hold one object shape per variant, so the schema
/// is the union: a `type` and an optional `secretRef`, which the CRD's CEL rules require for
/// the schemes that need a secret.
impl JsonSchema for AuthSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AuthSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let secret_ref = generator.subschema_for::<SecretRef>();
        schemars::json_schema!({
            "description": "How each request proves it comes from the partner.",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {
                    "description": "`none`: anyone may send. `api-key`: header `X-Api-Key: <secret>` or `Authorization: Bearer <secret>`. `hmac-sha256`: header `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`; for pixels a `sig` query parameter over the query string without `sig`.",
                    "type": "string",
                    "enum": ["none", "api-key", "hmac-sha256"]
                },
                "secretRef": secret_ref
            }
        })
    }
}

/// A key of a Kubernetes Secret in the pipeline's namespace.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name; it is mounted at `/etc/adpipe/secrets/{name}/`.
    pub name: String,
    /// The key inside the Secret.
    pub key: String,
}

/// The HTTP receiver: scaling, limits and acknowledgement semantics.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverSpec {
    /// Bounds for the receiver's horizontal pod autoscaler.
    #[serde(default)]
    pub replicas: ReplicaRange,
    /// Average CPU utilisation the autoscaler aims for, in percent of the request.
    #[serde(
        default = "default_target_cpu",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: u32,
    /// Largest accepted request body; larger bodies get `413`.
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1, max = crate::validate::MAX_BODY_BYTES_LIMIT))]
    pub max_body_bytes: u64,
    /// When the receiver answers: after Kinesis accepted the events, or at once.
    #[serde(default)]
    pub ack: AckMode,
    /// Per-partner rate limit; requests above it get `429`. Absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// How the partner reaches the receiver from outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

impl Default for ReceiverSpec {
    fn default() -> Self {
        Self {
            replicas: ReplicaRange::default(),
            target_cpu_utilization_percentage: default_target_cpu(),
            max_body_bytes: default_max_body_bytes(),
            ack: AckMode::default(),
            rate_limit: None,
            ingress: None,
        }
    }
}

fn default_target_cpu() -> u32 {
    70
}

/// 1 MiB: a batch of a few thousand events, far below what one PutRecords call carries.
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

/// Inclusive bounds for a replica count.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaRange {
    /// Fewest replicas; at least 1.
    #[schemars(range(min = 1))]
    pub min: u32,
    /// Most replicas; at least `min`.
    #[schemars(range(min = 1))]
    pub max: u32,
}

impl Default for ReplicaRange {
    fn default() -> Self {
        Self { min: 2, max: 10 }
    }
}

/// What a `2xx` from the receiver promises.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// `200` only once the stream has durably accepted every event of the request.
    #[default]
    Durable,
    /// `202` as soon as the events are validated and buffered in memory.
    Buffered,
}

impl AckMode {
    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Durable => "durable",
            AckMode::Buffered => "buffered",
        }
    }
}

/// A token-bucket limit on requests per partner and receiver replica.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// The public entry point of the receiver.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressSpec {
    /// Host name the partner calls.
    pub host: String,
    /// The ingress class, e.g. `alb` or `nginx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
}

/// The Kinesis Data Stream of the pipeline.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSpec {
    /// Stream name: 1–128 characters of letters, digits, `_`, `.` and `-`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-zA-Z0-9_.-]+$"))]
    pub name: String,
    /// Whether adpipe creates and resizes the stream, or only uses an existing one.
    #[serde(default = "default_true")]
    pub create: bool,
    /// Provisioned shard count; omit for on-demand capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub shards: Option<u32>,
    /// How long records stay readable, 24 to 8760 hours.
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 24, max = 8760))]
    pub retention_hours: u32,
    /// What happens to the stream when the pipeline is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_true() -> bool {
    true
}

fn default_retention_hours() -> u32 {
    24
}

/// The fate of the stream when its pipeline is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the stream and its data.
    #[default]
    Retain,
    /// Delete the stream.
    Delete,
}

/// The consumer group that turns the stream into lake files.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelivererSpec {
    /// Worker count: `auto` for one worker per open shard, or a number.
    #[serde(default)]
    pub replicas: DelivererReplicas,
    /// Enrichments applied to every event before it is written.
    #[serde(default)]
    pub enrich: Vec<Enrichment>,
    /// Where and how files are written.
    pub sink: SinkSpec,
    /// The Glue table that makes the lake queryable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogSpec>,
    /// DynamoDB table for shard leases and checkpoints; default `adpipe-{namespace}-{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_table: Option<String>,
}

/// Deliverer worker count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DelivererReplicas {
    /// One worker per open shard.
    #[default]
    Auto,
    /// A fixed number of workers.
    Fixed(u32),
}

impl Serialize for DelivererReplicas {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DelivererReplicas::Auto => s.serialize_str("auto"),
            DelivererReplicas::Fixed(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for DelivererReplicas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(DelivererReplicas::Fixed(n)),
            Raw::Text(t) if t == "auto" => Ok(DelivererReplicas::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "expected `auto` or a number, found `{t}`"
            ))),
        }
    }
}

impl JsonSchema for DelivererReplicas {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DelivererReplicas".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The only union a Kubernetes structural schema allows; the CRD adds a CEL rule for
        // `auto` and the lower bound.
        schemars::json_schema!({
            "description": "`auto` (one worker per open shard) or a fixed number of workers.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}]
        })
    }
}

/// One enrichment step of the deliverer.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Enrichment {
    /// Country, region and city from the (anonymised) IP, with a MaxMind database.
    Geoip,
    /// Device type, OS and browser from the user agent.
    UserAgent,
}

/// The lake files.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkSpec {
    /// The S3 bucket; it must exist.
    pub bucket: String,
    /// Key prefix of the lake, without leading or trailing `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// File format.
    #[serde(default)]
    pub format: FileFormat,
    /// A file is closed at the latest this long after its first event, e.g. `60s`, `5m`.
    #[serde(default = "default_max_file_age")]
    pub max_file_age: HumanDuration,
    /// A file is closed once its encoded size would pass this many bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

fn default_prefix() -> String {
    "events".to_owned()
}

fn default_max_file_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// 128 MiB: the size Athena and Spark read most efficiently.
fn default_max_file_bytes() -> u64 {
    128 * 1024 * 1024
}

/// Lake file formats.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Apache Parquet, zstd-compressed.
    #[default]
    Parquet,
}

/// The Glue catalog entry of the lake.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogSpec {
    /// Glue database, created when missing.
    pub database: String,
    /// Glue table, created when missing; partitioned by partner, dt and hour.
    pub table: String,
}

/// A duration written the human way (`60s`, `5m`, `1h 30m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid duration `{text}`: {e}")))
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as `60s`, `5m` or `1h 30m`.",
            "type": "string",
            "pattern": "^([0-9]+ ?(ms|s|m|h) ?)+$"
        })
    }
}
