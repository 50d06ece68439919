# Sourced by the scripts: `free_port` prints a loopback port nobody listens on.
# Chosen in 23000–29999: below the kernel's ephemeral range (32768 and up), where an
# outgoing connection of anything else on the machine can take a port between our check and
# the server's bind (CI saw PostgreSQL fail so), and apart from the Redis Cluster's ports
# (20000–22699) and their bus ports (30000–32699, scripts/cluster.sh).
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((23000 + RANDOM % 7000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}
