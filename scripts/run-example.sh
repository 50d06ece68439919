#!/usr/bin/env bash
# Runs the example server with embedded defaults: an SQLite file `users.db` in the current
# directory and, unless REDIS_URL or REDIS_CLUSTER_NODES is set, a private redis-server on a free loopback port
# (installed with apt when missing and possible), stopped by its PID when the server exits.
# Without redis-server it falls back to the in-process store (REDIS_URL=mem://) and says so.
# Any variable of the server (APP_ADDR, DATABASE_URL, CACHE_MODE, BCRYPT_COST, …) passes through.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

. "$root/scripts/free-port.sh"

if [ -z "${REDIS_URL:-}" ] && [ -z "${REDIS_CLUSTER_NODES:-}" ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "run-example: redis-server is not installed; trying apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then
      (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || true
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      (sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null) || true
    fi
  fi
  if command -v redis-server >/dev/null 2>&1; then
    port="$(free_port)"
    dir="$(mktemp -d)"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
    for _ in $(seq 1 100); do [ -s "$dir/redis.pid" ] && break; sleep 0.05; done
    trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
    export REDIS_URL="redis://127.0.0.1:$port"
    echo "run-example: started a private redis-server at $REDIS_URL (pid $(cat "$dir/redis.pid"))" >&2
  else
    export REDIS_URL="mem://"
    echo "run-example: no redis-server available: caching in process (REDIS_URL=mem://)" >&2
  fi
fi

# Built where the sources are; run where the user is, so that users.db lands there.
cargo build --release --manifest-path "$root/Cargo.toml" -p example-server
"$root/target/release/example-server"
