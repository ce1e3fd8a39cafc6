#!/usr/bin/env bash
# Starts the local AWS emulator: moto (Kinesis, S3, DynamoDB, Glue) from the test virtualenv,
# with the Kinesis fixes of scripts/moto_server.py, on 127.0.0.1. Prints the environment that
# points the AWS SDK (and the aws CLI) at it:
#
#   eval "$(bash scripts/aws-up.sh)"      # or: eval "$(make -s aws-up)"
#
# Idempotent: a server already started by this script is reused. Stop it with aws-down.sh.
# ADPIPE_MOTO_PORT picks the port (default: a free one), ADPIPE_STATE where its pid, port and
# log are kept (default ~/.cache/adpipe/state), ADPIPE_VENV the virtualenv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${ADPIPE_STATE:-$HOME/.cache/adpipe/state}"
startup_seconds=60

print_env() {
    # AWS_DEFAULT_REGION too: boto3 and the aws CLI v1 read only that one.
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$1 AWS_REGION=us-east-1" \
        "AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
}

answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

mkdir -p "$state"
if [[ -f "$state/moto.pid" && -f "$state/moto.port" ]]; then
    pid="$(cat "$state/moto.pid")"
    port="$(cat "$state/moto.port")"
    if grep -qs moto_server.py "/proc/$pid/cmdline" && answers "$port"; then
        echo "aws-up: moto already running (pid $pid)" >&2
        print_env "$port"
        exit 0
    fi
fi

venv="$(bash "$root/scripts/python-env.sh")"
port="${ADPIPE_MOTO_PORT:-$("$venv/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
nohup "$venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" \
    >"$state/moto.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/moto.pid"
echo "$port" >"$state/moto.port"

for ((i = 0; i < startup_seconds * 10; i++)); do
    if answers "$port"; then
        echo "aws-up: moto on 127.0.0.1:$port (pid $pid, log $state/moto.log)" >&2
        print_env "$port"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "aws-up: moto exited; its log:" >&2
        cat "$state/moto.log" >&2
        rm -f "$state/moto.pid" "$state/moto.port"
        exit 1
    fi
    sleep 0.1
done
echo "aws-up: moto did not answer on port $port within ${startup_seconds}s; log: $state/moto.log" >&2
exit 1
