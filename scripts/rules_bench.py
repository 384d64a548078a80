#!/usr/bin/env python3
"""Rules: what they cost and how fast they speak. Two figures for docs/RULES.md:

1. The delay from a triggering event's 202 to its anomaly on a WebSocket client: a threshold rule
   (`>= 1` in a 1 s window, no cooldown) fires on each event sent after a quiet window; ROUNDS
   rounds, p50 / p99 / max.
2. The worker's storage rate with and without 20 active rules on the events' account: with the
   worker stopped, EVENTS events are queued in batches of 500; a worker is started and timed until
   MongoDB holds them all. Each phase gets a fresh MongoDB database (the stand-in slows as it
   fills) and the phases alternate (without, with, without, with).

Runs api and worker processes of its own (ports 3021/3023, a key prefix and databases of their
own) on the infrastructure `make up` / `make infra` started; the binaries from target/release if
built, else target/debug (say which in the figures). Usage: .venv/bin/python scripts/rules_bench.py
Env: ROUNDS (40), EVENTS (20000), PROFILE (release or debug).
"""
import asyncio, json, os, statistics, subprocess, sys, time, uuid

from benchkit import MONGO, PROFILE, Api, service_env, start, stop

ROUNDS = int(os.environ.get("ROUNDS", "40"))
EVENTS = int(os.environ.get("EVENTS", "20000"))
API, WORKER = 3021, 3023
call = Api(API, timeout=30).call

try:
    import websockets
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "websockets==13.1"], check=True)
    import websockets


def env(run):
    return service_env(f"bench-{run}", f"sluice_bench_{run[:12]}", API, WORKER)


def rule(token, name, condition, cooldown=300):
    status, body = call("POST", "/api/v1/rules", {"name": name, "severity": "warning",
                                                  "cooldownSeconds": cooldown,
                                                  "condition": condition}, token=token)
    assert status == 201, body


async def latency():
    run = uuid.uuid4().hex
    api, worker = start("sluice-api", env(run), API), start("sluice-worker", env(run), WORKER)
    try:
        token, key, _ = Api(API).tenant()
        rule(token, "each event", {"type": "threshold", "eventType": "ping", "windowSeconds": 1,
                                   "operator": ">=", "value": 1}, cooldown=0)
        await asyncio.sleep(1.5)
        delays = []
        async with websockets.connect(f"ws://127.0.0.1:{API}/api/v1/live",
                                      subprotocols=["sluice.live", f"bearer.{token}"]) as ws:
            json.loads(await ws.recv())  # hello
            for i in range(ROUNDS):
                await asyncio.sleep(2.2)  # the 1 s window and its edge flag lapse
                status, _ = call("POST", "/api/v1/events/batch",
                                 {"events": [{"eventType": "ping", "userId": "u", "eventId": f"p{i}"}]},
                                 key=key)
                assert status == 202
                t0 = time.perf_counter()
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if msg["type"] == "anomaly":
                        break
                delays.append((time.perf_counter() - t0) * 1000)
        delays.sort()
        p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]
        print(f"202 → WebSocket anomaly over {len(delays)} rounds: p50 {p(0.5):.0f} ms, "
              f"p99 {p(0.99):.0f} ms, max {delays[-1]:.0f} ms", flush=True)
    finally:
        stop(worker)
        stop(api)


def twenty_rules(token):
    for i in range(10):
        rule(token, f"threshold {i}", {"type": "threshold", "eventType": "purchase",
                                       "where": {"plan": "pro" if i % 2 else "free"},
                                       "windowSeconds": 60 * (i + 1), "operator": ">",
                                       "value": 10_000_000})
    for i in range(10):
        rule(token, f"zscore {i}", {"type": "zscore", "eventType": "purchase",
                                    "bucketSeconds": 10 * (i + 1), "baselineBuckets": 5,
                                    "threshold": 50, "direction": "both"})


def stored(run, account):
    import pymongo
    client = pymongo.MongoClient(MONGO)
    try:
        return client[f"sluice_bench_{run[:12]}"].events.count_documents({"accountId": account})
    finally:
        client.close()


def drain(with_rules):
    run = uuid.uuid4().hex
    api = start("sluice-api", env(run), API)
    try:
        token, key, account = Api(API).tenant()
        if with_rules:
            twenty_rules(token)
        for b in range(EVENTS // 500):
            events = [{"eventType": "purchase", "userId": f"u{i % 50}", "eventId": f"e{b}-{i}",
                       "properties": {"plan": "pro" if i % 2 else "free", "amount": i}}
                      for i in range(500)]
            status, _ = call("POST", "/api/v1/events/batch", {"events": events}, key=key)
            assert status == 202, status
        worker = start("sluice-worker", env(run), WORKER)
        t0 = time.perf_counter()
        try:
            while stored(run, account) < EVENTS:
                time.sleep(0.2)
            secs = time.perf_counter() - t0
        finally:
            stop(worker)
        rate = EVENTS / secs
        print(f"  {'with 20 rules' if with_rules else 'without rules'}: {EVENTS} events stored in "
              f"{secs:.1f} s = {rate:,.0f} events/s", flush=True)
        return rate
    finally:
        stop(api)


def main():
    print(f"binaries: target/{PROFILE}", flush=True)
    asyncio.run(latency())
    print(f"worker storage rate, {EVENTS} events queued first (MongoDB: the stand-in on this box):", flush=True)
    rates = {False: [], True: []}
    for with_rules in (False, True, False, True):
        rates[with_rules].append(drain(with_rules))
    a, b = statistics.mean(rates[False]), statistics.mean(rates[True])
    print(f"mean: without {a:,.0f} events/s, with 20 rules {b:,.0f} events/s ({(b / a - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
