#!/usr/bin/env bash
# The four services as plain processes on the local stack (scripts/stack.sh), as `make run` uses them.
#
#   scripts/services.sh up       build, start order, inventory, payment and notification, wait until
#                                they are ready, seed demo products and accounts, print where they are
#   scripts/services.sh down     stop them (SIGTERM: they finish what they are doing), and nothing else
#   scripts/services.sh status   say which run, and whether they are ready
#
# Environment (defaults in brackets):
#   BAZAAR_RUN_DIR           as for scripts/stack.sh                         [<repo>/.run]
#   BAZAAR_BUILD             debug or release                                [debug]
#   BAZAAR_BIN_DIR           run the executables of this folder, built already [build them]
#   ORDER_PORT INVENTORY_PORT PAYMENT_PORT NOTIFICATION_PORT                 [8080 8081 8082 8083]
#   BAZAAR_SEED              seed demo products and accounts (1) or not (0)  [1]
# Each service runs as its own broker user and database role (ORDER_AMQP_URL… in stack.env).
# Logs: .run/logs/<service>.log. Each service's other settings: .build/debug/<service>-service --help.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${BAZAAR_RUN_DIR:-$repo/.run}
build=${BAZAAR_BUILD:-debug}
services=(order inventory payment notification)
declare -A ports=(
  [order]=${ORDER_PORT:-8080} [inventory]=${INVENTORY_PORT:-8081}
  [payment]=${PAYMENT_PORT:-8082} [notification]=${NOTIFICATION_PORT:-8083}
)

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
fail() { printf 'services: %s\n' "$*" >&2; exit 1; }

pid_file() { echo "$run_dir/pids/$1.pid"; }
# A pid file survives a reboot; the pid in it may now be someone else's: check it is our service.
running() {
  [ -f "$(pid_file "$1")" ] || return 1
  local pid; pid=$(cat "$(pid_file "$1")")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1-service"
}
url() { echo "http://127.0.0.1:${ports[$1]}"; }
ready() { curl -fsS -o /dev/null --max-time 2 "$(url "$1")/health/ready" 2>/dev/null; }

start() {
  [ -f "$run_dir/stack.env" ] || fail "the stack is not up: run scripts/stack.sh up (or make run)"
  local bin
  if [ -n "${BAZAAR_BIN_DIR:-}" ]; then
    bin=$BAZAAR_BIN_DIR  # binaries built elsewhere (make chaos's release build, say): no build here
  else
    say "building the services ($build; the first build takes a few minutes)"
    (cd "$repo" && swift build -c "$build") || fail "the build failed (output above)"
    bin=$(cd "$repo" && swift build -c "$build" --show-bin-path)
  fi
  for s in "${services[@]}"; do [ -x "$bin/$s-service" ] || fail "the build did not produce $bin/$s-service (run swift build to see why)"; done

  mkdir -p "$run_dir/logs" "$run_dir/pids"
  read_stack_env
  for s in "${services[@]}"; do
    if running "$s"; then say "$s already runs (pid $(cat "$(pid_file "$s")"))"; continue; fi
    [ -n "${stack[${s^^}_AMQP_URL]:-}" ] && [ -n "${stack[${s^^}_DATABASE_URL]:-}" ] \
      || fail "$run_dir/stack.env has no ${s^^}_AMQP_URL or ${s^^}_DATABASE_URL: run scripts/stack.sh up again"
    # Least privilege: its own broker user, which may declare nothing (stack.sh loaded the whole
    # topology from the definitions), and its own database role; no other service's secret.
    # Webhooks may point at this machine here (the tour's receiver); in production they may not.
    AMQP_URL=${stack[${s^^}_AMQP_URL]} DATABASE_URL=${stack[${s^^}_DATABASE_URL]} AMQP_DECLARE_TOPOLOGY=none \
      AUTH_JWT_SECRET=${stack[AUTH_JWT_SECRET]:-} HTTP_PORT=${ports[$s]} INSTANCE_NAME="$s-1" \
      WEBHOOK_ALLOW_PRIVATE_TARGETS=true \
      setsid nohup "$bin/$s-service" >>"$run_dir/logs/$s.log" 2>&1 &
    echo $! >"$(pid_file "$s")"
    say "started $s (pid $!, log $run_dir/logs/$s.log)"
  done
  for s in "${services[@]}"; do
    local i
    for i in $(seq 1 60); do ready "$s" && break; running "$s" || break; sleep 0.5; done
    if ! ready "$s"; then
      tail -n 20 "$run_dir/logs/$s.log" >&2 || true
      fail "$s did not become ready (log above, full log in $run_dir/logs/$s.log)"
    fi
  done
  say "all four services are ready"
  write_urls
  [ "${BAZAAR_SEED:-1}" = 1 ] && seed
  return 0
}

