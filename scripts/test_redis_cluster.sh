#!/usr/bin/env bash
# End-to-end check of scripts/redis_cluster.sh against the real six-node cluster it starts.
# It uses ports of its own (7101-7106, and 7103-7108 for the broken-cluster check;
# SLUICE_TEST_CLUSTER_BASE_PORT moves them) and a data dir of its own under $TMPDIR, so a cluster
# started by `make up REDIS=cluster` on 7001-7006 is never touched. It removes its data dir when
# every check passed and keeps it (logs included) for a look otherwise. Exits 1 on any failed check.
#
#   up → 3 masters + 3 replicas, 16384 slots → `up` again changes nothing → 1,000 keys written
#   with redis-cli -c and read back, spread over the masters → hash tags share a slot → kill -9
#   of one master, its replica promoted (timed) → what survived → down → up from nodes.conf and
#   AOF, no --cluster create → a broken cluster (other ports over the same data) is refused and
#   `reset` re-creates it → down, data dir removed.
#
# SLUICE_CLUSTER_NODE_TIMEOUT_MS is passed through (the script's default when unset).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
CLUSTER=$ROOT/scripts/redis_cluster.sh
BASE=${SLUICE_TEST_CLUSTER_BASE_PORT:-7101}
NKEYS=${SLUICE_TEST_CLUSTER_KEYS:-1000}
FAILOVER_SECS=${SLUICE_TEST_FAILOVER_SECS:-20}
HOST=127.0.0.1
read -r -a PORTS <<<"$(seq -s ' ' "$BASE" $((BASE + 5)))"
read -r -a SHIFTED <<<"$(seq -s ' ' $((BASE + 2)) $((BASE + 7)))"
TEST_DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluice-cluster-test.XXXXXX")
export SLUICE_DATA_DIR=$TEST_DATA
export SLUICE_CLUSTER_PORTS="${PORTS[*]}"
unset SLUICE_CLUSTER_BASE_PORT
CREATE_LOG=$TEST_DATA/logs/redis-cluster-create.log

