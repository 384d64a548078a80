#!/usr/bin/env bash
# Contract conformance: schemathesis generates requests from each service's /api/openapi.json
# (examples, coverage, fuzzing and stateful phases, every check) against the running stack, with
# a fresh account's API key and JWT given to each operation by the security scheme it declares.
# Exits non-zero on any failure and prints the request that reproduces it.
#
#   scripts/schemathesis.sh            # both services
#   scripts/schemathesis.sh api        # one of them
#
# Env: SLUICE_API_URL (http://127.0.0.1:3001), SLUICE_ANALYTICS_URL (http://127.0.0.1:3002),
# SCHEMATHESIS_MAX_EXAMPLES (per operation, 40), SCHEMATHESIS_SEED (random), SCHEMATHESIS_REPORT_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv
SCHEMATHESIS_VERSION=4.32.5
API_URL=${SLUICE_API_URL:-http://127.0.0.1:3001}
ANALYTICS_URL=${SLUICE_ANALYTICS_URL:-http://127.0.0.1:3002}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
REPORT_DIR=${SCHEMATHESIS_REPORT_DIR:-$ROOT/target/schemathesis}
SERVICES=("$@")
[ ${#SERVICES[@]} -gt 0 ] || SERVICES=(api analytics)

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into .venv"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

url_of() {
  case $1 in
    api) echo "$API_URL" ;;
    analytics) echo "$ANALYTICS_URL" ;;
    *) echo "unknown service $1 (api, analytics)" >&2; exit 2 ;;
  esac
}
for service in "${SERVICES[@]}"; do
  url=$(url_of "$service")
  if ! curl -fsS -o /dev/null --max-time 5 "$url/api/openapi.json"; then
    echo "no OpenAPI document at $url/api/openapi.json: start the stack (PROFILE=debug scripts/stack.sh up)" >&2
    exit 2
  fi
done

# A fresh account for this run: its JWT and one API key.
json_field() { "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
EMAIL="schemathesis-$(date +%s)-$$@example.com"
PASSWORD="schemathesis-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CREDS=$(printf '{"email":"%s","password":"%s"}' "$EMAIL" "$PASSWORD")
curl -fsS -o /dev/null -H 'Content-Type: application/json' -d "$CREDS" "$API_URL/api/v1/auth/register"
JWT=$(curl -fsS -H 'Content-Type: application/json' -d "$CREDS" "$API_URL/api/v1/auth/login" | json_field token)
KEY=$(curl -fsS -H 'Content-Type: application/json' -H "Authorization: Bearer $JWT" \
  -d '{"name":"schemathesis"}' "$API_URL/api/v1/keys" | json_field key)
export SLUICE_ST_JWT=$JWT SLUICE_ST_KEY=$KEY

# Each operation gets the credential of the security scheme it declares (`apiKey`: the key in
# `x-api-key`; `jwt`: the token as a Bearer), so the auth checks can also try it without them.
mkdir -p "$REPORT_DIR"
config() { # service: its schemathesis.toml, with the schemes its document declares
  local file=$REPORT_DIR/$1.toml
  {
    if [ "$1" = api ]; then
      printf '[auth.openapi.apiKey]\napi_key = "${SLUICE_ST_KEY}"\n\n'
      # Segment's SDKs: the key as the HTTP Basic user name, an empty password.
      printf '[auth.openapi.segmentWriteKey]\nusername = "${SLUICE_ST_KEY}"\npassword = ""\n\n'
    fi
    cat <<'TOML'
[auth.openapi.jwt]
bearer = "${SLUICE_ST_JWT}"

# A body over a declared limit (more than 1000 events, over 64 KiB) is refused with 413, as the
# contract says: that is a rejection too.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
TOML
    if [ "$1" = api ]; then
      cat <<'TOML'

# A batch is judged event by event (the contract): a batch holding some invalid events queues the
# valid ones and answers 202 with each invalid one `rejected` in its results. Only a batch whose
# every event is invalid, or that is not a batch, is refused as a whole. (`--checks all` on the
# command line overrides an `enabled = false` here; the statuses are what the contract answers.)
[[operations]]
include-path = "/api/v1/events/batch"
checks.negative_data_rejection.expected-statuses = ["200", "202", "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

# A webhook source's secret and `eventIdFrom` follow its `scheme` (a stripe source has no message id
# header; a standard-webhooks secret is `whsec_` + base64): rules between fields, which OpenAPI
# cannot state; the document says them in words and declares the 400.
[[operations]]
include-path-regex = "^/api/v1/sources"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "429", "5xx"]

# A rule names channels of its own account, and `where` holds only strings, numbers, booleans or
# null: rules across resources and on a free-form map's values, which OpenAPI cannot state; the
# document says them in words and declares the 400. A channel's URL must be http(s) with a host.
[[operations]]
include-path-regex = "^/api/v1/(rules|channels)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "429", "5xx"]

# A regulation's userIds are each 1 to 128 characters (the envelope's userId): a rule on the items of
# an array of strings, which the document states in words and declares as a 400 with its pointer.
[[operations]]
include-path = "/api/v1/regulations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "429", "5xx"]

# The live WebSocket: a plain GET is no upgrade (400), and its credential is a ticket or a JWT in
# `Sec-WebSocket-Protocol`, which OpenAPI cannot declare as a scheme (401 without one).
[[operations]]
include-path = "/api/v1/live"
checks.positive_data_acceptance.expected-statuses = ["101", "400", "401", "5xx"]
checks.negative_data_rejection.expected-statuses = ["400", "401", "5xx"]

# The SDK intakes (Segment, PostHog) judge each message on its own as the batch endpoint does, and
# read what their SDKs send however it is typed (a numeric userId, unknown fields): their success
# is 200. PostHog's key travels in the body, where OpenAPI cannot declare it as a scheme, so a
# generated body is answered 401; one with a key of its own making, too.
[[operations]]
include-path-regex = "^/(v1/|batch|capture|e/?$|i/v0/e)"
checks.negative_data_rejection.expected-statuses = ["200", "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
checks.positive_data_acceptance.expected-statuses = ["200", "400", "401", "404", "413", "429", "5xx"]
TOML
    fi
    if [ "$1" = analytics ]; then
      cat <<'TOML'

# `bucket` must fit `range` (at most 1440 points, no wider than the range): a rule between two
# parameters, which OpenAPI cannot state; the document says it in words and declares the 400.
[[operations]]
include-path = "/api/v1/analytics/timeseries"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "429", "5xx"]
TOML
    fi
  } >"$file"
  echo "$file"
}

status=0
for service in "${SERVICES[@]}"; do
  url=$(url_of "$service")
  log "schemathesis against $service ($url/api/openapi.json)"
  started=$(date +%s)
  args=(
    --checks all
    --phases examples,coverage,fuzzing,stateful
    --max-examples "$MAX_EXAMPLES"
    --workers 2
    --request-timeout 30
    --generation-database none
    --report junit --report-dir "$REPORT_DIR/$service"
  )
  [ -z "${SCHEMATHESIS_SEED:-}" ] || args+=(--seed "$SCHEMATHESIS_SEED")
  # From the report folder: schemathesis keeps its replay store (.schemathesis/) in the cwd.
  if ! (cd "$REPORT_DIR" && "$VENV/bin/schemathesis" --config-file "$(config "$service")" \
    run "${args[@]}" "$url/api/openapi.json"); then
    status=1
  fi
  log "$service took $(( $(date +%s) - started )) s"
done
exit $status
