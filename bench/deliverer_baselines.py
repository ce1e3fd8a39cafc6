"""The deliverer benchmark's baselines: the same events, NDJSON -> zstd Parquet, one thread.

    python deliverer_baselines.py duckdb|duckdb-string-id|pyarrow EVENTS.ndjson OUT.parquet

Runs in the test virtualenv (DuckDB and pyarrow as pinned in tests/python/requirements.txt)
and prints one JSON line: rows, cpu_s, wall_s, bytes. `cpu_s` is this process's CPU time
(user + system, every thread: time.process_time) around the conversion only, so interpreter
start-up and imports are not counted. Neither baseline enriches: they convert what they read,
with the types they infer (times stay integers, `attributes` becomes a struct), except that
`duckdb-string-id` keeps `event_id` a string, as the lake's contract has it, where DuckDB
would store the UUID it detects in 16 bytes.
"""

import json
import os
import sys
import time


def duckdb_convert(src, out, select="SELECT *"):
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads=1")
    con.execute("SET preserve_insertion_order=true")
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    con.execute(
        "COPY ({} FROM read_ndjson(?)) TO '{}' (FORMAT parquet, COMPRESSION zstd)".format(
            select, out.replace("'", "''")
        ),
        [src],
    )
    return time.process_time() - start_cpu, time.perf_counter() - start_wall


def duckdb_string_id_convert(src, out):
    return duckdb_convert(
        src, out, select="SELECT * REPLACE (CAST(event_id AS VARCHAR) AS event_id)"
    )


def pyarrow_convert(src, out):
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    table = pj.read_json(src, read_options=pj.ReadOptions(use_threads=False))
    pq.write_table(table, out, compression="zstd")
    return time.process_time() - start_cpu, time.perf_counter() - start_wall


ENGINES = {
    "duckdb": duckdb_convert,
    "duckdb-string-id": duckdb_string_id_convert,
    "pyarrow": pyarrow_convert,
}


def main():
    engine, src, out = sys.argv[1:4]
    cpu, wall = ENGINES[engine](src, out)
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    print(json.dumps({"engine": engine, "rows": rows, "cpu_s": cpu, "wall_s": wall,
                      "bytes": os.path.getsize(out)}))


if __name__ == "__main__":
    main()
