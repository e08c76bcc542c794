# A throw-away PostgreSQL on 127.0.0.1 for the test suite: data, socket and log in one temp
# dir, trust auth on loopback, durability off. Sourced by scripts/test.sh:
#   pg_start   -> sets PG_URL (postgres://postgres@127.0.0.1:PORT/threadline) and PG_DIR
#   pg_stop    -> fast shutdown and removal of the temp dir

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] || { echo "PostgreSQL server binaries not found" >&2; return 1; }
  echo "$d"
}

pg_as_owner() {
  # initdb and pg_ctl refuse to run as root: run them as the package's postgres user.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  local bin port tries
  bin=$(pg_bin)
  PG_DIR=$(mktemp -d /tmp/threadline-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  ( cd "$PG_DIR" && pg_as_owner "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 \
      --locale=C --no-sync --no-instructions >"$PG_DIR/initdb.log" 2>&1 ) \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  cat >>"$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  for tries in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if ( cd "$PG_DIR" && pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
          -o "-p $port" -w -t 60 start >/dev/null ); then
      "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres threadline
      PG_URL="postgres://postgres@127.0.0.1:$port/threadline"
      echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)"
      return 0
    fi
    grep -q "could not bind" "$PG_DIR/server.log" || break
  done
  tail -n 20 "$PG_DIR/server.log" >&2
  return 1
}

pg_stop() {
  set +e
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
  ( cd "$PG_DIR" && pg_as_owner "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null )
  rm -rf "$PG_DIR"
  return 0
}
