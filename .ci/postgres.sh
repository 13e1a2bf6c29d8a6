# Sourced by .ci/run: start a private PostgreSQL on 127.0.0.1 for the multi-machine storage tests and export
# TUNING_TEST_POSTGRES. Best effort: without a server those tests are skipped with the reason.
start_postgres() {
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; } >/dev/null \
      || { echo "warning: could not install postgresql; its tests will be skipped" >&2; return 0; }
  fi
  local bin port=55432
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PG_DATA=$(mktemp -d)
  chown postgres "$PG_DATA"
  su postgres -s /bin/sh -c "$bin/initdb -D $PG_DATA -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $PG_DATA -w -l $PG_DATA/server.log \
    -o '-p $port -k $PG_DATA -c listen_addresses=127.0.0.1' start" >/dev/null
  su postgres -s /bin/sh -c "$bin/createdb -h 127.0.0.1 -p $port tuning"
  export TUNING_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/tuning"
  PG_STOP="$bin/pg_ctl -D $PG_DATA -m fast stop"
}

stop_postgres() {
  if [ -n "${PG_STOP:-}" ]; then su postgres -s /bin/sh -c "$PG_STOP" >/dev/null || true; rm -rf "$PG_DATA"; fi
}
