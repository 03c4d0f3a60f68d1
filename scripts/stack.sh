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
#   BAZAAR_PG_PORT        PostgreSQL's port (plain and TLS, same CA)   [5433]
#   BAZAAR_ADMIN_USER     admin user on both servers                   [bazaar]
#   BAZAAR_ADMIN_PASSWORD its password (local development only)        [bazaar]
#   BAZAAR_RABBITMQ_SCHEDULERS  the RabbitMQ node's Erlang scheduler threads, or `auto` for
#                         Erlang's one per core                         [1]
#                         (the node shares the cores with PostgreSQL and the services; on 2
#                         cores one scheduler costs less CPU, and near saturation halves the
#                         latency: README, Performance)
#   ORDER_AMQP_PASSWORD … NOTIFICATION_DB_PASSWORD, AUTH_JWT_SECRET: override .run/secrets.env
#
# As in compose, each service has its own broker user and database role (secrets.env; URLs in
# stack.env). Ports differ from the usual ones so a system RabbitMQ or Postgres can keep running.
# `up` is idempotent: a second call reuses what runs, and loads users and topology again.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${BAZAAR_RUN_DIR:-$repo/.run}
amqp_port=${BAZAAR_AMQP_PORT:-5673}
pg_port=${BAZAAR_PG_PORT:-5433}
admin_user=${BAZAAR_ADMIN_USER:-bazaar}
admin_password=${BAZAAR_ADMIN_PASSWORD:-bazaar}
rabbit_schedulers=${BAZAAR_RABBITMQ_SCHEDULERS:-1}

rabbit_dir=$run_dir/rabbitmq
pg_dir=$run_dir/postgres
pg_bin=/usr/lib/postgresql/15/bin
rabbit_sbin=/usr/lib/rabbitmq/bin
rabbit_node=bazaar-$amqp_port@localhost
amqps_port=$((amqp_port + 1))
tls_dir=$run_dir/tls
secrets_file=$run_dir/secrets.env

# The services, each with its own broker user (its name) and database role (bazaar_<name>), as
# deploy/rabbitmq/definitions.template.json and deploy/postgres/init.sh create them.
services=(order inventory payment notification)

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
# Secrets: each service's broker and database passwords, and the key the services verify HS256
# bearer tokens with. Generated once per stack into secrets.env (mode 600, letters and digits),
# each overridable from the environment; the admin user keeps BAZAAR_ADMIN_USER/PASSWORD.

declare -A secret=()

# Values go into URLs, JSON and shell lines unquoted: only URL-safe characters, nothing to escape.
require_plain() {
  [[ $2 =~ ^[A-Za-z0-9._~-]+$ ]] || fail "$1 may hold only letters, digits and . _ ~ - (it goes into URLs and stack.env as is)"
}

load_secrets() {
  local names=() name value
  for name in "${services[@]}"; do names+=("${name^^}_AMQP_PASSWORD" "${name^^}_DB_PASSWORD"); done
  names+=(AUTH_JWT_SECRET)
  mkdir -p "$run_dir"
  if [ ! -f "$secrets_file" ]; then
    (umask 077; echo "# Written once by scripts/stack.sh: this stack's passwords and token key. The environment overrides each." >"$secrets_file")
    say "generated this stack's passwords in $secrets_file"
  fi
  chmod 600 "$secrets_file"
  for name in "${names[@]}"; do
    value=$(sed -n "s/^$name=//p" "$secrets_file" | tail -n 1)
    if [ -z "$value" ]; then  # a new file, or a secret added since it was written
      case $name in
        AUTH_JWT_SECRET) value=$(openssl rand -hex 32) ;;  # 32 random bytes, as 64 hex digits
        *) value=$(openssl rand -hex 16) ;;
      esac
      [ -n "$value" ] || fail "openssl rand failed"
      echo "$name=$value" >>"$secrets_file"
    fi
    [ -n "${!name:-}" ] && value=${!name}  # the environment wins
    require_plain "$name" "$value"
    secret[$name]=$value
  done
  require_plain BAZAAR_ADMIN_USER "$admin_user"
  require_plain BAZAAR_ADMIN_PASSWORD "$admin_password"
}

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
  if [[ $rabbit_schedulers != auto ]]; then
    # Before the caller's own arguments, if any: Erlang takes the last +S.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S $rabbit_schedulers:$rabbit_schedulers ${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-}"
  fi
}