# stack.env's KEY=value lines, read as such (not sourced: values are unquoted and some hold &).
declare -A stack=()
read_stack_env() {
  local line
  while IFS= read -r line; do
    [[ $line =~ ^[A-Z_][A-Z0-9_]*= ]] && stack[${line%%=*}]=${line#*=}
  done <"$run_dir/stack.env"
  return 0
}

write_urls() {
  sed -i '/^\(ORDER\|INVENTORY\|PAYMENT\|NOTIFICATION\)_URL=/d' "$run_dir/stack.env"
  for s in "${services[@]}"; do echo "${s^^}_URL=$(url "$s")" >>"$run_dir/stack.env"; done
}

# The services' admin APIs, as the seeding calls them. THE ONE PLACE for the admin bearer token:
# when stack.env carries ADMIN_TOKEN, every call sends `Authorization: Bearer <ADMIN_TOKEN>`
# (given to curl on its standard input, so it never shows in `ps`); without it, none is sent.
admin_api() {
  read_stack_env
  if [ -n "${stack[ADMIN_TOKEN]:-}" ]; then
    curl -fsS -o /dev/null -H @- "$@" <<<"Authorization: Bearer ${stack[ADMIN_TOKEN]}"
  else
    curl -fsS -o /dev/null "$@"
  fi
}

seeding_failed() {
  local hint=""
  [ -n "${stack[ADMIN_TOKEN]:-}" ] || hint=" (stack.env has no ADMIN_TOKEN, should the API want one)"
  fail "could not create the demo $1 (curl's error above)$hint; BAZAAR_SEED=0 skips the demo data"
}

# Demo data, created only where missing, so a second `make run` keeps what the user changed.
seed() {
  local product sku body customer balance
  for product in \
    'MUG-01|{"name":"Bazaar mug","price":1250,"stock":100}' \
    'TEE-42|{"name":"Bazaar T-shirt","price":2000,"stock":50}' \
    'STICKER-7|{"name":"Sticker pack","price":300,"stock":1000}' \
    'LAMP-3|{"name":"Desk lamp (only 3 left)","price":4500,"stock":3}'; do
    sku=${product%%|*}; body=${product#*|}
    admin_api "$(url inventory)/products/$sku" 2>/dev/null \
      || admin_api -X PUT -H 'content-type: application/json' -d "$body" "$(url inventory)/products/$sku" \
      || seeding_failed "product $sku"
  done
  for account in alice:100000 bob:5000 carol:0; do
    customer=${account%%:*}; balance=${account#*:}
    admin_api "$(url payment)/accounts/$customer" 2>/dev/null \
      || admin_api -X PUT -H 'content-type: application/json' -d "{\"balance\":$balance}" "$(url payment)/accounts/$customer" \
      || seeding_failed "account $customer"
  done
  say "demo data: products MUG-01 TEE-42 STICKER-7 LAMP-3; customers alice (1000.00), bob (50.00), carol (0.00)"
}

stop() {
  local s pid i
  for s in "${services[@]}"; do
    if ! running "$s"; then rm -f "$(pid_file "$s")"; continue; fi
    pid=$(cat "$(pid_file "$s")")
    say "stopping $s (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # A service has SHUTDOWN_TIMEOUT_SECONDS (10) to finish its work, and 5 s more to cancel the rest.
    for i in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { say "$s did not stop within 20 s: killing it"; kill -KILL "$pid" 2>/dev/null || true; }
    rm -f "$(pid_file "$s")"
  done
}

status() {
  local s
  for s in "${services[@]}"; do
    if ! running "$s"; then say "$s: not running"
    elif ready "$s"; then say "$s: ready at $(url "$s") (pid $(cat "$(pid_file "$s")"))"
    else say "$s: running, not ready (pid $(cat "$(pid_file "$s")"); see $run_dir/logs/$s.log)"; fi
  done
}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }  # the comment on top

case "${1:-}" in
  up) start ;;
  down) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
