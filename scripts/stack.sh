#!/usr/bin/env bash
# The local stack: a private RabbitMQ node and a private PostgreSQL 15 cluster, run as plain
# processes (there is no Docker engine on our machines), with their data under .run/.
#
#   scripts/stack.sh up       install what is missing, start both servers, wait until they answer
#   scripts/stack.sh down     stop what `up` started (and nothing else)
#   scripts/stack.sh status   say what runs and where
#   scripts/stack.sh env      print the connection settings (the content of .run/stack.env)
#   scripts/stack.sh packages install the Debian packages the project needs, and nothing else
#
# Everything is configurable through the environment (defaults in brackets):
#   BAZAAR_RUN_DIR        where data, logs and pid files live        [<repo>/.run]
#   BAZAAR_AMQP_PORT      RabbitMQ's AMQP port (distribution: +20000)  [5673]
#                         AMQP over TLS listens on the next port, with a certificate from a
#                         throw-away CA the script makes in .run/tls (for tests of amqps://)
#   BAZAAR_PG_PORT        PostgreSQL's port                            [5433]
#   BAZAAR_ADMIN_USER     admin user on both servers                   [bazaar]
#   BAZAAR_ADMIN_PASSWORD its password (local development only)        [bazaar]
#
# Ports differ from the servers' usual ones so that a system RabbitMQ or Postgres can keep running.
# `up` is idempotent: a second call reuses what runs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${BAZAAR_RUN_DIR:-$repo/.run}
amqp_port=${BAZAAR_AMQP_PORT:-5673}
pg_port=${BAZAAR_PG_PORT:-5433}
admin_user=${BAZAAR_ADMIN_USER:-bazaar}
admin_password=${BAZAAR_ADMIN_PASSWORD:-bazaar}

rabbit_dir=$run_dir/rabbitmq
pg_dir=$run_dir/postgres
pg_bin=/usr/lib/postgresql/15/bin
rabbit_sbin=/usr/lib/rabbitmq/bin
rabbit_node=bazaar-$amqp_port@localhost
amqps_port=$((amqp_port + 1))
tls_dir=$run_dir/tls

