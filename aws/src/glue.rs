//! The lake's table in the Glue Data Catalog, so Athena, Spark and DuckDB query it by name.
//!
//! ```text
//! ensure_table  ─▶ CreateDatabase, CreateTable (EXTERNAL_TABLE, Parquet; AlreadyExists is fine)
//! add_partition ─▶ seen in this process? ─yes─▶ done
//!                  └─no─▶ CreatePartition (partner, dt, hour) at
//!                         {location}partner={p}/dt={YYYY-MM-DD}/hour={HH}/ (AlreadyExists is fine)
//! ```
//!
//! The table's columns are the lake's Parquet columns (the contract's list) as Hive types,
//! except `partner`, which is the first partition key. An existing table is left as it is.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use adpipe_core::group::{Catalog, CatalogError};
use adpipe_core::lake::Partition;
use async_trait::async_trait;
use aws_sdk_glue::Client;
use aws_sdk_glue::error::{DisplayErrorContext, SdkError};
use aws_sdk_glue::types::{
    Column, DatabaseInput, PartitionInput, SerDeInfo, StorageDescriptor, TableInput,
};

/// The lake's columns and their Hive types, in the contract's order, `partner` left out.
pub const COLUMNS: [(&str, &str); 23] = [
    ("event_id", "string"),
    ("event_type", "string"),
    ("event_time", "timestamp"),
    ("received_at", "timestamp"),
    ("ad_session_id", "string"),
    ("campaign_id", "string"),
    ("placement_id", "string"),
    ("creative_id", "string"),
    ("publisher_id", "string"),
    ("page_url", "string"),
    ("user_agent", "string"),
    ("ip", "string"),
    ("country", "string"),
    ("region", "string"),
    ("city", "string"),
    ("device_type", "string"),
    ("os", "string"),
    ("browser", "string"),
    ("in_view_ms", "bigint"),
    ("price_micros", "bigint"),
    ("currency", "string"),
    ("consent", "string"),
    ("attributes", "map<string,string>"),
];

/// The Hive partition keys, in the lake's directory order; all strings.
pub const PARTITION_KEYS: [&str; 3] = ["partner", "dt", "hour"];

/// Hive's Parquet reader and writer classes, which Athena and Spark expect on the table.
const PARQUET_INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const PARQUET_OUTPUT_FORMAT: &str =
    "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const PARQUET_SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";

/// The table's S3 location: `s3://{bucket}/{prefix}/`, as the lake lays files out.
pub fn lake_location(bucket: &str, prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("s3://{bucket}/")
    } else {
        format!("s3://{bucket}/{prefix}/")
    }
}

/// One lake table in Glue; registers each partition once per process.
#[derive(Debug)]
pub struct GlueCatalog {
    client: Client,
    database: String,
    table: String,
    /// `s3://bucket/prefix/`, with the trailing slash.
    location: String,
    /// Partitions known to exist.
    registered: Mutex<HashSet<(String, Partition)>>,
}

impl GlueCatalog {
    /// The table `database.table` over the lake at `location` (see [`lake_location`]),
    /// reached through `client` (see [`crate::config::glue_client`]).
    pub fn new(
        client: Client,
        database: impl Into<String>,
        table: impl Into<String>,
        location: impl Into<String>,
    ) -> GlueCatalog {
        let mut location = location.into();
        if !location.ends_with('/') {
            location.push('/');
        }
        GlueCatalog {
            client,
            database: database.into(),
            table: table.into(),
            location,
            registered: Mutex::new(HashSet::new()),
        }
    }

    /// Where a partner's partition lives.
    pub fn partition_location(&self, partner: &str, partition: Partition) -> String {
        format!("{}partner={partner}/{partition}/", self.location)
    }

    fn is_registered(&self, key: &(String, Partition)) -> bool {
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    fn storage(&self, location: String) -> Result<StorageDescriptor, CatalogError> {
        let columns = COLUMNS
            .iter()
            .map(|(name, hive_type)| column(name, hive_type))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StorageDescriptor::builder()
            .set_columns(Some(columns))
            .location(location)
            .input_format(PARQUET_INPUT_FORMAT)
            .output_format(PARQUET_OUTPUT_FORMAT)
            .serde_info(
                SerDeInfo::builder()
                    .serialization_library(PARQUET_SERDE)
                    .parameters("serialization.format", "1")
                    .build(),
            )
            .build())
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn ensure_table(&self) -> Result<(), CatalogError> {
        let step = || format!("create database {}", self.database);
        let database = DatabaseInput::builder()
            .name(&self.database)
            .description("adpipe lake tables")
            .build()
            .map_err(|e| catalog_error(step(), e))?;
        match self
            .client
            .create_database()
            .database_input(database)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_already_exists_exception()) => {}
            Err(e) => return Err(sdk_error(step(), &e)),
        }

