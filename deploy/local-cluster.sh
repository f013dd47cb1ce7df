#!/usr/bin/env bash
# A three-node Parley cluster on one machine, for trying cluster mode (not for
# production: see docs/operations.md, "Cluster mode").
#
#   deploy/local-cluster.sh start    # PostgreSQL, NATS and nodes on ws://127.0.0.1:7881-7883
#   deploy/local-cluster.sh status   # which processes run, /readyz of each node
#   deploy/local-cluster.sh stop     # stops everything; the state stays in the directory
#   deploy/local-cluster.sh clean    # stops everything and deletes the directory
#
# Everything lives in $PARLEY_CLUSTER_DIR (default ./parley-cluster): a PostgreSQL of its
# own (initdb into pg/, port 7890), a nats-server of its own (port 7891, with a user and
# password), and one data directory per node (n1..n3, each with a copy of the one
# authority.key). Needs the Debian packages postgresql and nats-server, and a built
# parley-server (cargo build --release --bin parley-server; PARLEY_SERVER overrides).
#
# Then, in three terminals:
#   parley --server ws://127.0.0.1:7881 --profile alice register alice
#   parley --server ws://127.0.0.1:7882 --profile bob register bob
#   parley --server ws://127.0.0.1:7881 --profile alice chat bob
#   parley --server ws://127.0.0.1:7882 --profile bob chat alice
# and a business bot on the third node (docs/bots.md, with --server ws://127.0.0.1:7883).
# Admin commands take the cluster's store:
#   deploy/local-cluster.sh admin verify-business acmebank --legal-name "Acme Bank plc" \
#     --display-name "Acme Bank" --domain acmebank.example --categories security_alert
set -euo pipefail

DIR=${PARLEY_CLUSTER_DIR:-./parley-cluster}
SERVER=${PARLEY_SERVER:-./target/release/parley-server}
PG_PORT=${PARLEY_CLUSTER_PG_PORT:-7890}
NATS_PORT=${PARLEY_CLUSTER_NATS_PORT:-7891}
NODES=(1 2 3)
NODE_PORT_BASE=7880
ADMIN_PORT_BASE=7900

pg_bin() {
  local name=$1
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$found" ] && [ -x "$found/$name" ]; then echo "$found/$name"; return; fi
  echo "error: $name not found: install the Debian package postgresql" >&2
  exit 1
}

nats_bin() {
  for candidate in "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server /usr/bin/nats-server; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "error: nats-server not found: install the Debian package nats-server" >&2
  exit 1
}

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

store_url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/parley"; }
bus_url() { echo "nats://parley:$(cat "$DIR/nats.password")@127.0.0.1:$NATS_PORT"; }

wait_for() {
  local what=$1 tries=100
  shift
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    if [ "$tries" = 0 ]; then echo "error: $what did not come up (see $DIR/*.log)" >&2; exit 1; fi
    sleep 0.1
  done
}

start_postgres() {
  local pg="$DIR/pg"
  if [ ! -d "$pg/data" ]; then
    mkdir -p "$pg"
    if [ "$(id -u)" = 0 ]; then chown postgres "$pg"; fi
    as_pg "$(pg_bin initdb)" -D "$pg/data" -A trust -U postgres -E UTF8 >"$DIR/initdb.log"
  fi
  if ! as_pg "$(pg_bin pg_ctl)" -D "$pg/data" status >/dev/null 2>&1; then
    as_pg "$(pg_bin pg_ctl)" -D "$pg/data" -w -l "$pg/postgres.log" \
      -o "-p $PG_PORT -k $(cd "$pg" && pwd) -c listen_addresses=127.0.0.1" start >/dev/null
  fi
  wait_for PostgreSQL "$(pg_bin pg_isready)" -h 127.0.0.1 -p "$PG_PORT"
  if ! "$(pg_bin psql)" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'parley'" | grep -q 1; then
    "$(pg_bin psql)" -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE parley" >/dev/null
  fi
}

start_nats() {
  [ -f "$DIR/nats.password" ] || { secret >"$DIR/nats.password"; chmod 600 "$DIR/nats.password"; }
  if [ -f "$DIR/nats.pid" ] && kill -0 "$(cat "$DIR/nats.pid")" 2>/dev/null; then return; fi
  "$(nats_bin)" -a 127.0.0.1 -p "$NATS_PORT" --user parley --pass "$(cat "$DIR/nats.password")" \
    >"$DIR/nats.log" 2>&1 &
  echo $! >"$DIR/nats.pid"
  wait_for NATS bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
}

start_node() {
  local n=$1 dir="$DIR/n$1"
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then return; fi
  if [ "$n" != 1 ] && [ ! -f "$dir/authority.key" ]; then
    install -m 600 "$DIR/n1/authority.key" "$dir/authority.key"
  fi
  PARLEY_STORE=$(store_url) PARLEY_BUS=$(bus_url) PARLEY_CLUSTER_KEY=$(cat "$DIR/cluster.key") \
    "$SERVER" --listen "127.0.0.1:$((NODE_PORT_BASE + n))" \
      --admin-listen "127.0.0.1:$((ADMIN_PORT_BASE + n))" \
      --data-dir "$dir" --node-id "n$n" >"$dir/server.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_for "node n$n" curl -sf "http://127.0.0.1:$((ADMIN_PORT_BASE + n))/readyz"
  echo "node n$n: ws://127.0.0.1:$((NODE_PORT_BASE + n))  (admin http://127.0.0.1:$((ADMIN_PORT_BASE + n)), log $dir/server.log)"
}

stop_all() {
  for n in "${NODES[@]}"; do
    local pid="$DIR/n$n/pid"
    if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; rm -f "$pid"; fi
  done
  if [ -f "$DIR/nats.pid" ]; then kill "$(cat "$DIR/nats.pid")" 2>/dev/null || true; rm -f "$DIR/nats.pid"; fi
  if [ -d "$DIR/pg/data" ]; then as_pg "$(pg_bin pg_ctl)" -D "$DIR/pg/data" -m fast stop >/dev/null 2>&1 || true; fi
}

case "${1:-}" in
  start)
    if [ ! -x "$SERVER" ]; then
      echo "error: $SERVER not found: cargo build --release --bin parley-server (or set PARLEY_SERVER)" >&2
      exit 1
    fi
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    [ -f "$DIR/cluster.key" ] || { secret >"$DIR/cluster.key"; chmod 600 "$DIR/cluster.key"; }
    start_postgres
    start_nats
    for n in "${NODES[@]}"; do start_node "$n"; done
    echo "cluster running; stop it with: $0 stop"
    ;;
  status)
    for n in "${NODES[@]}"; do
      printf 'node n%s: ' "$n"
      curl -s "http://127.0.0.1:$((ADMIN_PORT_BASE + n))/readyz" || echo "down"
    done
    ;;
  admin)
    shift
    if [ ! -f "$DIR/n1/authority.key" ]; then
      echo "error: no cluster in $DIR (run \"$0 start\" first, from the same directory or with PARLEY_CLUSTER_DIR)" >&2
      exit 1
    fi
    PARLEY_STORE=$(store_url) "$SERVER" admin "$@" --data-dir "$DIR/n1"
    ;;
  stop)
    stop_all
    ;;
  clean)
    stop_all
    rm -rf "$DIR"
    ;;
  *)
    sed -n '2,24p' "$0"
    exit 2
    ;;
esac
