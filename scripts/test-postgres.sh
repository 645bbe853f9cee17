#!/bin/sh
# A throwaway PostgreSQL server for the test suite: `start DIR` prints its SQLAlchemy URL,
# `stop DIR` stops it and deletes DIR. Uses Debian's server binaries
# (/usr/lib/postgresql/<version>/bin, installed by scripts/system-deps.sh; PG_BIN overrides).
#
# No TCP at all (listen_addresses=''): clients connect through a Unix socket in DIR/sock,
# a directory of mode 0777. A path-based socket works across network namespaces, so
# `make test` starts the server here, outside `unshare -rn`, and the tests inside the
# namespace (where they are uid 0 of a user namespace, unable to switch users) still reach
# it. PostgreSQL refuses to run as root: as real root the server runs as the `postgres` OS
# user (runuser), otherwise as the current user. Durability is off (fsync, full-page
# writes, synchronous commit): the cluster lives for one test run.
#
# Exit status: 0 started/stopped, 3 PostgreSQL is not installed (tests skip), 1 anything else.
set -eu

usage() { echo "usage: $0 start|stop DIR" >&2; exit 1; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
database=kb_test

if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "PostgreSQL server binaries not found (apt-get install postgresql, or make system-deps)" >&2
    exit 3
fi

as_owner() {  # run a server binary as the cluster's owner
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    mkdir -p "$dir/sock"
    chmod 0755 "$dir"
    chmod 0777 "$dir/sock"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "no 'postgres' OS user to run the server as" >&2; exit 1; }
        mkdir -p "$dir/data"
        chown postgres "$dir/data"
        touch "$dir/server.log"
        chown postgres "$dir/server.log"
    fi
    if ! as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        exit 1
    fi
    if ! as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o \
        "-c listen_addresses='' -c unix_socket_directories='$dir/sock' -c unix_socket_permissions=0777 \
         -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c shared_buffers=16MB \
         -c max_connections=200" start >"$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" "$dir/server.log" >&2
        exit 1
    fi
    as_owner "$PG_BIN/psql" -h "$dir/sock" -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE $database" >/dev/null
    echo "postgresql+psycopg://postgres@/$database?host=$dir/sock"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    usage
    ;;
esac
