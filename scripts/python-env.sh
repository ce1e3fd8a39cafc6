#!/usr/bin/env bash
# Creates the Python virtualenv the integration tests use: moto (the AWS fake) and the readers
# no one here wrote (aws-kinesis-agg, pyarrow, duckdb). Idempotent: the venv records a hash of
# tests/python/requirements.txt and is rebuilt only when that list changes.
#
#   bash scripts/python-env.sh      # prints the venv path
#
# ADPIPE_VENV overrides the location (default ~/.cache/adpipe/venv).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/tests/python/requirements.txt"
venv="${ADPIPE_VENV:-$HOME/.cache/adpipe/venv}"
stamp="$venv/.adpipe-requirements.sha256"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv"
    exit 0
fi

if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" ]]; then
    echo "python-env: $venv exists and is not a virtualenv; refusing to replace it" >&2
    exit 1
fi
echo "python-env: building $venv" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >&2
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements" >&2
echo "$want" >"$stamp"
echo "$venv"
