# Sourced by the scripts (after free-port.sh). `start_postgres` starts a throwaway PostgreSQL
# 15 cluster on a free loopback port, exports TEST_POSTGRES_URL, and stops it by its PID when
# the script exits. A TEST_POSTGRES_URL already set is used instead.
start_postgres() {
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
      kill "$(head -n 1 "$pg_dir/data/postmaster.pid" 2>/dev/null)" 2>/dev/null || true
      for _ in $(seq 1 50); do [ -f "$pg_dir/data/postmaster.pid" ] || break; sleep 0.1; done
      rm -rf "$pg_dir" || echo "stop_postgres: could not remove $pg_dir" >&2
    }
    trap stop_postgres EXIT
    export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
    echo "PostgreSQL for the tests at $TEST_POSTGRES_URL"
  fi
}
