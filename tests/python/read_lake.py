"""Reads an adpipe lake with readers no one on the project wrote, and prints what they see.

Usage: read_lake.py LAKE_DIR   (the directory that holds partner=... partitions)

Prints one JSON object: the column names and types DuckDB and pyarrow report, and every row
(as DuckDB reads it with Hive partitioning), so the Rust test can assert on them.
"""
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

lake = sys.argv[1]
glob = f"{lake}/**/*.parquet"

con = duckdb.connect()
relation = f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
duck_columns = [[name, str(kind)] for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
rows = con.execute(
    f"""SELECT event_id, partner, event_type, epoch_ms(event_time) AS event_time,
               epoch_ms(received_at) AS received_at, ip, device_type, os, browser,
               CAST(dt AS VARCHAR) AS dt, CAST(hour AS VARCHAR) AS hour,
               country, region, city, attributes['deal'] AS deal, cardinality(attributes) AS attribute_count
        FROM {relation} ORDER BY event_id"""
).fetchall()
names = ["event_id", "partner", "event_type", "event_time", "received_at", "ip", "device_type",
         "os", "browser", "dt", "hour", "country", "region", "city", "deal", "attribute_count"]

dataset = ds.dataset(lake, format="parquet", partitioning="hive")
table = dataset.to_table()
arrow_columns = [[field.name, str(field.type)] for field in dataset.schema]
attributes = dataset.schema.field("attributes").type

print(json.dumps({
    "duckdb_columns": duck_columns,
    "rows": [dict(zip(names, row)) for row in rows],
    "pyarrow_columns": arrow_columns,
    "pyarrow_attributes": [str(pa.types.is_map(attributes)),
                           str(attributes.key_type), str(attributes.item_type)],
    "pyarrow_rows": table.num_rows,
    "pyarrow_event_ids": sorted(table.column("event_id").to_pylist()),
}))
