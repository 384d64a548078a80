#!/usr/bin/env python3
"""SDK conformance: the real, unmodified official SDKs against the running stack's source intakes.

Five SDKs, installed from their registries at the versions pinned in scripts/sdk/ (the Python
ones into .venv-sdk/ from scripts/sdk/requirements.txt, the Node ones into scripts/sdk/node_modules
with `npm ci` from scripts/sdk/package-lock.json; both are skipped when already installed from the
same pins):

  segment-py    segment-analytics-python   -> POST /v1/batch  (Basic <key>:, writeKey in the body)
  rudder-py     rudder-sdk-python          -> POST /v1/batch  (Basic <key>: only, gzip)
  posthog-py    posthog                    -> POST /batch/    (api_key in the body)
  segment-node  @segment/analytics-node    -> POST /v1/batch
  posthog-node  posthog-node               -> POST /batch/    (gzip)

The suite makes an account of its own (register, login, one API key), then runs each SDK's client
in its own process, all at once (scripts/sdk/py_client.py with .venv-sdk/bin/python, node
scripts/sdk/node_client.mjs), with ids unique to this run (a run tag):
  - Segment and RudderStack: a track (userId and anonymousId, properties, context, integrations),
    an identify (traits), a page (anonymousId, name, category, properties), and a batch of 20
    tracks, through the SDK's queue, then flushed;
  - PostHog: a custom event, a `$pageview`, an identify-like call (Python: `set()`, which sends a
    top-level `$set`, and a `$identify` capture with `$anon_distinct_id`; Node: `identify()`) and a
    batch of 20 captures, then flushed;
  - then two of those calls again with the ids the SDK gave them (messageId / uuid), in a
    request of their own after the first flush;
  - then one call through a second client holding an unknown key.
It then waits (at most 30 s) until every message is in MongoDB's `events` of that account and
checks, per SDK:
  - every message stored exactly once, under `_id` `{accountId}:{eventId}` with eventId = the
    SDK's messageId / uuid; no other document in the account (the re-sent ones are not stored
    again, and do not change what was stored);
  - the mapping: eventType verbatim (`Order Completed`, `identify`, `page`, `$pageview`, `$set`,
    `$identify`), userId (`userId ?? anonymousId`, `distinct_id`), anonymousId where sent
    (PostHog: `$anon_distinct_id`), properties, traits, context (the SDK's library and what the
    call gave), integrations, page name and category, `source.kind` (and `source.call`), and the
    Segment SDKs' timestamp as sent;
  - every request of the good client answered exactly 200 (RudderStack's and PostHog's Python
    SDKs take nothing else as success) and no error reported by the SDK;
  - the unknown key: the SDK itself saw a 401 (on_error callback, `error` event / callback,
    rejected flush) and nothing of it was stored, in any account.
One line per SDK (its name, version, what it sent, what was stored, what it saw with the bad
key), then `sdk_suite: ok`; or the problems and exit 1. No timing is asserted.

Usage: .venv/bin/python scripts/sdk_suite.py [--only segment-py,posthog-node]
Env: SLUICE_API_URL (http://127.0.0.1:3001), SLUICE_MONGO__URL, SLUICE_MONGO__DATABASE (sluice).
"""
import argparse
import concurrent.futures
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK_DIR = ROOT / "scripts" / "sdk"
SDK_VENV = ROOT / ".venv-sdk"
REQUIREMENTS = SDK_DIR / "requirements.txt"
PACKAGE_JSON = SDK_DIR / "package.json"
PACKAGE_LOCK = SDK_DIR / "package-lock.json"
NODE_MODULES = SDK_DIR / "node_modules"

try:
    import pymongo  # the project's .venv has it (scripts/stack.sh installs the MongoDB stand-in there)
except ImportError:
    sys.exit("sdk_suite: pymongo is missing; run `scripts/stack.sh install` (it creates .venv)")

