#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz: libFuzzer + AddressSanitizer) of every parser of outside
# bytes: fuzz/fuzz_targets/*.rs, one binary each, seeded from fuzz/corpus/<target>/ (committed).
# Property: no panic and bounded allocation for any input. A crash, a single allocation over
# -malloc_limit_mb, an RSS over -rss_limit_mb or an input slower than -timeout fails the run; the
# input is kept in fuzz/artifacts/<target>/ and the command that replays it is printed.
#
#   scripts/fuzz.sh quick                  # every target for 15 s, unoptimised build (make test)
#   scripts/fuzz.sh long [secs] [target…]  # every (or the named) target for secs each (600)
#   scripts/fuzz.sh list                   # the targets
#
# Builds into fuzz/target (git-ignored), never the main target/, so the main debug build stays
# valid. New inputs libFuzzer finds go to fuzz/target/corpus/<target>/, not to the committed seeds.
# Env: FUZZ_QUICK_SECS (15), FUZZ_RSS_LIMIT_MB (2048), FUZZ_MALLOC_LIMIT_MB (512),
# FUZZ_TIMEOUT_SECS (10, per input).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_DIR=$ROOT/fuzz
TARGET_DIR=$FUZZ_DIR/target
CARGO_FUZZ_VERSION=0.13.2
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
MALLOC_LIMIT_MB=${FUZZ_MALLOC_LIMIT_MB:-512}
TIMEOUT_SECS=${FUZZ_TIMEOUT_SECS:-10}
# cargo-fuzz passes -Z flags to rustc; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

mode=${1:-}
[ -n "$mode" ] || usage
shift
case $mode in
  quick) secs=${FUZZ_QUICK_SECS:-15} ;;
  long)
    secs=600
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
    ;;
  list) ;;
  *) usage ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# The same flags for build and run, so `run` finds the build done.
FLAGS=(--fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" --codegen-units 16)
# `quick` (make test) uses an unoptimised build with debug assertions (overflow checks too): it
# builds in a fraction of the optimised build's time on a fresh machine, and 15 s of it still run
# tens of thousands of inputs. `long` uses the optimised build, which runs many times faster.
if [ "$mode" = quick ]; then FLAGS+=(--dev); fi
mapfile -t ALL < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
if [ "$mode" = list ]; then printf '%s\n' "${ALL[@]}"; exit 0; fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

log "building ${#ALL[@]} fuzz targets (ASan, into fuzz/target)"
started=$SECONDS
# One retry: a CI run once lost this build to a rustc exit 101 inside `mongodb` (a dependency,
# not our code) while three other suites ran beside it; a second attempt reuses what was built.
if ! cargo fuzz build "${FLAGS[@]}"; then
  log "the fuzz build failed; retrying once"
  cargo fuzz build "${FLAGS[@]}"
fi
log "built in $((SECONDS - started)) s"

mkdir -p "$TARGET_DIR/logs"
failed=()
for t in "${TARGETS[@]}"; do
  work=$TARGET_DIR/corpus/$t
  artifacts=$FUZZ_DIR/artifacts/$t
  logfile=$TARGET_DIR/logs/$t.log
  mkdir -p "$work" "$artifacts" "$FUZZ_DIR/corpus/$t"
  # The first corpus dir receives what libFuzzer finds; the committed seeds are only read.
  if cargo fuzz run "${FLAGS[@]}" "$t" "$work" "$FUZZ_DIR/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb="$RSS_LIMIT_MB" -malloc_limit_mb="$MALLOC_LIMIT_MB" \
    -timeout="$TIMEOUT_SECS" -artifact_prefix="$artifacts/" -print_final_stats=1 \
    >"$logfile" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$logfile" | tail -1)
  printf '%-18s %-6s %10s execs in %ss, peak RSS %s MB\n' "$t" "$status" "${execs:-?}" "$secs" "${rss:-?}"
  if [ "$status" = FAILED ]; then
    grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|==[0-9]+==|Test unit written|SUMMARY' \
      "$logfile" | head -20 || true
    echo "   full log: $logfile"
    echo "   replay:   RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $t <artifact above>"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]} (add each input to fuzz/corpus/<target>/ once fixed)" >&2
  exit 1
fi
log "fuzzing passed: ${TARGETS[*]}"
