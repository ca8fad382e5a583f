# A throw-away PostgreSQL 15 cluster for tests and benchmarks (sourced, not run).
#   pg_cluster_start DIR   initdb in DIR/data, start on a free loopback port; sets PG_URI
#                          (postgresql://nearlabel@127.0.0.1:PORT/nearlabel) and PG_PORT
#   pg_cluster_stop        stop it (fast); pg_cluster_restart: stop and start again
#   pg_cluster_kill        SIGKILL the postmaster (a crash); start it again with pg_cluster_up
# The cluster trusts local connections and lives only in DIR. As root (CI containers),
# PostgreSQL refuses to run, so the server runs as the `postgres` user that Debian's package
# creates, and DIR is made accessible to it.
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/15/bin 2> /dev/null || dirname "$(command -v initdb 2> /dev/null || echo /x/initdb)")}

_pg_as() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_cluster_start() {
  PG_DIR="$1"
  mkdir -p "$PG_DIR"
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "pg_cluster: no initdb in $PG_BIN (apt-get install postgresql-15)" >&2
    return 1
  fi
  PG_DATA="$PG_DIR/data"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$PG_DIR"
    chmod 755 "$PG_DIR"
    # Every parent must be traversable by the postgres user.
    local d="$PG_DIR"
    while [ "$d" != "/" ]; do
      d=$(dirname "$d")
      chmod o+x "$d" 2> /dev/null || true
    done
  fi
  _pg_as "$PG_BIN/initdb" -D "$PG_DATA" -U nearlabel --auth=trust -E UTF8 --no-locale \
    > "$PG_DIR/initdb.log" 2>&1 || {
    cat "$PG_DIR/initdb.log" >&2
    return 1
  }
  PG_PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # Small and quick: tests need no durability across power loss.
  cat >> "$PG_DATA/postgresql.conf" << EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
fsync = off
shared_buffers = 128MB
max_connections = 50
EOF
  pg_cluster_up
  _pg_as "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U nearlabel nearlabel
  PG_URI="postgresql://nearlabel@127.0.0.1:$PG_PORT/nearlabel"
  export PG_URI PG_PORT PG_DIR PG_DATA
}

pg_cluster_up() {
  _pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/server.log" -w -t 60 start > /dev/null
}

pg_cluster_stop() {
  [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ] &&
    _pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop > /dev/null 2>&1
  return 0
}

pg_cluster_restart() {
  pg_cluster_stop
  pg_cluster_up
}

pg_cluster_kill() {
  local pid
  pid=$(head -1 "$PG_DATA/postmaster.pid" 2> /dev/null) && kill -9 "$pid" 2> /dev/null
  sleep 0.5
  # Its backends notice the dead postmaster and exit; wait for the port to be free.
  for _ in $(seq 50); do
    pgrep -u postgres -f "$PG_DATA" > /dev/null || break
    sleep 0.1
  done
  rm -f "$PG_DATA/postmaster.pid"
}

# Stops the cluster and removes DIR (call from a trap).
pg_cluster_remove() {
  pg_cluster_stop
  [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
}
