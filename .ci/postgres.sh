#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the multi-worker sweep test: installs Debian's package if the machine
# lacks it, makes a cluster in a fresh folder, starts it on 127.0.0.1:$PORT and creates database "sweep".
# Prints the database URL on stdout (everything else goes to stderr). `.ci/postgres.sh --stop` stops the servers
# it started (and removes their folders).
set -euo pipefail
PORT="${1:-55432}"

as_owner() {  # the server refuses to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "$PORT" = --stop ]; then
    for root in /tmp/sweep-pg.*; do
        [ -f "$root/data/postmaster.pid" ] && as_owner "$(cat "$root/bin")/pg_ctl" -D "$root/data" -m fast stop >&2
        rm -rf "$root"
    done
    exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian package postgresql)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
ROOT="$(mktemp -d /tmp/sweep-pg.XXXXXX)"
DATA="$ROOT/data"
echo "$BIN" > "$ROOT/bin"
chmod 755 "$ROOT" && mkdir "$DATA"
if [ "$(id -u)" = 0 ]; then chown postgres "$DATA"; fi
as_owner "$BIN/initdb" -D "$DATA" -A trust -U postgres >&2
as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA" start >&2
as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres sweep >&2
echo "postgresql://postgres@127.0.0.1:$PORT/sweep"
