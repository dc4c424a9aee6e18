# The project's commands. The two that matter:
#   make dev    run the API on http://localhost:8000 (PORT=8001 make dev for another port)
#   make test   the whole test suite: unit, integration and end-to-end over HTTP
# Both start Redis and install cargo-lambda (into .venv/) when needed; see scripts/.
# `make test` then runs `cargo test --workspace`, which runs the end-to-end
# groups too (tests/tests/e2e_<group>.rs, each with its own stack).

SHELL := bash

.PHONY: dev test e2e build release bench cfn-lint redis redis-stop cargo-lambda fmt lint ci help

help:
	@echo "make dev         run the API locally (PORT, ADDRESS, CONCURRENCY; REDIS_MODE=cluster: on a local Redis Cluster)"
	@echo "make test        unit + integration + end-to-end tests, on one Redis node and on a local cluster (TEST_CLUSTER=0: node only)"
	@echo "make e2e         only the end-to-end tests (E2E_GROUPS=\"default ratelimit cache breaker secrets emf schemathesis\")"
	@echo "make build       build the functions"
	@echo "make release     arm64 Lambda binaries: target/lambda/<function>/bootstrap, with sizes"
	@echo "make bench       benchmarks against a private Redis; writes BENCHMARKS.md (BENCH_RUNS, BENCH_QUICK, BENCH_ONLY=peer)"
	@echo "make cfn-lint    lint the SAM template (template.yaml)"
	@echo "make redis       start Redis when none answers on REDIS_URL"
	@echo "make redis-stop  stop the Redis (and the local cluster) that make dev/make redis started"
	@echo "make cargo-lambda  install cargo-lambda into .venv/ (without zig; make release adds it)"
	@echo "make fmt | lint  rustfmt | clippy with warnings as errors"
	@echo "make ci          what CI runs (.ci/run)"

dev:
	@scripts/dev.sh

test:
	@scripts/test.sh

# Groups to run with `make e2e`, by name (tests/tests/e2e_<group>.rs); all by default.
E2E_GROUPS ?= *

e2e:
	@scripts/test.sh -p analytics-tests $(foreach group,$(E2E_GROUPS),--test 'e2e_$(group)')

build:
	@bash -c 'source scripts/lib.sh && build_functions'

release:
	@scripts/build-release.sh

bench:
	@scripts/bench.sh

cfn-lint:
	@scripts/cfn-lint.sh

redis:
	@scripts/ensure-redis.sh

redis-stop:
	@scripts/ensure-redis.sh --stop
	@scripts/redis-cluster.sh --stop

cargo-lambda:
	@scripts/ensure-cargo-lambda.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

ci:
	@bash .ci/run
