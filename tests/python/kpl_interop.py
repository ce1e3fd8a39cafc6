"""The other side of tests/kpl_interop.rs: the `aws-kinesis-agg` package reads what adpipe's
aggregator wrote, and writes aggregates for adpipe's deaggregator to read.

    python kpl_interop.py deaggregate IN OUT   # IN: JSON lines {"partition_key", "data"} (base64)
                                               # OUT: per IN line, a JSON array of user records
    python kpl_interop.py aggregate OUT        # OUT: JSON lines, one per aggregate, with the
                                               # user records it must hold

A user record is {"partition_key", "explicit_hash_key" (or null), "data" (base64)}.
"""

import base64
import json
import random
import sys

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records

# Keeps the aggregates small enough that the run yields many of them.
AGGREGATE_BYTES = 64 * 1024


def deaggregate(in_path, out_path):
    with open(in_path) as src, open(out_path, "w") as out:
        for number, line in enumerate(src):
            record = json.loads(line)
            kinesis_record = {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "sequenceNumber": str(number),
                    "approximateArrivalTimestamp": 0,
                    "partitionKey": record["partition_key"],
                    "data": record["data"],
                }
            }
            users = []
            for user in deaggregate_records([kinesis_record]):
                # The library passes records it cannot decode through unchanged, unmarked.
                if not user["kinesis"].get("aggregated"):
                    sys.exit(f"record {number} was not read as an aggregated record")
                users.append(
                    {
                        "partition_key": user["kinesis"]["partitionKey"],
                        "explicit_hash_key": user["kinesis"]["explicitHashKey"],
                        "data": user["kinesis"]["data"].decode("ascii"),
                    }
                )
            out.write(json.dumps(users) + "\n")


def user_records(rng):
    """A few hundred user records with varied keys (some multi-byte UTF-8, some repeated, some
    with explicit hash keys) and binary data of varied sizes."""
    keys = [f"session-{i}" for i in range(20)] + ["séance-ü", "セッション", "🦀-key", "k"]
    for i in range(400):
        key = rng.choice(keys) if rng.random() < 0.7 else f"event-{i}"
        size = rng.choice([0, 1, 17, 200, 1000, 5000, 30000])
        data = bytes(rng.getrandbits(8) for _ in range(size))
        explicit_hash_key = str(rng.getrandbits(128)) if rng.random() < 0.2 else None
        yield key, data, explicit_hash_key


def aggregate(out_path):
    rng = random.Random(20240601)
    aggregator = RecordAggregator(max_size=AGGREGATE_BYTES)
    pending = []

    def write(out, agg_record, users):
        partition_key, explicit_hash_key, data = agg_record.get_contents()
        line = {
            "partition_key": partition_key,
            "explicit_hash_key": explicit_hash_key,
            "data": base64.b64encode(data).decode("ascii"),
            "user_records": users,
        }
        out.write(json.dumps(line) + "\n")

    with open(out_path, "w") as out:
        for key, data, explicit_hash_key in user_records(rng):
            user = {
                "partition_key": key,
                "explicit_hash_key": explicit_hash_key,
                "data": base64.b64encode(data).decode("ascii"),
            }
            full = aggregator.add_user_record(key, data, explicit_hash_key)
            if full is not None:
                # The aggregate is full without this record, which starts the next one.
                write(out, full, pending)
                pending = []
            pending.append(user)
        last = aggregator.clear_and_get()
        if last is not None:
            write(out, last, pending)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "deaggregate" and len(sys.argv) == 4:
        deaggregate(sys.argv[2], sys.argv[3])
    elif command == "aggregate" and len(sys.argv) == 3:
        aggregate(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
