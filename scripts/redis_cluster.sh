#!/usr/bin/env bash
# A real Redis Cluster on this box (issue 13, item 4): six redis-server nodes on 127.0.0.1, three
# masters and three replicas, created once with `redis-cli --cluster create --cluster-replicas 1`
# and afterwards restarted from their own nodes.conf and AOF.
#
# What it owns (nothing else is touched; stack.sh's single Redis on 6380 is independent):
#   the redis-server processes on the cluster ports, which it starts and stops itself;
#   $DATA/redis-cluster/<port>/    each node's dir: nodes.conf, appendonlydir/ (AOF), temp RDBs;
#   $DATA/logs/redis-cluster-<port>.log, $DATA/logs/redis-cluster-create.log;
#   $DATA/run/redis-cluster-<port>.pid.
# $DATA is the checkout's .data/ (SLUICE_DATA_DIR overrides it, as for stack.sh).
#
# Usage: scripts/redis_cluster.sh up|down|status|seeds|reset
#   up      starts the nodes that are not running (from their nodes.conf and AOF when they have
#           them), runs `redis-cli --cluster create` only when the nodes have never formed a
#           cluster, waits until every node says cluster_state:ok with all 16384 slots served,
#           and prints the seed list. With everything up and formed it only reports.
#   down    SHUTDOWN to each node (masters first, all at once, so no replica is elected; a Redis
#           7 master waits for its replicas to catch up), waits for them to exit (SIGTERM, at
#           last SIGKILL, through the pid file if one does not), keeps the data.
#   status  what the cluster says (state, slots, masters and their replicas, keys, links);
#           exits 0 when cluster_state is ok with 16384 slots served, 1 otherwise.
#   seeds   the seed list alone, for `SLUICE_REDIS__URL=$(scripts/redis_cluster.sh seeds)`.
#   reset   down, wipes $DATA/redis-cluster (every key in the cluster), then up: a new cluster.
#           For a cluster left broken (nodes.conf from another set of ports, a node whose data
#           was removed, an interrupted create), which `up` refuses to guess about.
#
# Seed list format (printed by up, status and seeds): every node, comma-separated redis:// URLs,
#   redis://127.0.0.1:7001,redis://127.0.0.1:7002,...,redis://127.0.0.1:7006
# For fred: split on ',' and parse each URL into a host and a port for
# ServerConfig::Clustered { hosts, .. }; fred's own single-URL spelling of the same nodes is
# redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=...  (Config::from_url_clustered).
# Any one live node is enough to discover the rest; listing all survives any one being down.
#
# Settings (environment):
#   SLUICE_CLUSTER_PORTS            the node ports, space- or comma-separated: an even number,
#                                   at least 6 (half become masters). Default: 6 ports from
#   SLUICE_CLUSTER_BASE_PORT        (7001), i.e. 7001-7006. Each node also listens on its
#                                   cluster bus port, port + 10000 (17001-17006).
#   SLUICE_CLUSTER_NODE_TIMEOUT_MS  cluster-node-timeout (5000): how long a master may be
#                                   unreachable before its replica is promoted. A kill -9 of a
#                                   master measured here (scripts/test_redis_cluster.sh): 19 s to
#                                   cluster_state:ok with Redis' default 15000, 7 s with 5000,
#                                   4 s with 2000 (PFAIL comes node-timeout after an unanswered
#                                   ping, and pings go out up to node-timeout/2 apart). 5000
#                                   keeps a failover well inside ~10 s yet rides out multi-second
#                                   event-loop stalls on a loaded 2-core box (a compile, a
#                                   benchmark, a slow AOF fsync) that 2000 would turn into
#                                   spurious failovers.
#   SLUICE_CLUSTER_MAXMEMORY        maxmemory per node (1gb; noeviction, so a full master
#                                   refuses writes, as stack.sh's Redis does, rather than
#                                   evicting). A master holds a third of the keys.
#   SLUICE_REDIS_APPENDFSYNC        everysec (default) or always, as for stack.sh's Redis.
#   SLUICE_READY_TIMEOUT_SECS       how long a node may replay its AOF before serving (300).
#   SLUICE_CLUSTER_TIMEOUT_SECS     how long the cluster may take to reach cluster_state:ok
#                                   once every node serves (30).
# Fixed: bind 127.0.0.1, protected-mode yes (the default stack.sh's Redis runs with), AOF on
# with no RDB snapshots (--save ""), cluster-config-file nodes.conf in each node's dir, and
# repl-diskless-sync-delay 0: each master has one replica, so there is nobody to wait for before
# streaming it a full sync, which every replica needs after a restart (Redis 7.0 restores no
# replication ID from an AOF, so no partial resync). Restarted nodes report cluster_state:ok
# about 2 s after they serve (Redis' rejoin delay); `up` waits for that and for the replicas'
# sync (warning, not failing, if a large sync outlasts the deadline).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
DATA=$(realpath -m "${SLUICE_DATA_DIR:-$ROOT/.data}")
LOGS=$DATA/logs
RUN=$DATA/run
CLUSTER_DIR=$DATA/redis-cluster
CREATE_LOG=$LOGS/redis-cluster-create.log
HOST=127.0.0.1
SLOTS=16384

