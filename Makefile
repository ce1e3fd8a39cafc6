# The one task runner: CI (.ci/run) calls these targets, so local runs and CI never differ.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/adpipe/target
export ADPIPE_VENV ?= $(HOME)/.cache/adpipe/venv
CARGO ?= cargo

.PHONY: test unit-test lint fmt python-env bench aws-up aws-down

## Every test, real components included (a Python virtualenv with DuckDB, pyarrow and
## aws-kinesis-agg is set up on first use).
test: python-env
	$(CARGO) test --workspace --features adpipe/external-tests --features adpipe-leases/external-tests --features adpipe-aws/external-tests

## Tests that need nothing but Rust (what `cargo test` runs offline).
unit-test:
	$(CARGO) test --workspace

## Formatting and clippy, as CI enforces them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features adpipe/external-tests --features adpipe-leases/external-tests --features adpipe-aws/external-tests -- -D warnings

fmt:
	$(CARGO) fmt --all

python-env:
	bash scripts/python-env.sh

## The local AWS emulator (moto, Kinesis patched as scripts/moto_server.py says) on 127.0.0.1;
## prints the environment to use: eval "$$(make -s aws-up)".
aws-up:
	@bash scripts/aws-up.sh

## Stops the emulator aws-up started.
aws-down:
	@bash scripts/aws-down.sh

## Micro-benchmarks of the hot paths (criterion; reports under $(CARGO_TARGET_DIR)/criterion);
## bench/results/latest.md records the last run that was written up.
bench:
	$(CARGO) bench -p adpipe-bench
