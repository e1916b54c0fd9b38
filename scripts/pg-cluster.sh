#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests of the store's PostgreSQL engine.
#
#   scripts/pg-cluster.sh start DIR   creates and starts a cluster in DIR (empty or absent) and
#                                     prints one line on stdout: its admin URL
#                                     postgres://happyx:PASSWORD@127.0.0.1:PORT/postgres
#                                     (for TEST_POSTGRES_URL)
#   scripts/pg-cluster.sh stop DIR    stops it and removes DIR
#
# The cluster listens on a free loopback port and on a socket in DIR, and has one password role,
# `happyx`, a superuser (the tests create a database each). Starting a cluster that runs prints
# its URL again; stopping one that is gone does nothing. Progress goes to stderr. PostgreSQL
# refuses to run as root: as root, DIR is handed to the `postgres` user, which runs the cluster.
# The binaries are the newest of /usr/lib/postgresql/*/bin (Debian's postgresql), or $PG_BIN.
set -euo pipefail

MARKER=happyx-pg-cluster

usage() {
  echo "usage: $0 start DIR | stop DIR" >&2
  exit 2
}

say() { echo "pg-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] \
    || die "no PostgreSQL in /usr/lib/postgresql/*/bin (apt-get install postgresql), or set PG_BIN"
  echo "$bin"
}

# Runs a command as the cluster's owner: `postgres` when this script runs as root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Whether DIR is (or was) a cluster made by this script.
is_ours() { [ -f "$1/$MARKER" ]; }

is_running() {
  [ -f "$1/data/postmaster.pid" ] && as_owner "$(pg_bin)/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

# A loopback TCP port nothing listens on (checked, not reserved: `start` retries if it is taken).
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "found no free loopback port"
}

stop() {
  local dir=$1
  if [ ! -e "$dir" ]; then
    say "$dir is gone; nothing to stop"
    return
  fi
  dir=$(cd "$dir" && pwd)
  if ! is_ours "$dir"; then
    [ -z "$(ls -A "$dir")" ] || die "$dir is not a cluster made by $0; not removing it"
  elif is_running "$dir"; then
    say "stopping the cluster in $dir"
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >&2
  fi
  rm -rf "$dir"
}

start() {
  local dir=$1 bin port password attempt
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if is_ours "$dir"; then
    if is_running "$dir" && [ -f "$dir/url" ]; then
      say "a cluster runs in $dir already"
      cat "$dir/url"
      return
    fi
    say "removing the stopped cluster in $dir"
    find "$dir" -mindepth 1 -delete
  elif [ -n "$(ls -A "$dir")" ]; then
    die "$dir is not empty; give an empty or absent directory"
  fi
  bin=$(pg_bin)
  touch "$dir/$MARKER"
  chmod 700 "$dir"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the user postgres to run the cluster"
    chown -R postgres: "$dir"
    runuser -u postgres -- test -w "$dir" \
      || die "the user postgres cannot reach $dir (a parent directory is closed to it)"
  fi

  say "initdb in $dir/data ($bin)"
  as_owner "$bin/initdb" -D "$dir/data" --username=postgres --encoding=UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    say "starting on 127.0.0.1:$port (attempt $attempt)"
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" \
      -w start >&2; then
      break
    fi
    port=
    tail -n 5 "$dir/log" >&2 || true
  done
  [ -n "$port" ] || die "the cluster did not start; see $dir/log"

  password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE happyx LOGIN SUPERUSER PASSWORD '$password'" >&2
  (umask 077 && echo "postgres://happyx:$password@127.0.0.1:$port/postgres" >"$dir/url")
  say "ready; stop it with: $0 stop $dir"
  cat "$dir/url"
}

[ $# -eq 2 ] || usage
case $1 in
  start) start "$2" ;;
  stop) stop "$2" ;;
  *) usage ;;
esac