BASE_PORT=${SLUICE_CLUSTER_BASE_PORT:-7001}
NODE_TIMEOUT_MS=${SLUICE_CLUSTER_NODE_TIMEOUT_MS:-5000}
MAXMEMORY=${SLUICE_CLUSTER_MAXMEMORY:-1gb}
APPENDFSYNC=${SLUICE_REDIS_APPENDFSYNC:-everysec}
READY_TIMEOUT_SECS=${SLUICE_READY_TIMEOUT_SECS:-300}
FORM_TIMEOUT_SECS=${SLUICE_CLUSTER_TIMEOUT_SECS:-30}

PORTS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf 'redis_cluster: warning: %s\n' "$*" >&2; }
die() { printf 'redis_cluster: %s\n' "$*" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
# redis-cli against one node; a node that hangs cannot hang this script.
cli() { local port=$1; shift; timeout 10 redis-cli -h "$HOST" -p "$port" "$@"; }
node_dir() { echo "$CLUSTER_DIR/$1"; }
pid_file() { echo "$RUN/redis-cluster-$1.pid"; }
log_file() { echo "$LOGS/redis-cluster-$1.log"; }
# One field of `CLUSTER INFO` / `INFO` output ("name:value" lines ending in \r).
field() { printf '%s\n' "$1" | tr -d '\r' | sed -n "s/^$2://p"; }
now() { date +%s; }
# Whether a process is running (a zombie is not: this box's init reaps exited daemons late).
alive() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1; [ "${s%% *}" != Z ]; }

parse_ports() {
  local list p
  if [ -n "${SLUICE_CLUSTER_PORTS:-}" ]; then
    list=${SLUICE_CLUSTER_PORTS//,/ }
  else
    case "$BASE_PORT" in ''|*[!0-9]*) die "SLUICE_CLUSTER_BASE_PORT must be a number, not '$BASE_PORT'" ;; esac
    list=$(seq -s ' ' "$BASE_PORT" $((BASE_PORT + 5)))
  fi
  read -r -a PORTS <<<"$list"
  for p in "${PORTS[@]}"; do
    case "$p" in ''|*[!0-9]*) die "cluster port '$p' is not a number (SLUICE_CLUSTER_PORTS='${SLUICE_CLUSTER_PORTS:-}')" ;; esac
    if [ "$p" -lt 1024 ] || [ "$p" -gt 55535 ]; then
      die "cluster port $p must be in 1024-55535 (its bus port is port + 10000)"
    fi
  done
  [ "$(printf '%s\n' "${PORTS[@]}" | sort -u | wc -l)" = "${#PORTS[@]}" ] || die "cluster ports repeat: ${PORTS[*]}"
  if [ "${#PORTS[@]}" -lt 6 ] || [ $(( ${#PORTS[@]} % 2 )) -ne 0 ]; then
    die "a cluster with one replica per master needs an even number of at least 6 ports, not ${#PORTS[@]} (${PORTS[*]})"
  fi
  case "$APPENDFSYNC" in
    always|everysec) ;;
    *) die "SLUICE_REDIS_APPENDFSYNC must be always or everysec, not '$APPENDFSYNC'" ;;
  esac
}

is_our_port() { local p; for p in "${PORTS[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

seeds() {
  local p out=()
  for p in "${PORTS[@]}"; do out+=("redis://$HOST:$p"); done
  (IFS=,; echo "${out[*]}")
}

install() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    log "installing redis-server"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  local major
  major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
  [ "${major:-0}" -ge 5 ] || die "redis-server $(redis-server --version) is too old for redis-cli --cluster (5 or later)"
}

# A redis-server process of ours on `port`: the pid its pid file names, when alive and redis-server.
node_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server || return 1
  echo "$pid"
}