API_URL = os.environ.get("SLUICE_API_URL", "http://127.0.0.1:3001").rstrip("/")
MONGO_URL = os.environ.get("SLUICE_MONGO__URL", "mongodb://127.0.0.1:27018/?directConnection=true")
MONGO_DB = os.environ.get("SLUICE_MONGO__DATABASE", "sluice")
STORE_DEADLINE_SECS = 30
CLIENT_TIMEOUT_SECS = 300  # a hung SDK process is a failure, not a wait forever

# Each SDK: its family (which plan and which mapping), how it is run, the library name it puts in
# `context.library` / `$lib`.
SDKS = {
    "segment-py": {"family": "segment", "runner": "py", "package": "segment-analytics-python", "lib": "analytics-python"},
    "rudder-py": {"family": "segment", "runner": "py", "package": "rudder-sdk-python", "lib": "analytics-python"},
    "posthog-py": {"family": "posthog", "runner": "py", "package": "posthog", "lib": "posthog-python"},
    "segment-node": {"family": "segment", "runner": "node", "package": "@segment/analytics-node", "lib": "@segment/analytics-node"},
    "posthog-node": {"family": "posthog", "runner": "node", "package": "posthog-node", "lib": "posthog-node"},
}
BATCH_SIZE = 20


class SuiteError(Exception):
    """The suite cannot run at all (install, stack, account): not a finding about an SDK."""


def log(msg):
    print(f"sdk_suite: {msg}", flush=True)


# --- installation ---------------------------------------------------------------------------------