failures=0
T_START=$(date +%s%3N)
ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
step() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
die() { bad "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
rc() { redis-cli -h "$HOST" -p "$@"; }
field() { tr -d '\r' | sed -n "s/^$1://p"; }
indent() { sed 's/^/      /'; }

cleanup() {
  local code=$?
  "$CLUSTER" down >/dev/null 2>&1 || true # stops every node with a pid file under $TEST_DATA
  if [ "$code" = 0 ] && [ "$failures" = 0 ]; then
    rm -rf "$TEST_DATA"
  else
    echo "kept $TEST_DATA (logs in $TEST_DATA/logs) for a look"
  fi
}
trap cleanup EXIT

# Live masters with slots, live replicas of live masters, and the slots those masters serve, as
# node `port` sees them: "masters replicas slots".
topology() {
  rc "$1" cluster nodes | awk '
    { fl[NR] = $3; ms[NR] = $4; id[NR] = $1; line[NR] = $0 }
    END {
      for (i = 1; i <= NR; i++) {
        if (fl[i] !~ /master/ || fl[i] ~ /fail/) continue
        split(line[i], f, " "); n = 0
        for (j = 9; j in f; j++) {
          if (f[j] ~ /^\[/) continue
          k = split(f[j], rg, "-"); n += (k == 2 ? rg[2] - rg[1] + 1 : 1)
        }
        if (n > 0) { live[id[i]] = 1; masters++; slots += n }
      }
      for (i = 1; i <= NR; i++) if (fl[i] ~ /slave/ && fl[i] !~ /fail/ && (ms[i] in live)) replicas++
      print masters + 0, replicas + 0, slots + 0
    }'
}
expect_topology() { # port label [live replicas]
  local t want="3 ${3:-3} 16384"
  t=$(topology "$1")
  check "$2: 3 masters, ${3:-3} live replicas, 16384 slots served (seen from $1: $t)" [ "$t" = "$want" ]
  local info
  info=$(rc "$1" cluster info)
  check "$2: cluster_state:ok, cluster_slots_ok:16384" \
    [ "$(field cluster_state <<<"$info"):$(field cluster_slots_ok <<<"$info")" = ok:16384 ]
}

write_keys() { # port → how many SETs answered OK
  local i
  for i in $(seq 1 "$NKEYS"); do echo "SET sluice-test:key:$i value-$i"; done |
    redis-cli -c -h "$HOST" -p "$1" | awk '/^-> Redirected/ { next } $0 == "OK" { n++ } END { print n + 0 }'
}
# port → "matched missing errors answers": each GET answered its value, nil, or something else.
read_keys() {
  local i
  for i in $(seq 1 "$NKEYS"); do echo "GET sluice-test:key:$i"; done |
    redis-cli -c -h "$HOST" -p "$1" | awk '
      /^-> Redirected/ { next }
      { k++; if ($0 == "value-" k) m++; else if ($0 == "") e++; else { o++; if (o <= 3) print "      " $0 > "/dev/stderr" } }
      END { print m + 0, e + 0, o + 0, k + 0 }'
}
pids_of() { local p; for p in "${PORTS[@]}"; do rc "$p" info server | field process_id; done | tr '\n' ' '; }
master_ports() { local p; for p in "${PORTS[@]}"; do [ "$(rc "$p" role 2>/dev/null | head -1)" = master ] && echo "$p"; done; return 0; }

step "preflight"
for p in $(seq "$BASE" $((BASE + 7))); do
  if port_open "$p" || port_open $((p + 10000)); then
    die "port $p or its bus port $((p + 10000)) is in use; free it or set SLUICE_TEST_CLUSTER_BASE_PORT"
  fi
done
ok "ports $BASE-$((BASE + 7)) and $((BASE + 10000))-$((BASE + 10007)) are free; data in $TEST_DATA"

step "up (a new cluster)"
t=$(ms)
out=$("$CLUSTER" up 2>&1) || { echo "$out" | indent; die "up failed"; }
echo "$out" | indent
ok "up took $(secs_since "$t") s (nodes start, --cluster create, cluster_state:ok, replicas synced)"
check "up ran --cluster create" grep -q 'creating the cluster' <<<"$out"
NODE_TIMEOUT=$(rc "${PORTS[0]}" config get cluster-node-timeout | tail -1)
ok "cluster-node-timeout is ${NODE_TIMEOUT} ms"
expect_topology "${PORTS[0]}" "after create"
want_seeds=$(for p in "${PORTS[@]}"; do printf 'redis://%s:%s\n' "$HOST" "$p"; done | paste -sd,)
check "seeds prints $want_seeds" [ "$("$CLUSTER" seeds)" = "$want_seeds" ]
files_in_place() {
  local p d
  for p in "${PORTS[@]}"; do
    d=$TEST_DATA/redis-cluster/$p
    [ -f "$d/nodes.conf" ] && [ -d "$d/appendonlydir" ] && [ -f "$TEST_DATA/run/redis-cluster-$p.pid" ] &&
      [ -f "$TEST_DATA/logs/redis-cluster-$p.log" ] || return 1
  done
}
check "every node has redis-cluster/<port>/{nodes.conf,appendonlydir}, logs/redis-cluster-<port>.log, run/redis-cluster-<port>.pid" files_in_place
cfg=$(for k in appendonly maxmemory-policy bind protected-mode cluster-config-file; do
  rc "${PORTS[0]}" config get "$k" | paste -sd' '; done | paste -sd' ')
maxmem=$(rc "${PORTS[0]}" config get maxmemory | tail -1)
check "maxmemory is set ($maxmem bytes per node)" [ "$maxmem" -gt 0 ]
check "node config: $cfg" [ "$cfg" = 'appendonly yes maxmemory-policy noeviction bind 127.0.0.1 protected-mode yes cluster-config-file nodes.conf' ]

step "up again (idempotent)"
pids_before=$(pids_of)
sum_before=$(md5sum <"$CREATE_LOG")
t=$(ms)
out=$("$CLUSTER" up 2>&1) || { echo "$out" | indent; die "second up failed"; }
echo "$out" | head -2 | indent
check "second up reports and does nothing ($(secs_since "$t") s)" grep -q 'already up and formed; nothing to do' <<<"$out"
check "same processes (pids $pids_before)" [ "$(pids_of)" = "$pids_before" ]
check "no second --cluster create" [ "$(md5sum <"$CREATE_LOG")" = "$sum_before" ]
out=$("$CLUSTER" status 2>&1) && code=0 || code=$?
echo "$out" | indent
check "status exits 0 on a healthy cluster" [ "$code" = 0 ]

step "$NKEYS keys through redis-cli -c"
t=$(ms)
n=$(write_keys "${PORTS[0]}")
check "$n of $NKEYS SETs answered OK ($(secs_since "$t") s)" [ "$n" = "$NKEYS" ]
slots=$(for i in $(seq 1 "$NKEYS"); do echo "CLUSTER KEYSLOT sluice-test:key:$i"; done | rc "${PORTS[0]}" | sort -u | wc -l)
spread=""; total=0; empty=0
for p in $(master_ports); do
  k=$(rc "$p" dbsize); spread="$spread $p:$k"; total=$((total + k)); [ "$k" -gt 0 ] || empty=1
done
spread_ok() { [ "$total" = "$NKEYS" ] && [ "$empty" = 0 ] && [ "$slots" -gt $((NKEYS / 2)) ]; }
check "the keys fall in $slots distinct slots, on every master (${spread# }), $total in all" spread_ok
read -r m e o a <<<"$(read_keys "${PORTS[0]}")"
check "read back: $m of $NKEYS match, $e missing, $o errors ($a answers)" [ "$m" = "$NKEYS" ]

step "hash tags"
s1=$(rc "${PORTS[0]}" cluster keyslot 'sluice:{p3}:events')
s2=$(rc "${PORTS[0]}" cluster keyslot '{p3}:x')
s3=$(rc "${PORTS[0]}" cluster keyslot p3)
check "sluice:{p3}:events and {p3}:x share slot $s1 (= keyslot of p3: $s3; {p3}:x: $s2)" [ "$s1:$s1" = "$s2:$s3" ]
out=$(redis-cli -c -h "$HOST" -p "${PORTS[0]}" mset 'sluice:{p3}:events' a '{p3}:x' b | tail -1)
check "one MSET over both keys is accepted ($out)" [ "$out" = OK ]
out=$(rc "${PORTS[0]}" mset sluice-test:key:1 a sluice-test:key:2 b | head -1)
check "an MSET over two untagged keys of different slots is refused (${out%% *})" grep -q CROSSSLOT <<<"$out"

step "kill -9 of one master"
# The master serving sluice-test:key:1 (a replica, or another master, answers MOVED).
moved=$(rc "${PORTS[0]}" get sluice-test:key:1)
case "$moved" in MOVED*) victim=${moved##*:} ;; *) victim=${PORTS[0]} ;; esac
[ "$(rc "$victim" role | head -1)" = master ] || die "$victim, which serves sluice-test:key:1, is not a master"
victim_id=$(rc "$victim" cluster myid)
replica=$(rc "$victim" cluster nodes | awk -v m="$victim_id" '$4 == m && $3 !~ /fail/ { a = $2; sub(/@.*/, "", a); sub(/.*:/, "", a); print a; exit }')
[ -n "$replica" ] || die "master $victim has no replica"
victim_pid=$(cat "$TEST_DATA/run/redis-cluster-$victim.pid")
repl=$(rc "$victim" info replication)
m_off=$(field master_repl_offset <<<"$repl")
r_off=$(field slave0 <<<"$repl" | tr ',' '\n' | sed -n 's/^offset=//p')
victim_keys=$(rc "$victim" dbsize)
ok "victim: master $victim (pid $victim_pid, $victim_keys keys, repl offset $m_off), replica $replica (acked offset $r_off, $((m_off - r_off)) bytes behind)"
survivors=()
for p in "${PORTS[@]}"; do [ "$p" = "$victim" ] || survivors+=("$p"); done
kill -9 "$victim_pid"
t0=$(ms); t_pfail=; t_fail=; t_down=; t_promoted=; t_ok=
while :; do
  el=$(( $(ms) - t0 ))
  view=$(rc "$replica" cluster nodes 2>/dev/null | awk -v v="$victim_id" '$1 == v { print $3 }')
  if [ -z "$t_pfail" ] && [[ $view == *fail* ]]; then t_pfail=$el; fi
  if [ -z "$t_fail" ] && [[ ,$view, == *,fail,* ]]; then t_fail=$el; fi
  st=$(rc "$replica" cluster info 2>/dev/null | field cluster_state)
  if [ -z "$t_down" ] && [ "$st" = fail ]; then t_down=$el; fi
  if [ -z "$t_promoted" ] && [ "$(rc "$replica" role 2>/dev/null | head -1)" = master ]; then t_promoted=$el; fi
  if [ -n "$t_promoted" ]; then
    all_ok=1
    for p in "${survivors[@]}"; do
      [ "$(rc "$p" cluster info 2>/dev/null | field cluster_state)" = ok ] || { all_ok=0; break; }
    done
    if [ "$all_ok" = 1 ]; then t_ok=$el; break; fi
  fi
  [ "$el" -lt $((FAILOVER_SECS * 1000)) ] || break
  sleep 0.1
done
fmt() { if [ -n "$1" ]; then awk -v v="$1" 'BEGIN { printf "%.1f s", v / 1000 }'; else echo never; fi; }
ok "after the kill: PFAIL seen by the replica $(fmt "$t_pfail"), FAIL $(fmt "$t_fail"), cluster_state:fail $(fmt "$t_down"), replica $replica promoted $(fmt "$t_promoted"), every survivor ok $(fmt "$t_ok")"
check "failover done within ${FAILOVER_SECS} s (cluster-node-timeout ${NODE_TIMEOUT} ms): $(fmt "$t_ok")" [ -n "$t_ok" ]
expect_topology "$replica" "after failover (the promoted replica has none yet)" 2
read -r m e o a <<<"$(read_keys "$replica")"
ok "read back after failover: $m of $NKEYS survived, $e missing, $o errors ($a answers)"
check "every GET was answered (a value or nil, no error)" [ "$o:$a" = "0:$NKEYS" ]
if [ "$m_off" = "$r_off" ]; then
  check "the replica had acked every write before the kill, so nothing may be lost" [ "$m" = "$NKEYS" ]
else
  ok "the replica was $((m_off - r_off)) bytes behind at the kill: losing the newest writes is allowed (asynchronous replication)"
fi
SURVIVED=$m
out=$(rc "$replica" set '{sluice-test:key:1}:after-failover' yes)
check "the promoted replica takes writes for the dead master's slots itself ($out)" [ "$out" = OK ]
out=$("$CLUSTER" status 2>&1) && code=0 || code=$?
echo "$out" | indent
check "status exits 0 with one node down and says so" [ "$code:$(grep -c degraded <<<"$out")" = 0:1 ]

step "up with one node down restarts only that node"
pids_before=$(for p in "${survivors[@]}"; do rc "$p" info server | field process_id; done | tr '\n' ' ')
t=$(ms)
out=$("$CLUSTER" up 2>&1) || { echo "$out" | indent; die "up with $victim down failed"; }
echo "$out" | head -3 | indent
check "up started only $victim, from its nodes.conf ($(secs_since "$t") s)" \
  grep -q "nodes $victim restarted from their nodes.conf" <<<"$out"
check "the other five kept running" \
  [ "$(for p in "${survivors[@]}"; do rc "$p" info server | field process_id; done | tr '\n' ' ')" = "$pids_before" ]
expect_topology "${PORTS[0]}" "after $victim rejoined"
check "$victim rejoined as a replica of $replica" \
  [ "$(rc "$victim" role | head -1):$(rc "$victim" info replication | field master_port)" = "slave:$replica" ]

step "down"
t=$(ms)
out=$("$CLUSTER" down 2>&1) || { echo "$out" | indent; die "down failed"; }
echo "$out" | indent
open=""
for p in "${PORTS[@]}"; do port_open "$p" && open="$open $p"; done
check "down took $(secs_since "$t") s; no node answers${open:+ (still open:$open)}" [ -z "$open" ]
check "no pid file left" [ -z "$(ls "$TEST_DATA/run"/redis-cluster-*.pid 2>/dev/null)" ]
check "data kept: nodes.conf and AOF of all six nodes" \
  [ "$(find "$TEST_DATA/redis-cluster" \( -name nodes.conf -o -name '*.manifest' \) | wc -l)" = 12 ]
out=$("$CLUSTER" status 2>&1) && code=0 || code=$?
check "status exits non-zero with the cluster down ($out)" [ "$code" != 0 ]

step "up again, from nodes.conf and AOF"
sum_before=$(md5sum <"$CREATE_LOG")
t=$(ms)
out=$("$CLUSTER" up 2>&1) || { echo "$out" | indent; die "up after down failed"; }
echo "$out" | indent
ok "up from files took $(secs_since "$t") s"
check "it says the nodes restarted from nodes.conf and AOF" grep -q 'restarted from their nodes.conf and AOF' <<<"$out"
check "no --cluster create this time" [ "$(md5sum <"$CREATE_LOG")" = "$sum_before" ]
expect_topology "${PORTS[0]}" "after restart"
ok "roles now: old master $victim is a $(rc "$victim" role | head -1 | sed 's/slave/replica/') (of $(rc "$victim" info replication | field master_port)), $replica a $(rc "$replica" role | head -1)"
read -r m e o a <<<"$(read_keys "${PORTS[0]}")"
check "read back after restart: $m of $NKEYS ($e missing, $o errors), as many as survived the failover ($SURVIVED)" [ "$m" = "$SURVIVED" ]
check "the key written after the failover is there" [ "$(redis-cli -c -h "$HOST" -p "${PORTS[0]}" get '{sluice-test:key:1}:after-failover' | tail -1)" = yes ]

step "a broken cluster (other ports over the same data) and reset"
"$CLUSTER" down >/dev/null
out=$(SLUICE_CLUSTER_PORTS="${SHIFTED[*]}" "$CLUSTER" up 2>&1) && code=0 || code=$?
echo "$out" | indent
refused() { [ "$code" != 0 ] && grep -q 'redis_cluster.sh reset' <<<"$out"; }
check "up on ${SHIFTED[*]} refuses (exit $code) and points to reset" refused
t=$(ms)
out=$(SLUICE_CLUSTER_PORTS="${SHIFTED[*]}" "$CLUSTER" reset 2>&1) && code=0 || code=$?
echo "$out" | indent
check "reset on ${SHIFTED[*]} re-creates the cluster ($(secs_since "$t") s, exit $code)" [ "$code" = 0 ]
expect_topology "${SHIFTED[0]}" "after reset"
total=0
for p in "${SHIFTED[@]}"; do total=$((total + $(rc "$p" dbsize))); done
wiped() { [ "$total" = 0 ] && [ ! -e "$TEST_DATA/redis-cluster/$BASE" ]; }
check "the new cluster is empty ($total keys) and the old ports' data is gone" wiped
SLUICE_CLUSTER_PORTS="${SHIFTED[*]}" "$CLUSTER" down >/dev/null

step "done"
open=""
for p in $(seq "$BASE" $((BASE + 7))); do port_open "$p" && open="$open $p"; done
check "every test node stopped${open:+ (still open:$open)}" [ -z "$open" ]
echo "total $(secs_since "$T_START") s, $failures failed check(s)"
[ "$failures" = 0 ]
