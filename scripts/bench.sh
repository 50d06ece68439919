#!/usr/bin/env bash
# The benchmarks (BENCHMARKS.md): the hit path against raw Redis and the `cached` crate, and
# the tutorial's HTTP benchmark with the cache on and off on SQLite and PostgreSQL. Starts
# what they need (a redis-server each, a throwaway PostgreSQL cluster), prints the tables and
# writes them with their SVG plots to target/bench/. CI builds the benchmarks but does not
# run them: these machines are shared and noisy, so the numbers are ratios measured side by
# side in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/free-port.sh
. scripts/redis.sh
. scripts/postgres.sh
install_redis_server
start_postgres
cargo bench -p cache-integration-tests --bench hit_path
cargo bench -p cache-integration-tests --bench cluster_hit_path
cargo bench -p cache-integration-tests --bench stall
cargo bench -p example-server --bench tutorial
cargo bench -p example-server --bench list
