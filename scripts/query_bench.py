#!/usr/bin/env python3
"""The events query API over a large collection: p50 / p99 of each query shape.

Loads EVENTS (1,000,000) events of one account into a database of its own (`sluice_q1m`, kept
between runs: loading takes a while on the MongoDB stand-in) with the indexes the worker creates,
starts an api of its own on it (port 3031), and times REQUESTS requests of each shape of
`GET /api/v1/events`: the account's newest page, by eventType, by userId, by sessionId, a time
range, and the second page of each (cursor). Prints a table for docs/TRACKING_PLANS.md.

Usage: .venv/bin/python scripts/query_bench.py   Env: EVENTS (1000000), REQUESTS (200), PROFILE.
"""
import json, os, random, time, urllib.error, urllib.parse, urllib.request, uuid
from datetime import datetime, timedelta, timezone

import pymongo

from benchkit import MONGO, PROFILE, service_env, start, stop

EVENTS = int(os.environ.get("EVENTS", "1000000"))
REQUESTS = int(os.environ.get("REQUESTS", "200"))
DB = os.environ.get("QUERY_BENCH_DB", "sluice_q1m")
PORT = 3031
TYPES = [f"type_{i}" for i in range(20)]
USERS = 10_000
SESSIONS = 50_000
# The worker's indexes on `events` (store/src/indexes.rs), by name.
INDEXES = {
    "account_time_type": [("accountId", 1), ("timestamp", -1), ("eventType", 1)],
    "account_user_time": [("accountId", 1), ("userId", 1), ("timestamp", -1)],
    "q_account_time": [("accountId", 1), ("timestamp", -1), ("_id", -1)],
    "q_account_user_time": [("accountId", 1), ("userId", 1), ("timestamp", -1), ("_id", -1)],
    "q_account_type_time": [("accountId", 1), ("eventType", 1), ("timestamp", -1), ("_id", -1)],
    "q_account_session_time": [("accountId", 1), ("sessionId", 1), ("timestamp", -1), ("_id", -1)],
}


def call(path, token=None, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def load(db, account):
    coll = db.events
    have = coll.count_documents({"accountId": account})
    if have >= EVENTS:
        print(f"{have:,} events of the account already loaded", flush=True)
        return
    coll.drop()
    print(f"loading {EVENTS:,} events into {DB} …", flush=True)
    rng = random.Random(7)
    t0 = time.time()
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    batch = []
    for i in range(EVENTS):
        ts = base + timedelta(milliseconds=i * 2_000)  # ~23 days of events
        eid = f"e{i:08d}"
        batch.append({"_id": f"{account}:{eid}", "eventId": eid, "accountId": account,
                      "eventType": rng.choice(TYPES), "userId": f"user_{rng.randrange(USERS)}",
                      "sessionId": f"s_{rng.randrange(SESSIONS)}", "timestamp": ts,
                      "receivedAt": ts, "properties": {"amount": rng.randrange(1000)}})
        if len(batch) == 10_000:
            coll.insert_many(batch, ordered=False)
            batch.clear()
            if (i + 1) % 100_000 == 0:
                print(f"  {i + 1:,} in {time.time() - t0:.0f} s", flush=True)
    if batch:
        coll.insert_many(batch, ordered=False)
    print(f"loaded in {time.time() - t0:.0f} s; indexing …", flush=True)
    t1 = time.time()
    for name, keys in INDEXES.items():
        coll.create_index(keys, name=name)
    print(f"indexed in {time.time() - t1:.0f} s", flush=True)


def main():
    # One account for the loaded events, kept with them between runs.
    email = "query-bench@example.com"
    api = start("sluice-api", service_env(f"qbench-{uuid.uuid4().hex}", DB, PORT), PORT)
    try:
        db = pymongo.MongoClient(MONGO)[DB]
        try:
            call("/api/v1/auth/register", body={"email": email, "password": "bench-password-123"})
        except urllib.error.HTTPError:
            pass  # registered by an earlier run
        token = call("/api/v1/auth/login", body={"email": email, "password": "bench-password-123"})["token"]
        account = call("/api/v1/auth/me", token)["accountId"]
        load(db, account)
        t_mid = datetime(2026, 11, 10, tzinfo=timezone.utc)
        shapes = {
            "newest page (account only)": lambda r: {},
            "eventType": lambda r: {"eventType": r.choice(TYPES)},
            "userId": lambda r: {"userId": f"user_{r.randrange(USERS)}"},
            "sessionId": lambda r: {"sessionId": f"s_{r.randrange(SESSIONS)}"},
            "from/to (one day)": lambda r: {
                "from": (t_mid + timedelta(hours=r.randrange(200))).isoformat().replace("+00:00", "Z"),
                "to": (t_mid + timedelta(hours=r.randrange(200) + 24)).isoformat().replace("+00:00", "Z")},
            "eventType + from/to": lambda r: {
                "eventType": r.choice(TYPES),
                "from": (t_mid + timedelta(hours=r.randrange(200))).isoformat().replace("+00:00", "Z"),
                "to": (t_mid + timedelta(hours=r.randrange(200) + 24)).isoformat().replace("+00:00", "Z")},
        }
        rng = random.Random(11)
        print(f"\n{REQUESTS} requests per shape, limit 100, api target/{PROFILE}, {EVENTS:,} events:")
        print("| query shape | page 1 p50 | page 1 p99 | page 2 (cursor) p50 | page 2 p99 |")
        print("| --- | --- | --- | --- | --- |")
        for name, params in shapes.items():
            first, second = [], []
            for _ in range(REQUESTS):
                q = params(rng)
                q["limit"] = "100"
                t0 = time.perf_counter()
                page = call("/api/v1/events?" + urllib.parse.urlencode(q), token)
                first.append((time.perf_counter() - t0) * 1000)
                if page.get("nextBefore"):
                    q["before"] = page["nextBefore"]
                    t0 = time.perf_counter()
                    call("/api/v1/events?" + urllib.parse.urlencode(q), token)
                    second.append((time.perf_counter() - t0) * 1000)
            pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
            print(f"| {name} | {pct(first, .5):.0f} ms | {pct(first, .99):.0f} ms | "
                  f"{pct(second, .5):.0f} ms | {pct(second, .99):.0f} ms |", flush=True)
    finally:
        stop(api)


if __name__ == "__main__":
    main()
