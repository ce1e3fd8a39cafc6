#!/usr/bin/env bash
# Stops the moto server that aws-up.sh started, by the pid it recorded, and only that one.
set -euo pipefail

state="${ADPIPE_STATE:-$HOME/.cache/adpipe/state}"
stop_seconds=10

if [[ ! -f "$state/moto.pid" ]]; then
    echo "aws-down: no moto started by aws-up.sh" >&2
    exit 0
fi
pid="$(cat "$state/moto.pid")"
# NOTE: the pid may have been reused since; only a moto_server.py process is ours to stop.
if grep -qs moto_server.py "/proc/$pid/cmdline"; then
    kill "$pid"
    for ((i = 0; i < stop_seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
    fi
    echo "aws-down: stopped moto (pid $pid)" >&2
else
    echo "aws-down: moto (pid $pid) is not running" >&2
fi
rm -f "$state/moto.pid" "$state/moto.port"
