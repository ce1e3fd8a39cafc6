# The one task runner: CI (.ci/run) calls these targets, so local runs and CI never differ.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/adpipe/target
export ADPIPE_VENV ?= $(HOME)/.cache/adpipe/venv
CARGO ?= cargo

.PHONY: test unit-test lint fmt python-env bench aws-up aws-down cluster-up cluster-down cluster-build

# Every feature that turns on tests against real components.
REAL_TESTS := --features adpipe/external-tests --features adpipe-leases/external-tests \
	--features adpipe-aws/external-tests --features adpipe-operator/cluster-tests \
	--features adpipe-testkit/cluster-tests

## Every test, real components included: a Python virtualenv with moto, DuckDB, pyarrow and
## aws-kinesis-agg, and a Kubernetes control plane built from Go modules, both set up on
## first use and cached under ~/.cache/adpipe.
test: python-env cluster-build
	$(CARGO) test --workspace $(REAL_TESTS)

## Tests that need nothing but Rust (what `cargo test` runs offline).
unit-test:
	$(CARGO) test --workspace

## Formatting and clippy, as CI enforces them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(REAL_TESTS) -- -D warnings

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

## The comparison benchmark: adpipe's receiver against the Node.js reference design, the
## codec and HTTP floors, overload, a run on moto, the deliverer against DuckDB and pyarrow,
## the operator with 200 pipelines and the criterion micro-benchmarks; writes bench/results/
## (BENCH_FLAGS=--quick for a smoke run).
bench: python-env
	$(ADPIPE_VENV)/bin/python bench/run.py $(BENCH_FLAGS)

## A real Kubernetes control plane on 127.0.0.1 (etcd, apiserver, controllers, scheduler, kwok
## fake nodes), built from Go modules into ~/.cache/adpipe/k8s on first use; prints the
## environment to use: eval "$$(make -s cluster-up)".
cluster-up:
	@bash scripts/cluster/cluster.sh up

## Stops the cluster cluster-up started and removes its state.
cluster-down:
	@bash scripts/cluster/cluster.sh down

## Builds (once) the control-plane binaries, kubectl and helm into ~/.cache/adpipe/k8s.
cluster-build:
	@bash scripts/cluster/build.sh
