# Sourced by the test command (after free-port.sh). `start_cluster` starts a Redis Cluster of
# three primaries with one replica each on free loopback ports (their cluster bus ports,
# +10000, free too), exports TEST_REDIS_CLUSTER_NODES for the tests that share it, and
# `stop_cluster` stops its nodes by PID. A TEST_REDIS_CLUSTER_NODES already set is used
# instead.
start_cluster() {
  if [ -n "${TEST_REDIS_CLUSTER_NODES:-}" ]; then
    return 0
  fi
  cluster_dir="$(mktemp -d)"
  local ports=() port nodes=()
  # A port is taken when it, or its bus port, is free and clashes with no chosen port or bus.
  local taken=" "
  # Below the kernel's ephemeral range (32768 and up), bus ports included: a port some
  # outgoing connection happens to hold cannot be listened on.
  while [ "${#ports[@]}" -lt 6 ]; do
    port=$((20000 + RANDOM % 2700))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
      && ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null \
      && [[ "$taken" != *" $port "* && "$taken" != *" $((port + 10000)) "* ]]; then
      ports+=("$port")
      taken="$taken$port $((port + 10000)) "
    fi
  done
  for port in "${ports[@]}"; do
    mkdir -p "$cluster_dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
      --repl-diskless-sync-delay 0 --cluster-replica-validity-factor 0 \
      --save "" --appendonly no --daemonize yes --dir "$cluster_dir/$port" \
      --pidfile "$cluster_dir/$port/redis.pid" --logfile "$cluster_dir/$port/redis.log"
    nodes+=("127.0.0.1:$port")
  done
  cluster_ports="${ports[*]}"
  wait_for() {
    for _ in $(seq 1 300); do
      if eval "$1"; then return 0; fi
      sleep 0.1
    done
    echo "Redis Cluster: gave up waiting for: $1" >&2
    stop_cluster
    exit 1
  }
  for port in "${ports[@]}"; do
    wait_for "[ \"\$(redis-cli -p $port PING 2>/dev/null)\" = PONG ]"
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  for port in "${ports[@]}"; do
    wait_for "redis-cli -p $port CLUSTER INFO 2>/dev/null | grep -q cluster_state:ok"
    # Replicas in sync: a failover needs one.
    wait_for "redis-cli -p $port INFO replication | grep -q -e role:master -e master_link_status:up"
  done
  TEST_REDIS_CLUSTER_NODES="$(printf 'redis://%s,' "${nodes[@]}")"
  export TEST_REDIS_CLUSTER_NODES="${TEST_REDIS_CLUSTER_NODES%,}"
  echo "Redis Cluster for the tests at $TEST_REDIS_CLUSTER_NODES"
}

stop_cluster() {
  local port pid pids=()
  for port in ${cluster_ports:-}; do
    pid="$(cat "$cluster_dir/$port/redis.pid" 2>/dev/null)" || continue
    kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  # A node shuts down after the signal (it writes its log and files on the way out): removing
  # its directory before it has exited fails with "Directory not empty", which, in the EXIT
  # trap of a run whose tests all passed, failed the run. Wait (at most 10 s) for them to go.
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  if [ -n "${cluster_dir:-}" ]; then
    rm -rf "$cluster_dir" || echo "stop_cluster: could not remove $cluster_dir" >&2
  fi
  return 0
}
