#!/usr/bin/env bash
# The test command: everything the tests need, then every check, on a fresh Debian machine.
# Each test starts its own redis-server on a free loopback port and stops it by PID, so no
# service has to be running; this script only makes sure redis-server is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/free-port.sh

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
  fi
fi
redis-server --version

# A throwaway PostgreSQL cluster for the example server's tests, on a free loopback port,
# stopped by its PID when this script exits. TEST_POSTGRES_URL, if set, is used instead.
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ -z "${TEST_POSTGRES_URL:-}" ]; then
  if [ ! -x "$pg_bin/initdb" ]; then
    echo "PostgreSQL 15 is not in $pg_bin (set PG_BIN or TEST_POSTGRES_URL)" >&2
    exit 1
  fi
  pg_dir="$(mktemp -d)"
  as_owner=()
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root.
    chown postgres "$pg_dir"
    as_owner=(runuser -u postgres --)
  fi
  pg_port="$(free_port)"
  # From inside the cluster's folder: the postgres user may not be allowed in ours.
  (cd "$pg_dir" && "${as_owner[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null)
  (cd "$pg_dir" && "${as_owner[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null)
  stop_postgres() {
    kill "$(head -n 1 "$pg_dir/data/postmaster.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -f "$pg_dir/data/postmaster.pid" ] || break; sleep 0.1; done
    rm -rf "$pg_dir"
  }
  trap stop_postgres EXIT
  export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "PostgreSQL for the tests at $TEST_POSTGRES_URL"
fi

echo "== formatting"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doctests"
cargo test --workspace --doc --locked
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  cargo test --workspace --locked
fi
