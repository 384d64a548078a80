#!/usr/bin/env python3
"""Privacy: what a user's deletion and export cost. Figures for docs/PRIVACY.md:

1. Export: one user's USER_EVENTS events through `GET /api/v1/users/{userId}/export` (events/s).
2. Deletion: `suppress_with_delete` of that user, timed from the 202 to `finished`, while
   LOADERS clients offer RATE events/s of other users in batches of 100 (a rate the worker stores,
   so the backlog a deletion waits for stays small); accepted events/s and request latency for
   LOAD_SECS before the deletion and during it, side by side.

Runs api and worker processes of its own (ports 3031/3033, a key prefix and a MongoDB database of
their own) on the infrastructure `make up` / `make infra` started; the binaries from
target/release if built, else target/debug (say which with the figures). The MongoDB stand-in
stores a few thousand events a second: USER_EVENTS takes a while to store first.
Usage: .venv/bin/python scripts/privacy_bench.py   Env: USER_EVENTS (100000), LOADERS (4), RATE (800),
LOAD_SECS (10), PROFILE (release or debug).
"""
import os, threading, time, urllib.error, uuid

from benchkit import MONGO, PROFILE, Api, service_env, start, stop

USER_EVENTS = int(os.environ.get("USER_EVENTS", "100000"))
LOADERS = int(os.environ.get("LOADERS", "4"))
LOAD_SECS = float(os.environ.get("LOAD_SECS", "10"))
RATE = int(os.environ.get("RATE", "800"))
API, WORKER = 3031, 3033
call = Api(API).call


def env(run):
    return service_env(f"pbench-{run}", f"sluice_pbench_{run[:12]}", API, WORKER,
                       AUTH__KEY_QUOTA_PER_SEC="1000000", AUTH__KEY_QUOTA_BURST="1000000")


def stored(run, account, user=None):
    import pymongo
    client = pymongo.MongoClient(MONGO)
    try:
        q = {"accountId": account}
        if user:
            q["userId"] = user
        return client[f"sluice_pbench_{run[:12]}"].events.count_documents(q)
    finally:
        client.close()


def drop(run):
    import pymongo
    client = pymongo.MongoClient(MONGO)
    client.drop_database(f"sluice_pbench_{run[:12]}")
    client.close()


def load(key, secs, tag):
    """RATE events/s offered in batches of 100 by LOADERS clients (open loop, a rate the worker
    keeps up with, so the backlog stays small); (accepted events/s, p50 ms, p99 ms, shed)."""
    until, lat, accepted, shed = time.monotonic() + secs, [], [0], [0]
    every = LOADERS * 100 / RATE

    def client(i):
        n, due = 0, time.monotonic() + i * every / LOADERS
        while due < until:
            time.sleep(max(0.0, due - time.monotonic()))
            due += every
            events = [{"eventType": "view", "userId": f"other-{j % 50}", "eventId": f"{tag}-{i}-{n}-{j}"}
                      for j in range(100)]
            n += 1
            t = time.monotonic()
            try:
                status, body = call("POST", "/api/v1/events/batch", {"events": events}, key=key)
                lat.append(time.monotonic() - t)
                accepted[0] += body["accepted"]
            except urllib.error.HTTPError as e:
                shed[0] += 100 if e.code == 503 else 0

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(LOADERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return accepted[0] / (time.monotonic() - t0), pct(0.5), pct(0.99), shed[0]


def main():
    run = uuid.uuid4().hex
    print(f"binaries: target/{PROFILE}; {USER_EVENTS} events of one user", flush=True)
    api, worker = start("sluice-api", env(run), API), start("sluice-worker", env(run), WORKER)
    try:
        token, key, account = Api(API).tenant("pbench")
        t0 = time.monotonic()
        for b in range(USER_EVENTS // 1000):
            events = [{"eventType": "purchase", "userId": "victim", "eventId": f"v{b}-{i}",
                       "properties": {"amount": i, "plan": "pro"}} for i in range(1000)]
            status, _ = call("POST", "/api/v1/events/batch", {"events": events}, key=key)
            assert status == 202, status
        while stored(run, account, "victim") < USER_EVENTS:
            time.sleep(1)
        print(f"stored {USER_EVENTS} events of the user in {time.monotonic() - t0:.0f} s", flush=True)

        t0 = time.monotonic()
        status, body = call("GET", "/api/v1/users/victim/export", token=token, raw=True)
        secs = time.monotonic() - t0
        lines = body.count(b"\n")
        assert status == 200 and lines == USER_EVENTS, (status, lines)
        print(f"export: {lines} events ({len(body) / 2**20:.1f} MiB NDJSON) in {secs:.1f} s = "
              f"{lines / secs:,.0f} events/s", flush=True)

        before = load(key, LOAD_SECS, "before")
        print(f"ingest before the deletion: {before[0]:,.0f} events/s accepted of {RATE} offered, "
              f"p50 {before[1]:.1f} ms, p99 {before[2]:.1f} ms, shed {before[3]}", flush=True)
        status, reg = call("POST", "/api/v1/regulations", {"type": "suppress_with_delete", "userIds": ["victim"]},
                           token=token)
        assert status == 202, reg
        t0 = time.monotonic()
        result = {}

        def wait_finished():
            while True:
                _, r = call("GET", f"/api/v1/regulations/{reg['id']}", token=token)
                if r["status"] in ("finished", "failed"):
                    result.update(r, secs=time.monotonic() - t0)
                    return
                time.sleep(0.2)

        waiter = threading.Thread(target=wait_finished)
        waiter.start()
        during, n = [], 0
        while waiter.is_alive():
            during.append(load(key, min(LOAD_SECS, 5), f"during{n}"))
            n += 1
        waiter.join()
        left = stored(run, account, "victim")
        print(f"suppress_with_delete: {result['status']} after {result['secs']:.1f} s; counts {result['counts']}; "
              f"events of the user left: {left}", flush=True)
        rate = sum(d[0] for d in during) / len(during)
        print(f"ingest during the deletion: {rate:,.0f} events/s accepted of {RATE} offered, "
              f"p50 {max(d[1] for d in during):.1f} ms, p99 {max(d[2] for d in during):.1f} ms (worst window), "
              f"shed {sum(d[3] for d in during)}", flush=True)
    finally:
        stop(worker)
        stop(api)
        drop(run)


if __name__ == "__main__":
    main()
