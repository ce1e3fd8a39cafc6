"""moto's server with its Kinesis resharding brought in line with AWS.

    python scripts/moto_server.py -H 127.0.0.1 -p 5000     # same arguments as moto_server
    python scripts/moto_server.py --exit-on-stdin-eof ...  # stops when its parent goes away

`--exit-on-stdin-eof` is for test processes that start the server with a pipe as its stdin:
the server exits once the pipe closes, which the OS does when the test process ends, however
it ends.

moto 5.2.5 (the version tests/python/requirements.txt pins) lists split and merged shards
correctly but differs from AWS in what a consumer group depends on after a reshard:

1. PutRecord(s) may land on a CLOSED shard: it picks the first shard, open or closed, whose
   range holds the hash key, so after a split every write still goes to the parent and the
   children stay empty. AWS routes writes to open shards only.
2. SplitShard re-puts the parent's records (it empties the parent, then writes the records
   again, which by (1) puts them back into the parent under new sequence numbers), and
   MergeShards copies both parents' records into the child, so they are stored twice. On AWS
   the records stay in the closed parent; children start empty.
3. GetRecords always returns a NextShardIterator. On AWS it is absent once a closed shard has
   been read to its end ("If set to null, the shard has been closed and the requested
   iterator does not return any more data"), which is how a consumer learns to move on to
   the children.

4. Shard.put_record picks "max sequence number + 1" without a lock (its own comment says it
   "is not safe for concurrency"): two PutRecords served at once by the threaded server can
   get the same sequence number, and the second silently replaces the first although both
   were answered as stored. Kinesis never loses an acknowledged record, so writes to the
   backend are serialised here.

This script patches exactly these four behaviours, in this process only, and then runs
moto's own server. Everything else is moto as released. It refuses to start with another
moto version, since the patches replace moto internals that may have changed.
"""

import base64
import os
import sys
import threading
from collections import OrderedDict

import moto
from moto.kinesis import models
from moto.kinesis.exceptions import InvalidArgumentError
from moto.server import main
from moto.utilities.utils import md5_hash

PATCHED_MOTO_VERSION = "5.2.5"
MAX_PARTITION_KEY_CHARS = 256
HASH_KEY_SPACE = 2**128
EXIT_ON_STDIN_EOF = "--exit-on-stdin-eof"


def open_shard_for_key(self, partition_key, explicit_hash_key):
    """(1) The open shard whose inclusive hash key range holds the record's hash key."""
    if not isinstance(partition_key, str) or len(partition_key) > MAX_PARTITION_KEY_CHARS:
        raise InvalidArgumentError("partition_key")
    if explicit_hash_key:
        if not isinstance(explicit_hash_key, str):
            raise InvalidArgumentError("explicit_hash_key")
        hash_key = int(explicit_hash_key)
        if hash_key >= HASH_KEY_SPACE:
            raise InvalidArgumentError("explicit_hash_key")
    else:
        hash_key = int(md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= hash_key <= shard.ending_hash:
            return shard
    return None


def keeping_parent_records(reshard):
    """(2) Runs a split or merge with the parents' records set aside, then puts them back."""

    def patched(self, *args):
        # The shard ids among the arguments: one for a split (then a hash key), two for a merge.
        parents = [self.shards[arg] for arg in args if arg in self.shards]
        kept = [(shard, shard.records) for shard in parents]
        for shard in parents:
            shard.records = OrderedDict()
        try:
            return reshard(self, *args)
        finally:
            for shard, records in kept:
                shard.records = records

    return patched


def ending_at_shard_end(get_records):
    """(3) No NextShardIterator once a closed shard has been read to its last record."""

    def patched(self, stream_arn, shard_iterator, limit):
        next_iterator, records, millis_behind = get_records(
            self, stream_arn, shard_iterator, limit
        )
        stream_name, shard_id, last_read = (
            base64.decodebytes(next_iterator.encode()).decode().split(":")
        )
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        shard = stream.get_shard(shard_id)
        if not shard.is_open and int(last_read) >= shard.get_max_sequence_number():
            next_iterator = None
        return next_iterator, records, millis_behind

    return patched


def serialised(write):
    """(4) Runs a Kinesis write under one process-wide lock."""
    lock = threading.Lock()

    def patched(self, *args, **kwargs):
        with lock:
            return write(self, *args, **kwargs)

    return patched


def patch_kinesis():
    """Applies the four patches; fails loudly on a moto these were not checked against."""
    if moto.__version__ != PATCHED_MOTO_VERSION:
        sys.exit(
            f"moto_server.py: moto {moto.__version__} is installed, the Kinesis patches were "
            f"checked against {PATCHED_MOTO_VERSION}; re-check them before changing the pin"
        )
    models.Stream.get_shard_for_key = open_shard_for_key
    models.Stream.split_shard = keeping_parent_records(models.Stream.split_shard)
    models.Stream.merge_shards = keeping_parent_records(models.Stream.merge_shards)
    models.KinesisBackend.get_records = ending_at_shard_end(models.KinesisBackend.get_records)
    models.KinesisBackend.put_records = serialised(models.KinesisBackend.put_records)
    models.KinesisBackend.put_record = serialised(models.KinesisBackend.put_record)


def exit_on_stdin_eof():
    """Reads stdin until it closes, then ends the whole process."""
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    patch_kinesis()
    args = sys.argv[1:]
    if EXIT_ON_STDIN_EOF in args:
        args.remove(EXIT_ON_STDIN_EOF)
        threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    sys.exit(main(args))