def digest(*paths):
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def run_quiet(cmd, cwd=None, what=""):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SuiteError(f"{what or ' '.join(map(str, cmd))} failed (exit {r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def pinned_versions():
    """The pins: {package: version} from requirements.txt and package.json."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    for name, version in json.loads(PACKAGE_JSON.read_text())["dependencies"].items():
        pins[name] = version
    return pins


def ensure_python_sdks():
    """.venv-sdk from requirements.txt; a stamp of the requirements' hash makes a rerun a no-op."""
    stamp = SDK_VENV / ".sluice-requirements.sha256"
    want = digest(REQUIREMENTS)
    py = SDK_VENV / "bin" / "python"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return False
    log(f"installing the Python SDKs into {SDK_VENV.relative_to(ROOT)}/ ({REQUIREMENTS.relative_to(ROOT)})")
    if not py.exists():
        run_quiet([sys.executable, "-m", "venv", "--clear", str(SDK_VENV)], what="python -m venv .venv-sdk")
    run_quiet([str(SDK_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
              what="pip install -r scripts/sdk/requirements.txt")
    stamp.write_text(want + "\n")
    return True


def ensure_node_sdks():
    """scripts/sdk/node_modules by `npm ci` from the committed lock; a stamp makes a rerun a no-op."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise SuiteError(f"`{tool}` is not on PATH (the Node SDKs need Node.js 18 or later)")
    stamp = NODE_MODULES / ".sluice-lock.sha256"
    want = digest(PACKAGE_JSON, PACKAGE_LOCK)
    if stamp.exists() and stamp.read_text().strip() == want:
        return False
    log(f"installing the Node SDKs into {NODE_MODULES.relative_to(ROOT)}/ (npm ci)")
    run_quiet(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SDK_DIR, what="npm ci in scripts/sdk")
    stamp.write_text(want + "\n")
    return True


# --- the api --------------------------------------------------------------------------------------

def api(method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API_URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        raise SuiteError(f"{method} {API_URL}{path}: {e} (is the stack up? `make up`)")


def make_account(tag):
    email = f"sdk-suite-{tag}@example.com"
    password = "sdk-suite-" + secrets.token_hex(12)
    status, reg = api("POST", "/api/v1/auth/register", {"email": email, "password": password})
    if status not in (200, 201):
        raise SuiteError(f"POST /api/v1/auth/register answered {status}: {reg}")
    status, login = api("POST", "/api/v1/auth/login", {"email": email, "password": password})
    if status != 200:
        raise SuiteError(f"POST /api/v1/auth/login answered {status}: {login}")
    status, key = api("POST", "/api/v1/keys", {"name": "sdk-suite"}, token=login["token"])
    if status not in (200, 201):
        raise SuiteError(f"POST /api/v1/keys answered {status}: {key}")
    return reg["accountId"], key["key"]


# --- what each SDK sends --------------------------------------------------------------------------

def plan_for(sdk, tag, key, bad_key):
    """The calls an SDK makes, with ids of this run: `ops` (then flushed), `resend` (indexes of
    ops made again with their first id) and `bad_ops` (with the unknown key)."""
    u1, u2, anon, bad_user = (f"{sdk}-{tag}-{s}" for s in ("u1", "u2", "anon", "badkey"))
    family = SDKS[sdk]["family"]
    if family == "segment":
        ops = [
            {"call": "track", "userId": u1, "anonymousId": anon, "event": "Order Completed",
             "properties": {"revenue": 12.5, "currency": "EUR", "run": tag},
             "context": {"locale": "en-US", "suite": {"run": tag}}, "integrations": {"Amplitude": False}},
            {"call": "identify", "userId": u1, "traits": {"email": f"{u1}@example.com", "plan": "pro", "run": tag}},
            {"call": "page", "anonymousId": anon, "name": "Home", "category": "Docs",
             "properties": {"url": "https://example.com/", "run": tag}},
        ]
        ops += [{"call": "track", "userId": u2, "event": "Item Viewed", "properties": {"seq": i, "run": tag}}
                for i in range(BATCH_SIZE)]
        bad_ops = [{"call": "track", "userId": bad_user, "event": "Bad Key Probe", "properties": {"run": tag}}]
    else:
        ops = [
            {"call": "capture", "distinctId": u1, "event": "order completed",
             "properties": {"revenue": 12.5, "currency": "EUR", "run": tag, "$set": {"plan": "pro"}}},
            {"call": "capture", "distinctId": anon, "event": "$pageview",
             "properties": {"$current_url": "https://example.com/", "run": tag}},
        ]
        if sdk == "posthog-py":
            ops += [
                {"call": "set", "distinctId": u1, "properties": {"email": f"{u1}@example.com", "plan": "pro"}},
                {"call": "capture", "distinctId": u1, "event": "$identify",
                 "properties": {"$anon_distinct_id": anon, "$set": {"email": f"{u1}@example.com"}, "run": tag}},
            ]
        else:
            ops += [{"call": "identify", "distinctId": u1,
                     "properties": {"email": f"{u1}@example.com", "plan": "pro", "$anon_distinct_id": anon}}]
        ops += [{"call": "capture", "distinctId": u2, "event": "item viewed", "properties": {"seq": i, "run": tag}}
                for i in range(BATCH_SIZE)]
        bad_ops = [{"call": "capture", "distinctId": bad_user, "event": "bad key probe", "properties": {"run": tag}}]
    resend = [0, len(ops) - BATCH_SIZE + 4]  # the first call, and one inside the batch
    return {"host": API_URL, "key": key, "bad_key": bad_key, "ops": ops, "resend": resend, "bad_ops": bad_ops}


def describe_calls(sdk, plan):
    ops = plan["ops"][: len(plan["ops"]) - BATCH_SIZE]
    names = []
    for op in ops:
        if op["call"] in ("track", "capture"):
            names.append(f"{op['call']} {op['event']!r}")
        else:
            names.append(op["call"])
    return " + ".join(names) + f" + batch of {BATCH_SIZE}"


def client_env():
    env = dict(os.environ)
    # What would silently change what the SDKs send or where (docs: /work/notes/sdk-wire.md §3, §5, §2).
    for name in ("POSTHOG_CAPTURE_MODE", "POSTHOG_CAPTURE_COMPRESSION", "POSTHOG_RELEASE_ID", "TEST_DATA_PLANE_URL"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    return env


def run_client(sdk, plan):
    if SDKS[sdk]["runner"] == "py":
        cmd = [str(SDK_VENV / "bin" / "python"), str(SDK_DIR / "py_client.py"), sdk]
    else:
        cmd = ["node", str(SDK_DIR / "node_client.mjs"), sdk]
    try:
        # From scripts/sdk: rudder-sdk-python reads a `.env` of the working directory at import.
        r = subprocess.run(cmd, input=json.dumps(plan), capture_output=True, text=True, cwd=SDK_DIR,
                           env=client_env(), timeout=CLIENT_TIMEOUT_SECS)
    except subprocess.TimeoutExpired as e:
        return None, f"the client did not finish within {CLIENT_TIMEOUT_SECS} s; its stderr:\n{(e.stderr or '')[-3000:]}"
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not lines:
        return None, f"the client exited {r.returncode}; stderr:\n{r.stderr[-3000:]}\nstdout:\n{r.stdout[-1000:]}"
    return json.loads(lines[-1]), r.stderr


# --- what must be stored --------------------------------------------------------------------------

def ms_floor(text):
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def subset_problems(what, want, got):
    """`want`'s keys all in `got` with equal values (the SDK may add keys of its own)."""
    if not isinstance(got, dict):
        return [f"{what} is {got!r}, expected an object holding {want!r}"]
    return [f"{what}.{k} is {got.get(k, '<absent>')!r}, sent {v!r}" for k, v in want.items() if got.get(k) != v]


class OneOf:
    """An expected value that may be any of a few (None: the field absent)."""

    def __init__(self, *values):
        self.values = values

    def __eq__(self, other):
        return other in self.values

    def __repr__(self):
        return " or ".join("absent" if v is None else repr(v) for v in self.values)


def expected_segment(sdk, op, version, lib):
    """The stored document's fields for one Segment/RudderStack call (docs/SOURCES.md)."""
    e = {"eventType": op["event"] if op["call"] == "track" else op["call"],
         "userId": op.get("userId") or op.get("anonymousId"),
         "anonymousId": op.get("anonymousId"),
         "source": {"kind": "segment", "call": op["call"]},
         # What the call does not send is not made up: absent.
         "properties": None, "traits": None, "name": None, "category": None, "groupId": None, "previousId": None}
    checks = []
    if "properties" in op:
        del e["properties"]
        checks.append(("properties", op["properties"]))
    context = {"library": {"name": lib, "version": version}, **op.get("context", {})}
    if op["call"] == "identify":
        if sdk == "rudder-py":
            # rudder-sdk-python puts identify's traits in context.traits and sends no `traits`:
            # they must be kept there (and, should the api also copy them to `traits`, equal).
            context["traits"] = op["traits"]
            e["traits"] = OneOf(None, op["traits"])
        else:
            e["traits"] = op["traits"]
    checks.append(("context", context))
    # As sent: the call's own, else the SDK's default (RudderStack's `{"All": true}`, Segment's `{}`).
    e["integrations"] = op.get("integrations", {"All": True} if sdk == "rudder-py" else {})
    if op["call"] == "page":
        e["name"], e["category"] = op["name"], op["category"]
    return e, checks


def expected_posthog(sdk, op, version, lib):
    """The stored document's fields for one PostHog event (docs/SOURCES.md)."""
    props = dict(op.get("properties") or {})
    e = {"userId": op["distinctId"], "source": {"kind": "posthog"}, "anonymousId": props.get("$anon_distinct_id"),
         # Segment's fields have no PostHog counterpart: absent.
         "traits": None, "context": None, "integrations": None, "name": None, "category": None,
         "groupId": None, "previousId": None}
    if op["call"] == "capture":
        e["eventType"] = op["event"]
        want = props
    elif op["call"] == "set":  # posthog-py: a `$set` event with a top-level `$set`, moved into properties
        e["eventType"] = "$set"
        want = {"$set": props}
    else:  # posthog-node identify(): `$identify`, the non-`$` properties as `$set`, `$set_once` {}
        e["eventType"] = "$identify"
        want = {"$set": {k: v for k, v in props.items() if not k.startswith("$")}, "$set_once": {},
                "$anon_distinct_id": props.get("$anon_distinct_id")}
    want = {**want, "$lib": lib, "$lib_version": version}
    return e, [("properties", want)]


def check_document(sdk, account_id, sent, op, doc, version):
    lib = SDKS[sdk]["lib"]
    if SDKS[sdk]["family"] == "segment":
        expected, checks = expected_segment(sdk, op, version, lib)
    else:
        expected, checks = expected_posthog(sdk, op, version, lib)
    problems = []
    eid = sent["id"]
    top = {"_id": f"{account_id}:{eid}", "eventId": eid, "accountId": account_id}
    for field, want in {**top, **expected}.items():
        got = doc.get(field)
        if not want == got:
            problems.append(f"{field} is {doc.get(field, '<absent>')!r}, expected {want!r}" if want is not None
                            else f"{field} is {got!r}, expected it absent")
    # Objects the SDK adds keys of its own to: each key sent must be there with its value
    # (`context.library` and `context.suite` only need to hold what was sent).
    for field, want in checks:
        got = doc.get(field)
        if not isinstance(got, dict):
            problems.append(f"{field} is {doc.get(field, '<absent>')!r}, expected an object holding {want!r}")
            continue
        for key, value in want.items():
            if field == "context" and isinstance(value, dict):
                problems += subset_problems(f"{field}.{key}", value, got.get(key))
            elif got.get(key, "<absent>") != value:
                problems.append(f"{field}.{key} is {got.get(key, '<absent>')!r}, sent {value!r}")
    if sent.get("timestamp") and SDKS[sdk]["family"] == "segment":
        want_t = ms_floor(sent["timestamp"])
        got_t = doc.get("timestamp")
        if got_t != want_t:
            problems.append(f"timestamp is {got_t}, sent {sent['timestamp']} (a Segment timestamp is kept as sent)")
    return [f"{op['call']} {op.get('event', '')!r} (eventId {eid}): {p}".replace(" '' ", " ") for p in problems]


# --- one SDK's verdict ----------------------------------------------------------------------------

class Verdict:
    def __init__(self, sdk):
        self.sdk = sdk
        self.problems = []
        self.server_findings = []  # what looks like the api's fault, with what was sent and answered
        self.version = "?"
        self.sent = ""
        self.stored = ""
        self.bad = ""

    def fail(self, msg):
        self.problems.append(msg)


def statuses_text(http, client):
    counts = {}
    for h in http:
        if h["client"] == client:
            k = f"{h['status']} {h['path']}"
            counts[k] = counts.get(k, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in counts.items()) or "no request"


def judge_client(v, plan, result, pins):
    sdk = v.sdk
    v.version = result.get("version", "?")
    pin = pins.get(SDKS[sdk]["package"])
    if v.version != pin:
        v.fail(f"the SDK reports version {v.version}, the pin is {pin}")
    first = [s for s in result["sent"] if s["phase"] == "first"]
    resent = [s for s in result["sent"] if s["phase"] == "resend"]
    for s in first:
        if not s.get("queued") or not s.get("id"):
            v.fail(f"op {s['op']} ({plan['ops'][s['op']]['call']}) was not queued by the SDK or got no id: {s}")
    for s in resent:
        orig = next((f for f in first if f["op"] == s["op"]), None)
        if orig and s.get("id") != orig.get("id"):
            v.fail(f"the re-sent op {s['op']} went with id {s.get('id')}, not its first id {orig.get('id')} "
                   "(the SDK did not take the id it was given)")
    good_http = [h for h in result["http"] if h["client"] == "good"]
    if not good_http:
        v.fail("the SDK made no request with the good key")
    not_200 = [h for h in good_http if h["status"] != 200]
    if not_200:
        v.server_findings.append(f"requests with a valid key answered {statuses_text(not_200, 'good')} (expected 200)")
    if result.get("errors"):
        v.fail(f"the SDK reported errors with the good key: {result['errors']}")
    n_requests = len(good_http)
    v.sent = (f"{describe_calls(sdk, plan)} = {len(first)} messages, {len(resent)} re-sent with their ids, "
              f"in {n_requests} request(s) [{statuses_text(result['http'], 'good')}]")


def judge_bad_key(v, result):
    sdk = v.sdk
    bad_http = [h for h in result["http"] if h["client"] == "bad"]
    errs = result.get("bad_errors") or []
    seen = []
    if not bad_http:
        v.fail("the client with the unknown key made no request")
    elif any(h["status"] != 401 for h in bad_http):
        v.server_findings.append(f"the unknown key was answered {statuses_text(bad_http, 'bad')} (expected 401)")
    if sdk in ("segment-py", "rudder-py", "posthog-py"):
        got = [e for e in errs if e.get("status") == 401]
        if got:
            e = got[0]
            seen.append(f"on_error({e['type']} status={e['status']}" + (f" code={e['code']!r}" if e.get("code") else "") + ")")
        else:
            v.fail(f"on_error did not get a 401 for the unknown key; it got {errs or 'nothing'}")
    elif sdk == "segment-node":
        got = [e for e in errs if "[401]" in (e.get("message") or "")]
        cb = [s.get("error") for s in result.get("bad_sent", []) if s.get("error")]
        if got:
            seen.append(f"'error' event {got[0].get('code')}: {got[0]['message']}")
        else:
            v.fail(f"no 'error' event with [401] for the unknown key; errors: {errs or 'none'}")
        if cb and "[401]" in (cb[0].get("message") or ""):
            seen.append(f"callback err {cb[0]['message']!r}")
        else:
            v.fail(f"the call's callback did not get the 401: {cb or 'no error'}")
    elif sdk == "posthog-node":
        rej = result.get("bad_flush")
        if rej and rej.get("status") == 401:
            seen.append(f"flush() rejected ({rej['type']} status=401)")
        else:
            v.fail(f"flush() with the unknown key did not reject with status 401: {rej or 'it resolved'}")
        if any(e.get("status") == 401 for e in errs):
            seen.append("'error' event status=401")
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated SDKs (" + ",".join(SDKS) + ")")
    args = ap.parse_args()
    sdks = list(SDKS)
    if args.only:
        sdks = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in sdks if s not in SDKS]
        if unknown:
            sys.exit(f"sdk_suite: unknown SDK(s) {', '.join(unknown)} (one of {', '.join(SDKS)})")

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(ensure_python_sdks), pool.submit(ensure_node_sdks)]:
                f.result()
        pins = pinned_versions()
        mongo = pymongo.MongoClient(MONGO_URL, serverSelectionTimeoutMS=10_000)
        events = mongo[MONGO_DB]["events"]
        try:
            mongo.admin.command("ping")
        except pymongo.errors.PyMongoError as e:
            raise SuiteError(f"MongoDB at {MONGO_URL}: {e}")
        tag = time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
        account_id, key = make_account(tag)
    except SuiteError as e:
        print(f"sdk_suite: FAILED: {e}", file=sys.stderr)
        return 2
    bad_key = "slk_" + secrets.token_hex(32)  # the shape of a key, of no account
    log(f"run {tag}: account {account_id}, api {API_URL}, MongoDB {MONGO_DB}.events; running {', '.join(sdks)}")

    plans = {sdk: plan_for(sdk, tag, key, bad_key) for sdk in sdks}
    verdicts = {sdk: Verdict(sdk) for sdk in sdks}
    results = {}
    with concurrent.futures.ThreadPoolExecutor(len(sdks)) as pool:
        futures = {sdk: pool.submit(run_client, sdk, plans[sdk]) for sdk in sdks}
        for sdk, f in futures.items():
            result, stderr = f.result()
            if result is None:
                verdicts[sdk].fail(stderr)
            else:
                results[sdk] = result
                judge_client(verdicts[sdk], plans[sdk], result, pins)

    # Every first-phase id of every SDK that ran; wait until they are all stored (or the deadline).
    expected = {}  # eventId -> (sdk, sent record)
    for sdk, result in results.items():
        for s in result["sent"]:
            if s["phase"] == "first" and s.get("id"):
                expected[s["id"]] = (sdk, s)
    deadline = time.monotonic() + STORE_DEADLINE_SECS
    docs = {}
    while True:
        docs = {}
        for d in events.find({"accountId": account_id}):
            docs.setdefault(d.get("eventId"), []).append(d)
        if all(i in docs for i in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    for sdk, result in results.items():
        v = verdicts[sdk]
        plan = plans[sdk]
        first = [s for s in result["sent"] if s["phase"] == "first" and s.get("id")]
        ids = {s["id"] for s in first}
        missing = [s for s in first if s["id"] not in docs]
        twice = [i for i in ids if len(docs.get(i, [])) > 1]
        if missing:
            v.fail(f"{len(missing)} of {len(first)} messages not in {MONGO_DB}.events after {STORE_DEADLINE_SECS} s: "
                   + ", ".join(f"{plan['ops'][s['op']]['call']} {s['id']}" for s in missing[:5]))
        if twice:
            v.fail(f"stored more than once: {twice[:5]}")
        field_problems = []
        for s in first:
            for d in docs.get(s["id"], [])[:1]:
                field_problems += check_document(sdk, account_id, s, plan["ops"][s["op"]], d, v.version)
        if field_problems:
            v.server_findings.append("stored fields differ from what the SDK sent:\n      " + "\n      ".join(field_problems))
        stored_n = len(ids) - len(missing)
        v.stored = f"{stored_n}/{len(ids)} in {MONGO_DB}.events"
        if stored_n:
            v.stored += (f", {'none' if not twice else len(twice)} twice (the {len(plan['resend'])} re-sent included), "
                         + ("fields as mapped" if not field_problems else f"{len(field_problems)} field problem(s)"))

        seen = judge_bad_key(v, result)
        bad_users = [op.get("userId") or op.get("distinctId") for op in plan["bad_ops"]]
        bad_ids = [s["id"] for s in result.get("bad_sent", []) if s.get("id")]
        leaked = events.count_documents({"$or": [{"userId": {"$in": bad_users}}, {"eventId": {"$in": bad_ids}}]})
        if leaked:
            v.server_findings.append(f"{leaked} document(s) stored for the unknown key (userId {bad_users}, ids {bad_ids})")
        v.bad = f"{statuses_text(result['http'], 'bad')}; saw {', '.join(seen) or 'nothing'}; stored {leaked}"

    # Documents in the account that no SDK sent (e.g. a re-sent message stored under another id).
    stray = [i for i in docs if i not in expected]
    if stray:
        owner = {}
        for i in stray:
            d = docs[i][0]
            sdk = next((s for s in sdks if str(d.get("userId", "")).startswith(f"{s}-{tag}-")), None)
            owner.setdefault(sdk, []).append(f"{i} ({d.get('eventType')}, source {d.get('source')})")
        for sdk, items in owner.items():
            target = verdicts.get(sdk)
            msg = f"{len(items)} document(s) in the account under an eventId the SDK did not send: {items[:5]}"
            if target and not target.problems:
                # The SDK reported every id it sent, each re-send with its first id: the api's.
                target.server_findings.append(msg)
            else:
                (target or verdicts[sdks[0]]).fail(msg + " (the client did not report every id it sent)")

    width = max(len(s) for s in sdks)
    failed = 0
    for sdk in sdks:
        v = verdicts[sdk]
        ok = not v.problems and not v.server_findings
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {sdk:<{width}} {v.version:<7} sent: {v.sent or '-'} | stored: {v.stored or '-'} "
              f"| bad key: {v.bad or '-'}", flush=True)
        for p in v.problems:
            print(f"    problem: {p}")
        for p in v.server_findings:
            print(f"    api: {p}")
    if failed:
        print(f"sdk_suite: FAILED ({failed} of {len(sdks)} SDKs; run tag {tag}, account {account_id})")
        return 1
    print("sdk_suite: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