        let step = || format!("create table {}.{}", self.database, self.table);
        let partition_keys = PARTITION_KEYS
            .iter()
            .map(|name| column(name, "string"))
            .collect::<Result<Vec<_>, _>>()?;
        let table = TableInput::builder()
            .name(&self.table)
            .description("adpipe ad events: zstd Parquet, Hive-partitioned by partner, dt, hour")
            .table_type("EXTERNAL_TABLE")
            .parameters("classification", "parquet")
            .parameters("EXTERNAL", "TRUE")
            .parameters("parquet.compression", "ZSTD")
            .storage_descriptor(self.storage(self.location.clone())?)
            .set_partition_keys(Some(partition_keys))
            .build()
            .map_err(|e| catalog_error(step(), e))?;
        match self
            .client
            .create_table()
            .database_name(&self.database)
            .table_input(table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(step(), &e)),
        }
    }

    async fn add_partition(&self, partner: &str, partition: Partition) -> Result<(), CatalogError> {
        let key = (partner.to_owned(), partition);
        if self.is_registered(&key) {
            return Ok(());
        }
        let step = || format!("create partition partner={partner}/{partition}");
        let input = PartitionInput::builder()
            .set_values(Some(vec![
                partner.to_owned(),
                partition.date(),
                partition.hour(),
            ]))
            .storage_descriptor(self.storage(self.partition_location(partner, partition))?)
            .build();
        match self
            .client
            .create_partition()
            .database_name(&self.database)
            .table_name(&self.table)
            .partition_input(input)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_already_exists_exception()) => {}
            Err(e) => return Err(sdk_error(step(), &e)),
        }
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
        Ok(())
    }
}

fn column(name: &str, hive_type: &str) -> Result<Column, CatalogError> {
    Column::builder()
        .name(name)
        .r#type(hive_type)
        .build()
        .map_err(|e| catalog_error(format!("describe column {name}"), e))
}

fn catalog_error(step: String, err: impl std::fmt::Display) -> CatalogError {
    CatalogError {
        step,
        message: err.to_string(),
    }
}

fn sdk_error<E>(step: String, err: &SdkError<E>) -> CatalogError
where
    E: std::error::Error + 'static,
{
    catalog_error(step, DisplayErrorContext(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lake's Parquet columns as the design brief lists them ("The standard ad event").
    const CONTRACT_COLUMNS: [&str; 24] = [
        "event_id",
        "partner",
        "event_type",
        "event_time",
        "received_at",
        "ad_session_id",
        "campaign_id",
        "placement_id",
        "creative_id",
        "publisher_id",
        "page_url",
        "user_agent",
        "ip",
        "country",
        "region",
        "city",
        "device_type",
        "os",
        "browser",
        "in_view_ms",
        "price_micros",
        "currency",
        "consent",
        "attributes",
    ];

    #[test]
    fn table_columns_are_the_contracts_without_the_partner_partition_key() {
        let expected: Vec<&str> = CONTRACT_COLUMNS
            .into_iter()
            .filter(|name| *name != "partner")
            .collect();
        let columns: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
        assert_eq!(columns, expected);
        assert_eq!(PARTITION_KEYS[0], "partner");
    }

    #[test]
    fn locations_follow_the_lake_layout() {
        assert_eq!(
            lake_location("ads-lake", "/events/"),
            "s3://ads-lake/events/"
        );
        assert_eq!(lake_location("ads-lake", ""), "s3://ads-lake/");
        let config = aws_sdk_glue::Config::builder()
            .behavior_version(aws_sdk_glue::config::BehaviorVersion::latest())
            .build();
        let catalog = GlueCatalog::new(
            Client::from_conf(config),
            "ads",
            "events",
            "s3://ads-lake/events",
        );
        let partition = Partition {
            year: 2026,
            month: 11,
            day: 28,
            hour: 7,
        };
        assert_eq!(
            catalog.partition_location("acme-video", partition),
            "s3://ads-lake/events/partner=acme-video/dt=2026-11-28/hour=07/"
        );
    }
}