# A local certificate authority, made once, and from it a certificate for localhost / 127.0.0.1
# for each server: server.pem/.key for RabbitMQ's TLS listener, postgres.pem/.key for PostgreSQL.
# Clients verify both with ca.pem.
make_tls_material() {
  mkdir -p "$tls_dir"
  (
    cd "$tls_dir"
    if [ ! -f ca.pem ]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Bazaar local CA" \
        -keyout ca.key -out ca.pem 2>/dev/null
    fi
    for name in server postgres; do
      [ -f "$name.pem" ] && continue
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$name.key" -out "$name.csr" 2>/dev/null
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -copy_extensions copyall -out "$name.pem" 2>/dev/null
      rm -f "$name.csr"
    done
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
  [[ $rabbit_schedulers == auto || $rabbit_schedulers =~ ^[1-9][0-9]*$ ]] \
    || fail "BAZAAR_RABBITMQ_SCHEDULERS must be a count or auto, not '$rabbit_schedulers'"
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

# Queues can't change their arguments once declared, and importing definitions leaves an existing
# queue as it is (this RabbitMQ says nothing about the difference; services declaring nothing
# would then run on the old queues). So compare before importing, and stop if they differ.
check_queue_arguments() {
  local listed differing
  listed=$(rabbitmqctl -q list_queues -p / name arguments --formatter json) || fail "could not list RabbitMQ's queues"
  differing=$(python3 -c '
import json, sys
template = json.load(open(sys.argv[1]))
want = {q["name"]: {k: str(v) for k, v in q["arguments"].items()} for q in template["queues"] if q["vhost"] == "/"}
have = {q["name"]: {a[0]: str(a[2]) for a in q["arguments"]} for q in json.loads(sys.stdin.read() or "[]")}
print(" ".join(sorted(name for name in want if name in have and have[name] != want[name])))
' "$1" <<<"$listed") || fail "could not compare RabbitMQ's queues with $1"
  [ -z "$differing" ] || older_queues "($differing)"
}

older_queues() {
  fail "RabbitMQ holds queues from an older version of Bazaar, declared with other arguments
       $1; a queue can't change them in place, so RabbitMQ was left as it was.
       Start this stack afresh (this deletes its messages and data):
         make stop && rm -rf $run_dir, then make run    (see docs/outbox-and-inbox.md)"
}

# Users, permissions and topology, as compose loads them (deploy/rabbitmq/start.sh): the
# definitions template rendered with this stack's passwords, then imported into the running node.
# Importing again updates users and passwords and leaves existing queues and messages alone.
# The admin keeps every permission (tests make virtual hosts of their own with it), and is an
# `impersonator`: `bazaar dlq replay` republishes a message with its original `user-id`.
load_rabbitmq_definitions() {
  local template=$repo/deploy/rabbitmq/definitions.template.json name placeholder rendered output
  local -A value=([RABBITMQ_ADMIN_USER]=$admin_user [RABBITMQ_ADMIN_PASSWORD]=$admin_password)
  for name in "${services[@]}"; do value[${name^^}_AMQP_PASSWORD]=${secret[${name^^}_AMQP_PASSWORD]}; done
  local text; text=$(<"$template")
  # Same rule as start.sh: every ${NAME} of the template must have a value, and only those change.
  for name in $(grep -o '\${[A-Z_]*}' "$template" | sort -u | tr -d '${}'); do
    [ -n "${value[$name]:-}" ] || fail "$template needs \${$name}, which the local stack does not set"
    placeholder="\${$name}"
    text=${text//"$placeholder"/"${value[$name]}"}
  done
  check_queue_arguments "$template"
  rendered=$(umask 077; mktemp "$rabbit_dir/definitions.XXXXXX")  # holds passwords: removed below
  printf '%s\n' "$text" >"$rendered"
  say "loading users, permissions and topology into RabbitMQ ($template)"
  if ! output=$(rabbitmqctl -q import_definitions "$rendered" 2>&1); then
    rm -f "$rendered"
    printf '%s\n' "$output" >&2
    grep -qi 'inequivalent arg\|PRECONDITION_FAILED' <<<"$output" && older_queues "(see above)"
    fail "RabbitMQ refused the definitions (above)"
  fi
  rm -f "$rendered"
  # The node never had a guest (default_user above); make sure no older stack left one behind.
  if rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx guest; then
    say "deleting RabbitMQ's guest user"
    rabbitmqctl -q delete_user guest >/dev/null
  fi
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
  make_tls_material
  install_pg_tls_files
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

admin_psql() { PGPASSWORD=$admin_password psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U "$admin_user" "$@"; }

# PostgreSQL's copy of its certificate and key, where the postgres user can read them (it may not
# reach $tls_dir) and with the key's owner and mode it demands. Before the server starts: once
# TLS is on, it won't start without them. Sets pg_tls_changed when they were new or different.
pg_tls_changed=0
install_pg_tls_files() {
  pg_tls_changed=1
  mkdir -p "$pg_dir/tls"; chown postgres:postgres "$pg_dir/tls"
  if cmp -s "$tls_dir/postgres.pem" "$pg_dir/tls/server.pem" && cmp -s "$tls_dir/postgres.key" "$pg_dir/tls/server.key"; then
    pg_tls_changed=0
  fi
  install -o postgres -g postgres -m 644 "$tls_dir/postgres.pem" "$pg_dir/tls/server.pem"
  install -o postgres -g postgres -m 600 "$tls_dir/postgres.key" "$pg_dir/tls/server.key"
}

# TLS on, plain connections still allowed (initdb's pg_hba `host` lines match both): a setting of
# the cluster (ALTER SYSTEM), so it survives restarts; a reload applies it to a running server.
enable_pg_tls() {
  local current
  current=$(admin_psql -d postgres -tAc "SELECT current_setting('ssl') || ' ' || current_setting('ssl_cert_file') || ' ' || current_setting('ssl_key_file')")
  [ "$pg_tls_changed" = 0 ] && [ "$current" = "on $pg_dir/tls/server.pem $pg_dir/tls/server.key" ] && return
  say "turning on TLS in PostgreSQL (certificate from $tls_dir/ca.pem)"
  admin_psql -d postgres -v cert="$pg_dir/tls/server.pem" -v key="$pg_dir/tls/server.key" <<'SQL' >/dev/null
ALTER SYSTEM SET ssl_cert_file = :'cert';
ALTER SYSTEM SET ssl_key_file = :'key';
ALTER SYSTEM SET ssl = on;
SELECT pg_reload_conf();
SQL
  local i
  for i in $(seq 1 20); do
    [ "$(admin_psql -d postgres -tAc 'SHOW ssl')" = on ] && return
    sleep 0.5
  done
  tail -n 10 "$pg_dir/postgres.log" >&2 || true
  fail "PostgreSQL did not turn TLS on (log above)"
}

# One login role per service owning its schema, and no CONNECT for PUBLIC: compose's init script,
# run against this cluster as the admin (a superuser: it still connects, and tests make schemas
# of their own with it). It resets the roles' passwords to this stack's on every `up`.
init_postgres_roles() {
  local name output
  local -a environment=(PGHOST=127.0.0.1 PGPORT="$pg_port" PGPASSWORD="$admin_password" PGCONNECT_TIMEOUT=10
    POSTGRES_USER="$admin_user" POSTGRES_DB=bazaar)
  for name in "${services[@]}"; do environment+=("${name^^}_DB_PASSWORD=${secret[${name^^}_DB_PASSWORD]}"); done
  # Exported in a subshell, not passed to env(1): the passwords stay out of the process list.
  output=$(for assignment in "${environment[@]}"; do export "${assignment?}"; done; bash "$repo/deploy/postgres/init.sh" 2>&1) \
    || { printf '%s\n' "$output" >&2; fail "deploy/postgres/init.sh failed (above)"; }
  # A stack that an older version ran its services on as the admin has the schemas, owned by the
  # admin: hand each (with its tables, data kept) to its service's role, or the service can't use it.
  admin_psql -d bazaar <<'SQL'
DO $$
DECLARE
  s record;
  o record;
BEGIN
  FOR s IN
    SELECT n.oid, n.nspname, r.role FROM pg_namespace n
    JOIN (VALUES ('orders', 'bazaar_order'), ('inventory', 'bazaar_inventory'), ('payments', 'bazaar_payment'),
                 ('notifications', 'bazaar_notification')) AS r(schema, role) ON n.nspname = r.schema
    WHERE pg_get_userbyid(n.nspowner) <> r.role
  LOOP
    RAISE NOTICE 'schema % was created by an older local stack: handing it and its objects to %', s.nspname, s.role;
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', s.nspname, s.role);
    -- Tables take their serial sequences and indexes with them.
    FOR o IN SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = s.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
    LOOP
      EXECUTE format('ALTER %s %I.%I OWNER TO %I',
        CASE o.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                       WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, s.nspname, o.relname, s.role);
    END LOOP;
    FOR o IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = s.oid LOOP
      EXECUTE format('ALTER ROUTINE %s OWNER TO %I', o.oid::regprocedure, s.role);
    END LOOP;
  END LOOP;
END
$$;
SQL
}

stop_postgres() {
  if ! pg_running; then say "PostgreSQL is not running"; return; fi
  say "stopping PostgreSQL"
  pg_as "$pg_bin/pg_ctl" -D "$(pg_data_dir)" -m fast -w stop >/dev/null
}

# ---------------------------------------------------------------------------------------------

stack_env() {
  local name user role
  cat <<EOF
# Written by scripts/stack.sh: connection settings of the local stack. Holds passwords: mode 600.
# KEY=value lines, values unquoted (some hold &): read them as such rather than with \`source\`.
# The admin's (tests and tools):
AMQP_URL=amqp://$admin_user:$admin_password@127.0.0.1:$amqp_port/%2f
AMQPS_URL=amqps://$admin_user:$admin_password@localhost:$amqps_port/%2f?cacertfile=$tls_dir/ca.pem
# Plain URLs are plain: over loopback TLS protects nothing and costs CPU (libpq's default,
# sslmode=prefer, would use it since the server offers it). The TLS URLs are for tests of TLS.
DATABASE_URL=postgres://$admin_user:$admin_password@127.0.0.1:$pg_port/bazaar?sslmode=disable
DATABASE_TLS_URL=postgres://$admin_user:$admin_password@localhost:$pg_port/bazaar?sslmode=verify-full&sslrootcert=$tls_dir/ca.pem
RABBITMQCTL=$run_dir/bin/rabbitmqctl
# Each service's own broker user and database role (scripts/services.sh starts them with these):
EOF
  for name in "${services[@]}"; do
    user=$name role=bazaar_$name
    echo "${name^^}_AMQP_URL=amqp://$user:${secret[${name^^}_AMQP_PASSWORD]}@127.0.0.1:$amqp_port/%2f"
    echo "${name^^}_DATABASE_URL=postgres://$role:${secret[${name^^}_DB_PASSWORD]}@127.0.0.1:$pg_port/bazaar?sslmode=disable"
  done
  echo "# The key the services verify HS256 bearer tokens with, and an admin token (30 days) signed with it;"
  echo "# \`bazaar token --customer ID\` makes customers' tokens."
  echo "AUTH_JWT_SECRET=${secret[AUTH_JWT_SECRET]}"
  echo "ADMIN_TOKEN=$(admin_token "${secret[AUTH_JWT_SECRET]}")"
}

# A JWT (HS256) for the admin, as the services verify it (Shared/Auth). python3's hmac, with the
# key in its environment: on openssl's command line it would show in the process list.
admin_token() {
  BAZAAR_TOKEN_KEY=$1 python3 - <<'PY'
import base64, hmac, hashlib, json, os, time
def b64url(data): return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
now = int(time.time())
header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
claims = {"sub": "admin", "role": "admin", "iat": now, "exp": now + 30 * 24 * 3600}
payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
signature = hmac.new(os.environ["BAZAAR_TOKEN_KEY"].encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
print(f"{header}.{payload}.{b64url(signature)}", end="")
PY
}

write_env() {
  mkdir -p "$run_dir/bin"
  # Keep the services' URLs that scripts/services.sh added, if they run.
  local service_urls=""
  [ -f "$run_dir/stack.env" ] && service_urls=$(grep -E '^(ORDER|INVENTORY|PAYMENT|NOTIFICATION)_URL=' "$run_dir/stack.env" || true)
  (umask 077; { stack_env; if [ -n "$service_urls" ]; then echo "$service_urls"; fi; } >"$run_dir/stack.env.new")
  chmod 600 "$run_dir/stack.env.new"  # it holds passwords
  mv -f "$run_dir/stack.env.new" "$run_dir/stack.env"
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
  local ssl
  ssl=$(PGPASSWORD=$admin_password psql -X -qtAc 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' \
    "postgres://$admin_user@localhost:$pg_port/bazaar?sslmode=verify-full&sslrootcert=$tls_dir/ca.pem") \
    || fail "PostgreSQL refuses TLS connections verified with $tls_dir/ca.pem"
  [ "$ssl" = t ] || fail "PostgreSQL answered, but not over TLS"
  say "RabbitMQ $(rabbitmqctl -q version 2>/dev/null) answers at amqp://127.0.0.1:$amqp_port"
  say "PostgreSQL $version answers at postgres://127.0.0.1:$pg_port/bazaar (and over TLS, verify-full with $tls_dir/ca.pem)"
}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }  # the comment on top

case "${1:-}" in
  up)
    install_missing_packages
    mkdir -p "$run_dir"
    load_secrets
    start_postgres
    enable_pg_tls
    init_postgres_roles
    start_rabbitmq
    load_rabbitmq_definitions
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
  env) load_secrets >&2; stack_env ;;
  packages) install_missing_packages ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
