"""The other side of tests/aws_interop.rs: the `aws-kinesis-agg` package as another producer
writing to adpipe's stream, and as another consumer reading what adpipe's receiver wrote.

    python kinesis_records.py aggregate IN     # IN: JSON lines, one stream event each
                                               # stdout: JSON lines {"partition_key",
                                               #   "explicit_hash_key", "data" (base64),
                                               #   "user_records" (count)}, one per aggregate
    python kinesis_records.py deaggregate IN   # IN: JSON lines {"partition_key", "data"
                                               #   (base64)}, raw Kinesis records
                                               # stdout: JSON lines {"partition_key",
                                               #   "aggregated", "data" (UTF-8 text)}, one per
                                               #   user record

Each event's partition key is its ad session id, else its event id, as the contract says.
"""

import base64
import json
import sys

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records

# Small enough that a few hundred events make several aggregates.
AGGREGATE_BYTES = 16 * 1024


def aggregate(in_path):
    aggregator = RecordAggregator(max_size=AGGREGATE_BYTES)
    count = 0

    def write(agg_record, users):
        partition_key, explicit_hash_key, data = agg_record.get_contents()
        line = {
            "partition_key": partition_key,
            "explicit_hash_key": explicit_hash_key,
            "data": base64.b64encode(data).decode("ascii"),
            "user_records": users,
        }
        print(json.dumps(line))

    with open(in_path) as src:
        for line in src:
            event = json.loads(line)
            key = event.get("ad_session_id") or event["event_id"]
            full = aggregator.add_user_record(key, line.strip().encode("utf-8"))
            if full is not None:
                # The aggregate is full without this record, which starts the next one.
                write(full, count)
                count = 0
            count += 1
        last = aggregator.clear_and_get()
        if last is not None:
            write(last, count)


def deaggregate(in_path):
    with open(in_path) as src:
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
            for user in deaggregate_records([kinesis_record]):
                data = user["kinesis"]["data"]
                # Aggregated user records come back as bytes, pass-through records as base64.
                if isinstance(data, bytes):
                    text = data.decode("utf-8")
                else:
                    text = base64.b64decode(data).decode("utf-8")
                if user["kinesis"].get("aggregated"):
                    text = base64.b64decode(text).decode("utf-8")
                print(
                    json.dumps(
                        {
                            "partition_key": user["kinesis"]["partitionKey"],
                            "aggregated": bool(user["kinesis"].get("aggregated")),
                            "data": text,
                        }
                    )
                )


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "aggregate" and len(sys.argv) == 3:
        aggregate(sys.argv[2])
    elif command == "deaggregate" and len(sys.argv) == 3:
        deaggregate(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