# Fails early, and clearly, when another process holds a port we need.
require_free_port() {
  local port=$1 what=$2 variable=$3
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port ($what) is taken by another process: stop it, or choose another port with $variable=…"
  fi
}

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
fail() { printf 'stack: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Packages

packages=(rabbitmq-server postgresql-15 librabbitmq-dev libpq-dev pkg-config amqp-tools openssl curl python3-venv)

install_missing_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || fail "missing packages (${missing[*]}): run as root, or install them with apt-get"
  say "installing ${missing[*]} (apt-get; a minute or two)"
  # Debian starts a freshly installed server as a system service; we run our own private ones,
  # so keep the package scripts from starting theirs (only when no policy is set already).
  local policy=/usr/sbin/policy-rc.d
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # removed even if apt fails
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  return 0
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ: the packaged scripts run as root when called directly (the /usr/sbin wrappers would
# switch to the system's rabbitmq user and its /var/lib/rabbitmq); every path is ours.

rabbit_env() {
  export RABBITMQ_NODENAME=$rabbit_node
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$amqp_port
  export RABBITMQ_DIST_PORT=$((amqp_port + 20000))
  export RABBITMQ_BASE=$rabbit_dir
  export RABBITMQ_MNESIA_BASE=$rabbit_dir/mnesia
  export RABBITMQ_LOG_BASE=$rabbit_dir/log
  export RABBITMQ_PID_FILE=$rabbit_dir/rabbitmq.pid
  export RABBITMQ_CONFIG_FILE=$rabbit_dir/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$rabbit_dir/enabled_plugins
  export HOME=$rabbit_dir # the Erlang cookie lives here
}

# A local certificate authority and a server certificate for localhost / 127.0.0.1, made once.
make_tls_material() {
  [ -f "$tls_dir/server.pem" ] && return
  mkdir -p "$tls_dir"
  (
    cd "$tls_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Bazaar local CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -copy_extensions copyall -out server.pem 2>/dev/null
    rm -f server.csr
    chmod 600 ./*.key
  ) || fail "could not make TLS certificates with openssl"
}

rabbitmqctl() { (rabbit_env; "$rabbit_sbin/rabbitmqctl" "$@"); }

# A pid file survives a reboot; the pid in it may now be someone else's: check it is our node.
rabbit_running() {
  [ -f "$rabbit_dir/rabbitmq.pid" ] || return 1
  local pid; pid=$(cat "$rabbit_dir/rabbitmq.pid")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-home $rabbit_dir "
}

start_rabbitmq() {
  if rabbit_running; then say "RabbitMQ already runs (node $rabbit_node, port $amqp_port)"; return; fi
  require_free_port "$amqp_port" "RabbitMQ" BAZAAR_AMQP_PORT
  require_free_port "$((amqp_port + 20000))" "RabbitMQ distribution" BAZAAR_AMQP_PORT
  require_free_port "$amqps_port" "RabbitMQ TLS" BAZAAR_AMQP_PORT
  mkdir -p "$rabbit_dir/log" "$rabbit_dir/mnesia"
  make_tls_material
  cat >"$rabbit_dir/rabbitmq.conf" <<EOF
# Written by scripts/stack.sh; rewritten on every start.
listeners.tcp.default = 127.0.0.1:$amqp_port
listeners.ssl.default = 127.0.0.1:$amqps_port
ssl_options.cacertfile = $tls_dir/ca.pem
ssl_options.certfile = $tls_dir/server.pem
ssl_options.keyfile = $tls_dir/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
# No guest user: the first boot creates this administrator instead.
default_user = $admin_user
default_pass = $admin_password
default_user_tags.administrator = true
default_vhost = /
heartbeat = 30
# The local stack shares a small machine: don't block publishers on its modest free disk or memory.
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.6
EOF
  echo '[].' >"$rabbit_dir/enabled_plugins"
  say "starting RabbitMQ (node $rabbit_node on 127.0.0.1:$amqp_port; log in $rabbit_dir/log)"
  (rabbit_env; cd "$rabbit_dir"; setsid nohup "$rabbit_sbin/rabbitmq-server" >"$rabbit_dir/log/console.log" 2>&1 &)
  local i
  for i in $(seq 1 120); do
    if rabbitmqctl -q await_startup --timeout 1 >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  tail -n 30 "$rabbit_dir/log/console.log" >&2 || true
  fail "RabbitMQ did not start within 120 s (see $rabbit_dir/log)"
}

stop_rabbitmq() {
  if ! rabbit_running; then say "RabbitMQ is not running"; return; fi
  say "stopping RabbitMQ (node $rabbit_node)"
  local pid; pid=$(cat "$rabbit_dir/rabbitmq.pid")
  rabbitmqctl -q stop "$rabbit_dir/rabbitmq.pid" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$rabbit_dir/rabbitmq.pid"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: a private cluster run by the `postgres` user. The postgres user must be able to
# reach the data folder; when the checkout sits where it can't (a home folder with mode 700), the
# cluster lives under /var/lib/bazaar instead and .run/postgres links to it.

pg_as() { (cd / && runuser -u postgres -- "$@"); }  # from /: the checkout may be out of its reach

pg_data_dir() { echo "$pg_dir/data"; }

prepare_pg_dir() {
  if [ -e "$pg_dir" ]; then pg_dir=$(readlink -f "$pg_dir"); return; fi
  mkdir -p "$run_dir"
  if runuser -u postgres -- test -x "$run_dir"; then
    mkdir -p "$pg_dir"
  else
    local elsewhere
    elsewhere=/var/lib/bazaar/$(printf '%s' "$run_dir" | md5sum | cut -c1-12)/postgres
    say "the postgres user can't reach $run_dir: keeping the cluster in $elsewhere"
    mkdir -p "$elsewhere"
    ln -s "$elsewhere" "$pg_dir"
  fi
  # Every path handed to the postgres user must avoid the link: it can't traverse the checkout.
  pg_dir=$(readlink -f "$pg_dir")
  chown postgres:postgres "$pg_dir"
}

pg_running() {
  [ -e "$pg_dir" ] && pg_dir=$(readlink -f "$pg_dir")
  [ -f "$(pg_data_dir)/postmaster.pid" ] && pg_as "$pg_bin/pg_ctl" -D "$(pg_data_dir)" status >/dev/null 2>&1
}

start_postgres() {
  prepare_pg_dir
  local data; data=$(pg_data_dir)
  if pg_running; then say "PostgreSQL already runs (port $pg_port)"; return; fi
  require_free_port "$pg_port" "PostgreSQL" BAZAAR_PG_PORT
  if [ ! -f "$data/PG_VERSION" ]; then
    say "creating a PostgreSQL 15 cluster in $data"
    local pwfile; pwfile=$(mktemp); printf '%s\n' "$admin_password" >"$pwfile"; chown postgres "$pwfile"
    pg_as "$pg_bin/initdb" -D "$data" -U "$admin_user" --pwfile="$pwfile" --auth=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$pg_dir/initdb.log" >&2; fail "initdb failed"; }
    rm -f "$pwfile"
    mkdir -p "$pg_dir/socket"; chown postgres:postgres "$pg_dir/socket"
  fi
  say "starting PostgreSQL 15 (127.0.0.1:$pg_port; log in $pg_dir/postgres.log)"
  pg_as "$pg_bin/pg_ctl" -D "$data" -l "$pg_dir/postgres.log" -w -t 60 start \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $pg_dir/socket -c max_connections=300" >/dev/null \
    || { tail -n 30 "$pg_dir/postgres.log" >&2; fail "PostgreSQL did not start"; }
  PGPASSWORD=$admin_password psql -h 127.0.0.1 -p "$pg_port" -U "$admin_user" -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname = 'bazaar'" | grep -q 1 \
    || PGPASSWORD=$admin_password psql -h 127.0.0.1 -p "$pg_port" -U "$admin_user" -d postgres -qc "CREATE DATABASE bazaar"
}

stop_postgres() {
  if ! pg_running; then say "PostgreSQL is not running"; return; fi
  say "stopping PostgreSQL"
  pg_as "$pg_bin/pg_ctl" -D "$(pg_data_dir)" -m fast -w stop >/dev/null
}

# ---------------------------------------------------------------------------------------------

stack_env() {
  cat <<EOF
# Written by scripts/stack.sh: connection settings of the local stack (admin credentials).
AMQP_URL=amqp://$admin_user:$admin_password@127.0.0.1:$amqp_port/%2f
AMQPS_URL=amqps://$admin_user:$admin_password@localhost:$amqps_port/%2f?cacertfile=$tls_dir/ca.pem
DATABASE_URL=postgres://$admin_user:$admin_password@127.0.0.1:$pg_port/bazaar
RABBITMQCTL=$run_dir/bin/rabbitmqctl
EOF
}

write_env() {
  mkdir -p "$run_dir/bin"
  # Keep the services' URLs that scripts/services.sh added, if they run.
  local services=""
  [ -f "$run_dir/stack.env" ] && services=$(grep -E '^(ORDER|INVENTORY|PAYMENT|NOTIFICATION)_URL=' "$run_dir/stack.env" || true)
  { stack_env; [ -n "$services" ] && echo "$services"; } >"$run_dir/stack.env"
  # rabbitmqctl bound to our node, for people and tests (close_all_connections, list_queues…).
  cat >"$run_dir/bin/rabbitmqctl" <<EOF
#!/bin/sh
export RABBITMQ_NODENAME=$rabbit_node RABBITMQ_BASE=$rabbit_dir HOME=$rabbit_dir
export RABBITMQ_CONFIG_FILE=$rabbit_dir/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$rabbit_dir/enabled_plugins
exec $rabbit_sbin/rabbitmqctl "\$@"
EOF
  chmod +x "$run_dir/bin/rabbitmqctl"
}

check_answers() {
  rabbitmqctl -q ping >/dev/null 2>&1 || fail "RabbitMQ does not answer"
  local version
  version=$(PGPASSWORD=$admin_password psql -h 127.0.0.1 -p "$pg_port" -U "$admin_user" -d bazaar -qtAc 'SHOW server_version') \
    || fail "PostgreSQL does not answer"
  say "RabbitMQ $(rabbitmqctl -q version 2>/dev/null) answers at amqp://127.0.0.1:$amqp_port"
  say "PostgreSQL $version answers at postgres://127.0.0.1:$pg_port/bazaar"
}

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  up)
    install_missing_packages
    mkdir -p "$run_dir"
    start_postgres
    start_rabbitmq
    write_env
    check_answers
    say "connection settings in $run_dir/stack.env"
    ;;
  down)
    stop_rabbitmq
    stop_postgres
    ;;
  status)
    if rabbit_running; then say "RabbitMQ runs: node $rabbit_node, amqp://127.0.0.1:$amqp_port"; else say "RabbitMQ: not running"; fi
    if [ -e "$pg_dir" ] && pg_running; then say "PostgreSQL runs: postgres://127.0.0.1:$pg_port/bazaar"; else say "PostgreSQL: not running"; fi
    ;;
  env) stack_env ;;
  packages) install_missing_packages ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
