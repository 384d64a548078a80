#!/usr/bin/env python3
"""Export at scale: EVENTS (1,000,000) stored events of one account exported through
`GET /api/v1/export/events` as NDJSON, with the api's resident memory sampled from /proc every
100 ms. The figure issue 18 asks of `make bench` (which runs this and puts its line in
docs/PERFORMANCE.md): the rate, and the api's RSS before and at its peak — flat whatever the size,
since the body is streamed from a cursor.

The events are written straight into MongoDB (the worker's document shape, in batches of 10,000:
the stand-in stores a few thousand a second, so this part takes minutes), for an account
registered through the api. Runs an api process of its own (port 3041, its own database, dropped
at the end) on the infrastructure `make up` / `make infra` started; the binary from
target/$PROFILE (release if built, else debug).
Usage: .venv/bin/python scripts/export_bench.py [--json FILE]   Env: EVENTS, PROFILE.
"""
import datetime, json, os, sys, threading, time, urllib.request, uuid
from pathlib import Path

import pymongo

from benchkit import MONGO, PROFILE, ROOT, Api, service_env, start, stop

EVENTS = int(os.environ.get("EVENTS", "1000000"))
API = 3041


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    run = uuid.uuid4().hex
    database = f"sluice_xbench_{run[:12]}"
    env = service_env(
        f"xbench-{run}", database, API,
        # The stand-in (one Python process) answers nothing else while it gathers a 1 M-document
        # result: with Sluice's 2 s connect timeout, which is also the driver's heartbeat timeout,
        # the driver declares the server down mid-query and the export fails with 503 (seen at
        # 1,000,000 events). A real MongoDB answers heartbeats while it reads.
        MONGO__URL=MONGO + ("&" if "?" in MONGO else "?") + "connectTimeoutMS=1800000")
    env["RUST_LOG"] = "info"
    log = ROOT / "artifacts" / "bench" / "export-api.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    api = start("sluice-api", env, API, stdout=log.open("w"))
    client = pymongo.MongoClient(MONGO)
    try:
        token, _, account = Api(API).tenant("xbench")

        events = client[database].events
        # The index the export reads through (the worker creates it at start; none runs here).
        events.create_index([("accountId", 1), ("timestamp", -1), ("_id", -1)], name="q_account_time")
        t0 = time.monotonic()
        first = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        for b in range(0, EVENTS, 10_000):
            docs = []
            for i in range(b, min(EVENTS, b + 10_000)):
                ts = first + datetime.timedelta(seconds=i)
                docs.append({"_id": f"{account}:e{i}", "eventId": f"e{i}", "accountId": account,
                             "eventType": ("purchase", "view", "signup")[i % 3], "userId": f"u{i % 5000}",
                             "timestamp": ts, "receivedAt": ts,
                             "properties": {"amount": i % 1000, "plan": "pro" if i % 2 else "free"}})
            events.insert_many(docs, ordered=False)
        print(f"stored {EVENTS:,} events in {time.monotonic() - t0:.0f} s (straight into MongoDB)", flush=True)

        before = rss_mib(api.pid)
        peak, done = [before], threading.Event()

        def sample():
            while not done.is_set() and api.poll() is None:
                peak[0] = max(peak[0], rss_mib(api.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        req = urllib.request.Request(f"http://127.0.0.1:{API}/api/v1/export/events")
        req.add_header("authorization", f"Bearer {token}")
        t0 = time.monotonic()
        lines = size = 0
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                while chunk := r.read(1 << 16):
                    lines += chunk.count(b"\n")
                    size += len(chunk)
        finally:
            done.set()
            sampler.join()
        secs = time.monotonic() - t0
        assert lines == EVENTS, f"exported {lines} of {EVENTS}"
        result = {"events": lines, "mib": round(size / 2**20, 1), "secs": round(secs, 1),
                  "events_per_sec": round(lines / secs), "rss_before_mib": round(before),
                  "rss_peak_mib": round(peak[0]), "profile": PROFILE}
        print(f"export: {lines:,} events ({result['mib']} MiB NDJSON) in {secs:.1f} s = "
              f"{result['events_per_sec']:,} events/s; api RSS {before:.0f} MiB before, "
              f"{peak[0]:.0f} MiB at most during ({PROFILE} build)", flush=True)
        if out:
            Path(out).write_text(json.dumps(result))
    finally:
        stop(api)
        client.drop_database(database)
        client.close()


if __name__ == "__main__":
    main()