# Whether the Redis answering on `port` is this script's node (its dir is ours).
is_ours() { [ "$(cli "$1" config get dir 2>/dev/null | tail -1)" = "$(node_dir "$1")" ]; }

start_node() {
  local port=$1 dir
  dir=$(node_dir "$port")
  mkdir -p "$dir" "$LOGS" "$RUN"
  rm -f "$(pid_file "$port")"
  redis-server --port "$port" --bind "$HOST" --protected-mode yes --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$NODE_TIMEOUT_MS" \
    --appendonly yes --appendfsync "$APPENDFSYNC" --save "" --repl-diskless-sync-delay 0 \
    --maxmemory "$MAXMEMORY" --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$(pid_file "$port")" --logfile "$(log_file "$port")"
}

# Waits until the node answers PONG (it answers LOADING while it replays its AOF).
wait_node() {
  local port=$1 deadline said=''
  deadline=$(( $(now) + READY_TIMEOUT_SECS ))
  until [ "$(cli "$port" ping 2>/dev/null)" = PONG ]; do
    if [ "$(now)" -ge "$deadline" ]; then
      tail -5 "$(log_file "$port")" >&2 2>/dev/null || true
      die "the node on $port does not serve after ${READY_TIMEOUT_SECS}s; see $(log_file "$port")"
    fi
    if ! port_open "$port" && ! node_pid "$port" >/dev/null && [ "$(now)" -ge $(( deadline - READY_TIMEOUT_SECS + 2 )) ]; then
      tail -5 "$(log_file "$port")" >&2 2>/dev/null || true
      die "the node on $port did not start; see $(log_file "$port")"
    fi
    if [ -z "$said" ] && [ "$(now)" -ge $(( deadline - READY_TIMEOUT_SECS + 3 )) ]; then
      log "waiting for the node on $port to load its data (${READY_TIMEOUT_SECS}s at most)"; said=1
    fi
    sleep 0.2
  done
}

