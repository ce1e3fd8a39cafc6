//! `GlueCatalog`: the table and its partitions are created once, whatever the number of
//! calls and processes, with the lake's columns, partition keys, formats and locations.

use adpipe_aws::GlueCatalog;
use adpipe_aws::config::glue_client;
use adpipe_aws::glue::{COLUMNS, PARTITION_KEYS, lake_location};
use adpipe_core::group::Catalog;
use adpipe_core::lake::Partition;

use crate::support::{moto, unique};

#[tokio::test]
async fn ensure_table_and_add_partition_are_idempotent() {
    let client = glue_client(&moto().sdk_config().await);
    let database = unique("ads").replace('-', "_");
    let location = lake_location("ads-lake", "events");
    let catalog = GlueCatalog::new(client.clone(), &database, "events", &location);
    catalog.ensure_table().await.unwrap();
    catalog.ensure_table().await.unwrap();

    let partition = Partition {
        year: 2026,
        month: 11,
        day: 28,
        hour: 7,
    };
    catalog
        .add_partition("acme-video", partition)
        .await
        .unwrap();
    catalog
        .add_partition("acme-video", partition)
        .await
        .unwrap();
    // Another worker's catalog does not know the partition yet: Glue's AlreadyExists it is.
    let other = GlueCatalog::new(client.clone(), &database, "events", &location);
    other.ensure_table().await.unwrap();
    other.add_partition("acme-video", partition).await.unwrap();

    let table = client
        .get_table()
        .database_name(&database)
        .name("events")
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(table.table_type(), Some("EXTERNAL_TABLE"));
    assert_eq!(
        table
            .parameters()
            .and_then(|p| p.get("classification"))
            .map(String::as_str),
        Some("parquet")
    );
    let keys: Vec<(&str, Option<&str>)> = table
        .partition_keys()
        .iter()
        .map(|c| (c.name(), c.r#type()))
        .collect();
    assert_eq!(
        keys,
        PARTITION_KEYS
            .iter()
            .map(|k| (*k, Some("string")))
            .collect::<Vec<_>>()
    );
    let storage = table.storage_descriptor().unwrap();
    assert_eq!(storage.location(), Some("s3://ads-lake/events/"));
    let columns: Vec<(&str, Option<&str>)> = storage
        .columns()
        .iter()
        .map(|c| (c.name(), c.r#type()))
        .collect();
    assert_eq!(
        columns,
        COLUMNS
            .iter()
            .map(|(n, t)| (*n, Some(*t)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        storage.serde_info().and_then(|s| s.serialization_library()),
        Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    );
    assert_eq!(
        storage.input_format(),
        Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
    );

    let partitions = client
        .get_partitions()
        .database_name(&database)
        .table_name("events")
        .send()
        .await
        .unwrap();
    let partitions = partitions.partitions();
    assert_eq!(partitions.len(), 1, "{partitions:?}");
    assert_eq!(partitions[0].values(), ["acme-video", "2026-11-28", "07"]);
    let storage = partitions[0].storage_descriptor().unwrap();
    assert_eq!(
        storage.location(),
        Some("s3://ads-lake/events/partner=acme-video/dt=2026-11-28/hour=07/")
    );
    assert_eq!(storage.columns().len(), COLUMNS.len());
}
