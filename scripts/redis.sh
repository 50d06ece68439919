# Sourced by the scripts: `install_redis_server` installs Debian's redis-server when missing
# (as root, or through sudo). It does not start it: every test and benchmark starts its own.
install_redis_server() {
  # The TLS tests make their certificates with openssl; redis-cli checks a TLS server is up.
  if ! command -v openssl >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && apt-get install -y -qq openssl >/dev/null
    else
      sudo apt-get update -qq && sudo apt-get install -y -qq openssl >/dev/null
    fi
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server"
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
      sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
    fi
  fi
}