# The node's view of the cluster, one line per node:
#   address role master-address slot-count slot-ranges state
# role is master or replica; state is ok, pfail, fail, handshake or noaddr.
nodes_table() {
  cli "$1" cluster nodes | awk -v host="$HOST" '
    NF >= 8 {
      n++; id[n] = $1; a = $2; sub(/@.*/, "", a); if (a ~ /^:/) a = host a; addr[$1] = a
      fl[n] = $3; ma[n] = $4; cnt[n] = 0; rng[n] = ""
      for (i = 9; i <= NF; i++) {
        if ($i ~ /^\[/) continue
        rng[n] = rng[n] (rng[n] == "" ? "" : ",") $i
        k = split($i, r, "-"); cnt[n] += (k == 2 ? r[2] - r[1] + 1 : 1)
      }
    }
    END {
      for (i = 1; i <= n; i++) {
        role = fl[i] ~ /master/ ? "master" : (fl[i] ~ /slave/ ? "replica" : "none")
        st = "ok"
        if (fl[i] ~ /noaddr/) st = "noaddr"
        if (fl[i] ~ /handshake/) st = "handshake"
        if (fl[i] ~ /fail\?/) st = "pfail"
        if (fl[i] ~ /(^|,)fail(,|$)/) st = "fail"
        m = ma[i] == "-" ? "-" : (ma[i] in addr ? addr[ma[i]] : "?")
        print addr[id[i]], role, m, cnt[i], (rng[i] == "" ? "-" : rng[i]), st
      }
    }'
}

# fresh (never in a cluster, no keys), formed (knows exactly our nodes and all slots are
# assigned), or "broken: <why>".
classify_node() {
  local port=$1 info known assigned keys table addrs foreign want
  info=$(cli "$port" cluster info) || { echo "broken: CLUSTER INFO fails"; return; }
  known=$(field "$info" cluster_known_nodes)
  assigned=$(field "$info" cluster_slots_assigned)
  keys=$(cli "$port" dbsize)
  if [ "$known" = 1 ] && [ "$assigned" = 0 ]; then
    if [ "$keys" = 0 ]; then echo fresh; else echo "broken: it is in no cluster (no nodes.conf) yet holds $keys keys"; fi
    return
  fi
  table=$(nodes_table "$port")
  addrs=$(awk '{print $1}' <<<"$table" | sort -u)
  want=$(for p in "${PORTS[@]}"; do echo "$HOST:$p"; done | sort -u)
  foreign=$(comm -23 <(echo "$addrs") <(echo "$want") | tr '\n' ' ')
  if [ -n "$foreign" ]; then
    echo "broken: its nodes.conf names nodes outside this cluster's ports: ${foreign% }"; return
  fi
  if [ "$known" != "${#PORTS[@]}" ] || [ "$(wc -l <<<"$addrs")" != "${#PORTS[@]}" ]; then
    echo "broken: it knows $known nodes ($(echo "$addrs" | tr '\n' ' ')), not the ${#PORTS[@]} of this cluster"; return
  fi
  if [ "$assigned" != "$SLOTS" ]; then
    echo "broken: only $assigned of $SLOTS slots are assigned (an interrupted create?)"; return
  fi
  echo formed
}

create_cluster() {
  local p addrs=()
  for p in "${PORTS[@]}"; do addrs+=("$HOST:$p"); done
  log "creating the cluster: redis-cli --cluster create ${addrs[*]} --cluster-replicas 1"
  mkdir -p "$LOGS"
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$CREATE_LOG" 2>&1; then
    tail -15 "$CREATE_LOG" >&2
    die "redis-cli --cluster create failed; see $CREATE_LOG (scripts/redis_cluster.sh reset starts over)"
  fi
}

# Empty when the cluster is whole: every node says ok with all slots served and sees the
# expected numbers of live masters and replicas; otherwise what is still missing.
not_ready() {
  local p info st ok known table masters replicas
  for p in "${PORTS[@]}"; do
    info=$(cli "$p" cluster info 2>/dev/null) || { echo "$p does not answer"; return; }
    st=$(field "$info" cluster_state); ok=$(field "$info" cluster_slots_ok)
    known=$(field "$info" cluster_known_nodes)
    if [ "$st" != ok ] || [ "$ok" != "$SLOTS" ] || [ "$known" != "${#PORTS[@]}" ]; then
      echo "$p says cluster_state:$st, $ok of $SLOTS slots ok, $known nodes known"; return
    fi
  done
  table=$(nodes_table "${PORTS[0]}")
  masters=$(awk '$2 == "master" && $6 == "ok" && $4 > 0' <<<"$table" | wc -l)
  replicas=$(awk '$2 == "replica" && $6 == "ok"' <<<"$table" | wc -l)
  if [ "$masters" != $(( ${#PORTS[@]} / 2 )) ] || [ "$replicas" != $(( ${#PORTS[@]} / 2 )) ]; then
    echo "$masters live masters with slots and $replicas live replicas"
  fi
}

# Replicas whose link to their master is not up yet (a full sync after a restart takes a moment).
replicas_syncing() {
  local p info
  for p in "${PORTS[@]}"; do
    info=$(cli "$p" info replication 2>/dev/null) || continue
    [ "$(field "$info" role)" = slave ] || continue
    [ "$(field "$info" master_link_status)" = up ] || printf '%s ' "$p"
  done
}

wait_ready() {
  local started=$1 deadline why syncing
  deadline=$(( started + FORM_TIMEOUT_SECS ))
  while why=$(not_ready) && [ -n "$why" ]; do
    [ "$(now)" -lt "$deadline" ] ||
      die "the cluster is not ok ${FORM_TIMEOUT_SECS}s after its nodes served: $why; see $LOGS/redis-cluster-*.log and scripts/redis_cluster.sh status"
    sleep 0.2
  done
  while syncing=$(replicas_syncing) && [ -n "$syncing" ]; do
    if [ "$(now)" -ge "$deadline" ]; then
      warn "the cluster is ok, but replicas ${syncing% } have not finished syncing with their masters yet"; return
    fi
    sleep 0.2
  done
}

summary() {
  local table
  table=$(nodes_table "$1")
  awk '$2 == "master" && $4 > 0' <<<"$table" | sort -t' ' -k5,5n | while read -r addr _ _ cnt rng st; do
    printf '  master   %-16s slots %-12s (%s)%s\n' "$addr" "$rng" "$cnt" "$([ "$st" = ok ] || echo " [$st]")"
    awk -v m="$addr" '$2 == "replica" && $3 == m { printf "    replica %s%s\n", $1, ($6 == "ok" ? "" : " [" $6 "]") }' <<<"$table"
  done
  awk '!($2 == "master" && $4 > 0) && !($2 == "replica" && $3 != "-")' <<<"$table" | while read -r addr role _ _ _ st; do
    printf '  %-8s %-16s no slots, no master [%s]\n' "$role" "$addr" "$st"
  done
}

up() {
  parse_ports
  install
  local p t0 started=() restored=() fresh=() formed=() broken=() kind
  for p in "${PORTS[@]}"; do
    port_open "$p" && continue
    [ -f "$(node_dir "$p")/nodes.conf" ] && restored+=("$p")
    start_node "$p"
    started+=("$p")
  done
  if [ ${#started[@]} -gt 0 ]; then
    log "started Redis Cluster nodes on ${started[*]} (AOF on, appendfsync $APPENDFSYNC, maxmemory $MAXMEMORY noeviction per node, cluster-node-timeout ${NODE_TIMEOUT_MS}ms)"
  fi
  for p in "${PORTS[@]}"; do wait_node "$p"; done
  for p in "${PORTS[@]}"; do
    is_ours "$p" || die "port $p is served by a Redis this script did not start (its dir is not $(node_dir "$p")); stop it or choose other ports with SLUICE_CLUSTER_PORTS"
  done
  t0=$(now)
  for p in "${PORTS[@]}"; do
    kind=$(classify_node "$p")
    case "$kind" in
      fresh) fresh+=("$p") ;;
      formed) formed+=("$p") ;;
      *) broken+=("$p: ${kind#broken: }") ;;
    esac
  done
  if [ ${#fresh[@]} = ${#PORTS[@]} ]; then
    create_cluster
  elif [ ${#formed[@]} = ${#PORTS[@]} ]; then
    if [ ${#started[@]} = 0 ]; then
      log "the cluster on ${PORTS[*]} is already up and formed; nothing to do"
    elif [ ${#restored[@]} -gt 0 ]; then
      log "nodes ${restored[*]} restarted from their nodes.conf and AOF; the cluster re-forms without --cluster create"
    fi
  else
    {
      echo "redis_cluster: the nodes on ${PORTS[*]} do not make one cluster, and up will not guess:"
      [ ${#formed[@]} = 0 ] || echo "  formed: ${formed[*]}"
      [ ${#fresh[@]} = 0 ] || echo "  empty, in no cluster: ${fresh[*]} (their nodes.conf is gone, or they are new ports)"
      for p in "${broken[@]}"; do echo "  $p"; done
      echo "  (did SLUICE_CLUSTER_PORTS change since the cluster was created, or was part of $CLUSTER_DIR removed?)"
      echo "  scripts/redis_cluster.sh reset   stops the nodes, wipes $CLUSTER_DIR (all its keys) and creates a new cluster"
      echo "  scripts/redis_cluster.sh down    stops them and keeps the data"
    } >&2
    exit 1
  fi
  wait_ready "$t0"
  log "Redis Cluster ok: $SLOTS slots on $(( ${#PORTS[@]} / 2 )) masters, $(( ${#PORTS[@]} / 2 )) replicas (ready $(( $(now) - t0 ))s after the nodes served)"
  summary "${PORTS[0]}"
  echo "  data $CLUSTER_DIR/<port>/   logs $LOGS/redis-cluster-<port>.log   pids $RUN/redis-cluster-<port>.pid"
  echo "seeds: $(seeds)"
}

# The ports of every node this script started under this $DATA: the configured ones and any
# left from an earlier SLUICE_CLUSTER_PORTS (their pid files).
all_ports() {
  local f p
  printf '%s\n' "${PORTS[@]}"
  for f in "$RUN"/redis-cluster-*.pid; do
    [ -e "$f" ] || continue
    p=${f##*/redis-cluster-}; p=${p%.pid}
    case "$p" in ''|*[!0-9]*) continue ;; esac
    is_our_port "$p" || printf '%s\n' "$p"
  done
}

stop_nodes() { # ports...
  local p pid pids=() i
  [ $# -gt 0 ] || return 0
  for p in "$@"; do
    pid=$(node_pid "$p" || cli "$p" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p' || true)
    [ -n "$pid" ] && pids+=("$p:$pid")
    cli "$p" shutdown >/dev/null 2>&1 &
  done
  wait
  for i in "${pids[@]}"; do
    p=${i%%:*}; pid=${i#*:}
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      warn "the node on $p (pid $pid) did not exit after SHUTDOWN; sending SIGTERM"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    fi
    if alive "$pid"; then
      warn "the node on $p (pid $pid) ignored SIGTERM; killing it (its AOF keeps what was fsynced)"
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$p")"
  done
}

down() {
  parse_ports
  local p masters=() replicas=() gone=() role
  while read -r p; do
    if port_open "$p"; then
      if ! is_ours "$p"; then warn "port $p is served by a Redis this script did not start; leaving it"; continue; fi
      is_our_port "$p" || log "also stopping the node on $p (from an earlier SLUICE_CLUSTER_PORTS)"
      role=$(cli "$p" role 2>/dev/null | head -1)
      if [ "$role" = master ]; then masters+=("$p"); else replicas+=("$p"); fi
    elif node_pid "$p" >/dev/null; then
      replicas+=("$p") # alive but not answering (starting up): SIGTERM through its pid file
    else
      rm -f "$(pid_file "$p")"
      gone+=("$p")
    fi
  done < <(all_ports)
  if [ ${#masters[@]} -eq 0 ] && [ ${#replicas[@]} -eq 0 ]; then
    log "no Redis Cluster node of this checkout is running (ports ${PORTS[*]})"; return 0
  fi
  log "stopping Redis Cluster nodes: masters ${masters[*]:-none}, then replicas ${replicas[*]:-none} (data kept in $CLUSTER_DIR)"
  stop_nodes "${masters[@]}"
  stop_nodes "${replicas[@]}"
  [ ${#gone[@]} -eq 0 ] || log "not running already: ${gone[*]}"
}

status() {
  parse_ports
  local p info seen='' down_=() not_ok=() st ok code=0
  for p in "${PORTS[@]}"; do
    if info=$(cli "$p" cluster info 2>/dev/null) && [ -n "$(field "$info" cluster_state)" ]; then
      st=$(field "$info" cluster_state); ok=$(field "$info" cluster_slots_ok)
      if [ "$st" != ok ] || [ "$ok" != "$SLOTS" ]; then not_ok+=("$p:$st"); fi
      [ -n "$seen" ] || seen=$p
    else
      down_+=("$p")
    fi
  done
  if [ -z "$seen" ]; then
    echo "Redis Cluster on ${PORTS[*]}: down (no node answers)"; return 1
  fi
  info=$(cli "$seen" cluster info)
  printf 'Redis Cluster on %s, as %s:%s sees it:\n' "${PORTS[*]}" "$HOST" "$seen"
  printf '  cluster_state:%s  slots assigned %s, ok %s, pfail %s, fail %s (of %s)  known nodes %s  size %s  current epoch %s\n' \
    "$(field "$info" cluster_state)" "$(field "$info" cluster_slots_assigned)" "$(field "$info" cluster_slots_ok)" \
    "$(field "$info" cluster_slots_pfail)" "$(field "$info" cluster_slots_fail)" "$SLOTS" \
    "$(field "$info" cluster_known_nodes)" "$(field "$info" cluster_size)" "$(field "$info" cluster_current_epoch)"
  summary "$seen" | while IFS= read -r line; do
    p=$(awk '{print $2}' <<<"$line"); p=${p##*:}
    if [ "$p" -eq "$p" ] 2>/dev/null && is_our_port "$p" && port_open "$p"; then
      info=$(cli "$p" info replication 2>/dev/null || true)
      if [ "$(field "$info" role)" = slave ]; then
        printf '%s  keys %s  link %s\n' "$line" "$(cli "$p" dbsize)" "$(field "$info" master_link_status)"
      else
        printf '%s  keys %s\n' "$line" "$(cli "$p" dbsize)"
      fi
    else
      printf '%s  (not answering)\n' "$line"
    fi
  done
  [ ${#down_[@]} -eq 0 ] || echo "  not answering: ${down_[*]}"
  if [ ${#not_ok[@]} -gt 0 ]; then
    echo "  NOT OK on ${not_ok[*]}"; code=1
  elif [ ${#down_[@]} -gt 0 ]; then
    echo "  ok, degraded: ${#down_[@]} node(s) down"
  else
    echo "  ok"
  fi
  echo "seeds: $(seeds)"
  return $code
}

reset() {
  parse_ports
  down
  log "wiping $CLUSTER_DIR (every node's nodes.conf and AOF)"
  rm -rf "${CLUSTER_DIR:?}"
  up
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  seeds) parse_ports; seeds ;;
  reset) reset ;;
  *) echo "usage: $0 up|down|status|seeds|reset" >&2; exit 2 ;;
esac
