#!/bin/bash
# The HTTP ceiling under a load shape, with CPU per request: sluice-hello (actix, no middleware,
# a handler that answers 202) under wrk -t1 -c64 -d15s after a 5 s warm-up, and the CPU that
# sluice-hello and wrk used (utime + stime from /proc/<pid>/stat) divided by the requests.
#   cargo build --release -p sluice-loadtest --bin sluice-hello
#   scripts/hello_bench.sh [single.lua|batch.lua]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHAPE=${1:-single.lua}
PORT=${HELLO_PORT:-3099}
HELLO_PORT=$PORT "$ROOT/target/release/sluice-hello" >/dev/null 2>&1 &
HP=$!
trap 'kill $HP 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
KEY=x wrk -t1 -c64 -d5s -s "$ROOT/benches/wrk/$SHAPE" "http://127.0.0.1:$PORT" >/dev/null
TICKS=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
OUT=$(mktemp)
h0=$(cpu $HP)
KEY=x wrk -t1 -c64 -d15s -s "$ROOT/benches/wrk/$SHAPE" "http://127.0.0.1:$PORT" >"$OUT" &
WP=$!
sleep 0.2
w0=$(cpu $WP)
sleep 14.6
w1=$(cpu $WP)
wait $WP
h1=$(cpu $HP)
reqs=$(grep -Eo '^ *[0-9]+ requests' "$OUT" | awk '{print $1}')
grep -E 'Requests/sec' "$OUT"
python3 -c "
reqs, t = $reqs, $TICKS
print(f'sluice-hello CPU per request: {($h1 - $h0) / t * 1e6 / reqs:.1f} us')
print(f'wrk CPU per request: {($w1 - $w0) / t * 1e6 / (reqs * 14.6 / 15):.1f} us (sampled over 14.6 of the 15 s)')
"
rm -f "$OUT"
