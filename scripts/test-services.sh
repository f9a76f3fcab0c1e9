#!/usr/bin/env bash
# Private PostgreSQL and Redis for the test suite: scripts/test-services.sh up|down|env
#
#   up    install the Debian packages when missing, then start both servers (reusing any that answer)
#   down  stop both servers (their data stays for the next `up`)
#   env   print the export lines of VIVID_TEST_POSTGRES_URL and VIVID_TEST_REDIS_URL
#
# The servers are per machine (fixed ports, 127.0.0.1 only), so their state lives outside the repository,
# in a folder the `postgres` user can reach even when the checkout sits under a private home directory.
# PostgreSQL refuses to run as root: when run by root, it runs as Debian's `postgres` system user.
set -euo pipefail

PG_PORT=${VIVID_TEST_PG_PORT:-55432}
REDIS_PORT=${VIVID_TEST_REDIS_PORT:-56379}
STATE=${VIVID_TEST_SERVICES_DIR:-/var/tmp/vividflow-test-$(id -u)}
PG_DIR=$STATE/pg # owned by the user PostgreSQL runs as: data/, the socket and the log
PG_DATA=$PG_DIR/data
PG_USER=vivid PG_PASSWORD=vivid PG_DB=vividflow_test

die() { echo "test-services: $*" >&2; exit 1; }
is_root() { [[ $(id -u) == 0 ]]; }

# Runs a command as the user that owns the cluster, from a directory that user can read.
as_pg() {
  if is_root; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

install_packages() {
  local missing=()
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  ((${#missing[@]})) || return 0
  is_root || die "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (or run this as root)"
  echo "test-services: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The newest server installed (a client-only version has no initdb).
pg_bin() {
  local initdbs=(/usr/lib/postgresql/*/bin/initdb)
  dirname "$(printf '%s\n' "${initdbs[@]}" | sort -V | tail -n 1)"
}

pg_answers() {
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" \
    -U "$PG_USER" -d "$PG_DB" -Atqc 'select 1' >/dev/null 2>&1
}

# Whether our cluster's postmaster is alive: pg_ctl would also count a zombie or a reused pid.
pg_running() {
  local pid
  pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] \
    && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

redis_answers() {
  [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

pg_up() {
  if pg_answers; then echo "test-services: PostgreSQL answers on 127.0.0.1:$PG_PORT (reused)"; return; fi
  local bin version
  bin=$(pg_bin)
  version=$(basename "$(dirname "$bin")")
  mkdir -p "$STATE"
  if is_root; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' system user (is the postgresql package installed?)"
    install -d -o postgres -g postgres -m 700 "$PG_DIR"
  else
    install -d -m 700 "$PG_DIR"
  fi

  # A cluster of another major version (or a half-made one) is test data only: start over.
  if [[ -d $PG_DATA && $(cat "$PG_DATA/PG_VERSION" 2>/dev/null) != "$version" ]]; then
    rm -rf "$PG_DATA"
  fi
  if [[ ! -d $PG_DATA ]]; then
    as_pg "$bin/initdb" -D "$PG_DATA" --auth-local=peer --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 \
      || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
  fi

  if ! pg_running; then
    # Lock files left by a server that no longer runs (killed, rebooted, a new container) block a start.
    rm -f "$PG_DATA/postmaster.pid" "$PG_DIR/.s.PGSQL.$PG_PORT.lock"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 60 start \
      -o "-p $PG_PORT -h 127.0.0.1 -k $PG_DIR -c fsync=off -c synchronous_commit=off \
          -c full_page_writes=off -c max_connections=200" >/dev/null \
      || { tail -n 20 "$PG_DIR/postgres.log" >&2; die "PostgreSQL did not start"; }
  fi

  # The role and database, created once; the role may create the per-test databases.
  as_pg "$bin/psql" -h "$PG_DIR" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -q <<SQL
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$PG_USER', '$PG_PASSWORD')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL
  pg_answers || die "PostgreSQL runs but $PG_USER cannot log in to $PG_DB on 127.0.0.1:$PG_PORT"
  echo "test-services: PostgreSQL $version started on 127.0.0.1:$PG_PORT (data in $PG_DATA)"
}

redis_up() {
  if redis_answers; then echo "test-services: Redis answers on 127.0.0.1:$REDIS_PORT (reused)"; return; fi
  mkdir -p "$STATE/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" \
    --dir "$STATE/redis"
  local _
  for _ in $(seq 50); do
    redis_answers && { echo "test-services: Redis started on 127.0.0.1:$REDIS_PORT"; return; }
    sleep 0.2
  done
  tail -n 20 "$STATE/redis/redis.log" >&2
  die "Redis did not answer on 127.0.0.1:$REDIS_PORT"
}

down() {
  if redis_answers; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    echo "test-services: Redis stopped"
  fi
  if pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    echo "test-services: PostgreSQL stopped"
  fi
}

print_env() {
  echo "export VIVID_TEST_POSTGRES_URL=postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
  echo "export VIVID_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

case ${1:-} in
  up) install_packages; pg_up; redis_up ;;
  down) down ;;
  env) print_env ;;
  *) die "usage: $0 up|down|env" ;;
esac
