#!/usr/bin/env python3
"""The Redis Cluster suite (issue 13, item 4), on processes of its own.

It starts a six-node Redis Cluster of its own with scripts/redis_cluster.sh (3 masters, 3 replicas,
ports --base-port.. +5, default 7101-7106, and their bus ports +10000; data, logs and pid files in
a temporary SLUICE_DATA_DIR, as scripts/test_redis_cluster.sh does, so `make up REDIS=cluster` on
7001-7006 is never touched), then one `sluice-api` and three `sluice-worker` processes
(target/$PROFILE/, built if missing) on free ports, pointed at the cluster by its seed list, with a
Redis key prefix (`cluster-<uuid>`), a MongoDB database (`sluice_cluster_<id>`), a JWT secret and
accounts of their own, against the shared PostgreSQL and MongoDB. Whatever happens it stops its
processes, drops its database, deletes every key of its prefix (SCAN MATCH on every master), stops
the cluster and removes its data dir (kept, with the nodes' logs, when something failed).

Setup: 400 events are queued before any worker runs and read back from the streams, which checks
the packed entries (`e`: a JSON array of events, `rid`: their shared request id or one per event,
`n`: their count) and that this file's
copy of the placement (SHA-256 of `accountId:eventId`, last 8 bytes mod P) is the services' one;
the suite then knows which partitions, and so which master, each event goes to.

Scenarios (`--only a,b,c`; each prints its figures, all go to artifacts/cluster/report.json):
  (a) 20,000 distinct events, singles and batches of 2-250 mixed, from 8 concurrent clients as
      fast as they go, plus 1,000 repeats of eventIds already accepted (400 alone, 600 inside
      batches of new events): every repeat answered `duplicate` (200 alone); the partitions'
      `queued` counters grow by exactly 20,000 (and the stream entries, when not trimmed
      meanwhile, carry each event once); after the drain MongoDB holds exactly those 20,000, none
      twice, none in events_dlq or events_quarantine.
  (b) an open-loop load (--rate events/s, singles and batches of 20), then kill -9 of the master
      owning the slot of `{p0}`; its replica takes over, and the suite starts the killed node
      again (`redis_cluster.sh up`: it rejoins as a replica) once the promotion is seen. Clients
      may see only 2xx, or 503 with Retry-After (they retry those, with the same eventIds): no
      other status, no timeout, no reset connection. Ingest must resume (an event of the killed
      master's partitions acknowledged on a request sent after the kill) within 60 s. After the
      drain, acknowledged events missing from MongoDB are counted: replication is asynchronous,
      so the newest writes of the killed master may be lost. THE BOUND: at most the events of the
      killed master's partitions first acknowledged from LOSS_WINDOW_SECS (1 s) before the kill
      to 1 s after it (an answer read after the kill may carry a write made just before it); any
      older loss means data the replica had long been sent was lost, and fails. Run twice: with
      SLUICE_REDIS__WAIT_REPLICAS=0, then =1, where no event answered 202 may be lost at all
      (WAIT made the replica have it); the cost of WAIT is shown by a closed-loop probe of single
      events (req/s, p50, p99) and the open-loop latencies before the kill, side by side.
      With wait_replicas=1 the promoted master has no replica until the killed node is back, so
      its partitions answer 503 until then: the resume time includes the restart.
  (c) the same open-loop load while `redis-cli --cluster reshard` moves a slot range from one
      master to another (at least --reshard-slots 500; redis-cli moves the source's lowest slots,
      so the count is raised to reach the slot of the partition tag nearest the start of its
      master's slots: 897 on a fresh cluster with P=8, taking `{p1}`): clients see only 2xx/503,
      the slot is the target's afterwards, `redis-cli --cluster check` is clean, and every
      acknowledged event is stored exactly once.

The workers run with claim_interval 2 s and claim_min_idle 10 s (instead of 30 s / 60 s), so an
entry left pending by a failover is picked up again within seconds rather than a minute and a half.

Exit 1 on any violation, each named. `--selftest` runs only the cluster machinery (bring-up, the
kill -9 / promotion / restart, the reshard and its check, cleanup) with plain XADDs, no services.

Usage: scripts/cluster_suite.py                   (make test-cluster; about 95 s alone)
       scripts/cluster_suite.py --only b --rate 2000
       scripts/cluster_suite.py --selftest
The environment is passed on to the services (e.g. RUST_LOG, PROFILE=release).
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"

try:
    import pymongo  # the project's .venv has it (scripts/stack.sh installs the MongoDB stand-in there)
except ImportError:
    if VENV_PY.exists() and Path(sys.prefix).resolve() != VENV_PY.parent.parent.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])
    sys.exit("cluster_suite: pymongo is missing; run `scripts/stack.sh install` (it creates .venv)")

sys.path.insert(0, str(ROOT / "scripts"))
sys.dont_write_bytecode = True  # no scripts/__pycache__ from importing soak.py
from soak import (  # noqa: E402 — the soak's Redis client, service and HTTP helpers
    IDLE_REUSE_SECS, Redis, RedisError, Service, admin, backlog_of, binaries, free_port, key_slot,
    partition_stream, read_response)

CLUSTER_SH = ROOT / "scripts" / "redis_cluster.sh"
HOST = "127.0.0.1"
SLOTS = 16384
# (b): what a failover may lose, around the kill (see the docstring), and how long it may take.
LOSS_WINDOW_SECS = 1.0
RESUME_DEADLINE_SECS = 60
# What a batch item may say besides accepted/duplicate and still be retried: the api shed it.
SHED_ITEM_CODES = ("unavailable", "overloaded")
MAX_ATTEMPTS = 300


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="a,b,c", help="scenarios to run, e.g. a,c (always in the order a, c, b)")
    p.add_argument("--selftest", action="store_true",
                   help="only the cluster machinery (up, kill -9 and restart, reshard, down); no services")
    p.add_argument("--profile", default=os.environ.get("PROFILE", "debug"), choices=("debug", "release"))
    p.add_argument("--bin-dir", help="run sluice-api and sluice-worker from this folder instead of "
                                     "target/<profile>/ (built there if missing)")
    p.add_argument("--base-port", type=int, default=int(os.environ.get("SLUICE_SUITE_CLUSTER_BASE_PORT", 7101)),
                   help="first of the six cluster ports (7101; bus ports are +10000)")
    p.add_argument("--node-timeout-ms", type=int, default=int(os.environ.get("SLUICE_CLUSTER_NODE_TIMEOUT_MS", 5000)),
                   help="cluster-node-timeout of the suite's cluster (redis_cluster.sh's default, 5000)")
    p.add_argument("--partitions", type=int, default=int(os.environ.get("SLUICE_REDIS__PARTITIONS") or 8))
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--connections", type=int, default=8, help="concurrent HTTP clients")
    p.add_argument("--events", type=int, default=20_000, help="(a): distinct events")
    p.add_argument("--repeats", type=int, default=1_000, help="(a): repeats of accepted eventIds")
    p.add_argument("--rate", type=int, default=1_000, help="(b), (c): events/s offered (open loop)")
    p.add_argument("--batch", type=int, default=20, help="(b), (c): events per batch request")
    p.add_argument("--single-share", type=float, default=0.2, help="(b), (c): share of events sent alone")
    p.add_argument("--probe-secs", type=float, default=3.0, help="(b): closed-loop single-event probe")
    p.add_argument("--steady-secs", type=float, default=6.0, help="(b): open-loop load before the kill")
    p.add_argument("--after-resume-secs", type=float, default=4.0, help="(b): load after ingest resumed")
    p.add_argument("--reshard-slots", type=int, default=500, help="(c): slots to move, at least")
    p.add_argument("--request-timeout-secs", type=float, default=20.0)
    p.add_argument("--drain-timeout-secs", type=int, default=240)
    p.add_argument("--postgres-url", default=os.environ.get(
        "SLUICE_POSTGRES__URL", "postgres://postgres@127.0.0.1:5433/sluice"))
    p.add_argument("--mongo-url", default=os.environ.get(
        "SLUICE_MONGO__URL", "mongodb://127.0.0.1:27018/?directConnection=true"))
    p.add_argument("--out", default=str(ROOT / "artifacts" / "cluster"),
                   help="where report.json and the services' logs go")
    a = p.parse_args()
    # The reshard (c) runs on the cluster as created, before the failovers of (b) have moved the
    # masters around: once (1 run in 3), after them, redis-cli's migration of the {p1} slot's keys
    # stalled for minutes; why is not understood yet (issue 13's closing note).
    a.scenarios = [s for s in "acb" if s in {x.strip() for x in a.only.split(",") if x.strip()}]
    bad = {x.strip() for x in a.only.split(",") if x.strip()} - set("abc")
    if bad or not a.scenarios:
        p.error(f"--only takes a comma-separated subset of a,b,c, not {a.only!r}")
    return a


class SuiteError(RuntimeError):
    """Something the suite cannot go on after (its cluster would not start, a service died)."""


T0 = time.monotonic()


def log(msg):
    print(f"cluster_suite [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def placement(account, event_id, partitions):
    """The partition of an event, as shared/src/partition.rs places it."""
    d = hashlib.sha256(f"{account}:{event_id}".encode()).digest()
    return int.from_bytes(d[24:32], "big") % partitions


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def lat(values):
    ms = lambda x: None if x is None else round(x * 1000, 1)  # noqa: E731
    return {"n": len(values), "p50_ms": ms(pct(values, 0.5)), "p99_ms": ms(pct(values, 0.99)),
            "max_ms": ms(max(values) if values else None)}


def secs(x):
    return None if x is None else round(x, 2)


# ---------------------------------------------------------------------------------------------
# The cluster: scripts/redis_cluster.sh on the suite's own ports and data dir.

class TestCluster:
    def __init__(self, args):
        self.ports = list(range(args.base_port, args.base_port + 6))
        self.data = Path(tempfile.mkdtemp(prefix="sluice-cluster-suite.", dir=os.environ.get("TMPDIR", "/tmp")))
        self.env = dict(os.environ)
        self.env.pop("SLUICE_CLUSTER_BASE_PORT", None)
        self.env.update(SLUICE_DATA_DIR=str(self.data), SLUICE_CLUSTER_PORTS=" ".join(map(str, self.ports)),
                        SLUICE_CLUSTER_NODE_TIMEOUT_MS=str(args.node_timeout_ms))
        self.seeds = ",".join(f"redis://{HOST}:{p}" for p in self.ports)
        self.redis = Redis(self.seeds, timeout=3)
        self.started = self.ever_started = False

    def preflight(self):
        wanted = self.ports + [p + 10000 for p in self.ports]
        busy = [p for p in wanted if port_open(p)]
        if not busy:
            return
        # Nodes of an earlier run of this suite that was killed before its cleanup: their dir says so.
        leftovers = set()
        for p in self.ports:
            try:
                d = self.redis.node_cmd((HOST, p), "CONFIG", "GET", "dir")[1]
            except (OSError, RedisError, IndexError):
                continue
            m = re.match(r"(.*/sluice-cluster-suite\.[^/]+)/redis-cluster/\d+$", d or "")
            if m:
                leftovers.add(m.group(1))
        for d in sorted(leftovers):
            log(f"stopping the nodes an earlier suite run left behind ({d})")
            subprocess.run([str(CLUSTER_SH), "down"], env={**self.env, "SLUICE_DATA_DIR": d}, cwd=ROOT,
                           capture_output=True, timeout=120)
            shutil.rmtree(d, ignore_errors=True)
        busy = [p for p in wanted if port_open(p)]
        if busy:
            raise SuiteError(f"ports {busy} are in use; the suite's cluster needs {self.ports[0]}-{self.ports[-1]} "
                             f"and {self.ports[0] + 10000}-{self.ports[-1] + 10000} (choose others with --base-port)")

    def script(self, *args, timeout=240):
        r = subprocess.run([str(CLUSTER_SH), *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise SuiteError(f"redis_cluster.sh {' '.join(args)} exited with {r.returncode}:\n"
                             f"{(r.stdout + r.stderr)[-3000:]}")
        return r.stdout + r.stderr

    async def ascript(self, *args, timeout=240):
        proc = await asyncio.create_subprocess_exec(str(CLUSTER_SH), *args, env=self.env, cwd=ROOT,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise SuiteError(f"redis_cluster.sh {' '.join(args)} did not finish in {timeout}s")
        if proc.returncode != 0:
            raise SuiteError(f"redis_cluster.sh {' '.join(args)} exited with {proc.returncode}:\n"
                             f"{out.decode(errors='replace')[-3000:]}")
        return out.decode(errors="replace")

    def up(self):
        self.started = self.ever_started = True  # from the first node started on, down must run
        out = self.script("up")
        self.redis.slot_map = None
        return out

    def down(self):
        if self.started:
            self.script("down", timeout=180)
            self.started = False

    def nodes(self):
        """CLUSTER NODES as the first answering node sees it: [{id, port, flags, master, master_id,
        failed, slots: [(first, last)]}]."""
        last = None
        for p in self.ports:
            try:
                text = self.redis.node_cmd((HOST, p), "CLUSTER", "NODES")
            except (OSError, RedisError) as e:
                last = e
                continue
            out = []
            for line in text.splitlines():
                f = line.split()
                if len(f) < 8:
                    continue
                flags = f[2].split(",")
                slots = []
                for s in f[8:]:
                    if s.startswith("["):
                        continue
                    a, _, b = s.partition("-")
                    slots.append((int(a), int(b or a)))
                out.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]), "flags": flags,
                            "master": "master" in flags, "master_id": f[3],
                            "failed": "fail" in flags or "fail?" in flags, "slots": slots})
            return out
        raise SuiteError(f"no node of the cluster answers CLUSTER NODES: {last!r}")

    @staticmethod
    def owner(slot, nodes):
        for n in nodes:
            if n["master"] and not n["failed"] and any(a <= slot <= b for a, b in n["slots"]):
                return n
        raise SuiteError(f"no live master serves slot {slot}")

    @staticmethod
    def replica_of(master, nodes):
        for n in nodes:
            if not n["master"] and not n["failed"] and n["master_id"] == master["id"]:
                return n
        raise SuiteError(f"master {master['port']} has no live replica")

    def role(self, port):
        try:
            return self.redis.node_cmd((HOST, port), "ROLE")[0]
        except (OSError, RedisError, IndexError, TypeError):
            return None

    def state(self, port):
        try:
            info = self.redis.node_cmd((HOST, port), "CLUSTER", "INFO")
        except (OSError, RedisError):
            return None
        m = re.search(r"cluster_state:(\w+)", info)
        return m.group(1) if m else None

    def repl(self, port):
        """(master_repl_offset, the first replica's acknowledged offset) of a master."""
        try:
            info = self.redis.info((HOST, port), "replication")
        except (OSError, RedisError):
            return None, None
        off = int(info.get("master_repl_offset", 0))
        m = re.search(r"offset=(\d+)", info.get("slave0", ""))
        return off, int(m.group(1)) if m else None

    def pid(self, port):
        pid = int((self.data / "run" / f"redis-cluster-{port}.pid").read_text().strip())
        info = self.redis.info((HOST, port), "server")
        if int(info.get("process_id", -1)) != pid:
            raise SuiteError(f"the pid file of {port} names {pid}, the node says {info.get('process_id')}")
        return pid

    def kill9(self, port):
        pid = self.pid(port)
        os.kill(pid, signal.SIGKILL)
        return pid

    def reshard_plan(self, streams, at_least):
        """The partition stream whose slot is nearest the start of its master's slot list (redis-cli
        moves a source's lowest slots first), the source, a target, and how many slots to move."""
        nodes = self.nodes()
        masters = sorted((n for n in nodes if n["master"] and not n["failed"] and n["slots"]), key=lambda n: n["port"])
        best = None
        for p, key in enumerate(streams):
            slot = key_slot(key)
            src = self.owner(slot, nodes)
            below = sum(min(b, slot - 1) - a + 1 for a, b in src["slots"] if a < slot)
            need = max(at_least, below + 1)
            if best is None or need < best["slots"]:
                dst = next(m for m in masters if m["id"] != src["id"])
                best = {"partition": p, "stream": key, "slot": slot, "slots": need, "source": src, "target": dst}
        return best

    def check(self, within=15):
        """`redis-cli --cluster check` clean (every node agrees, no open slot, all slots covered),
        retried for `within` seconds: a slot's new owner reaches the replicas by gossip."""
        deadline = time.monotonic() + within
        while True:
            r = subprocess.run(["redis-cli", "--cluster", "check", f"{HOST}:{self.ports[0]}"], capture_output=True,
                               text=True, timeout=60)
            out = r.stdout + r.stderr
            ok = r.returncode == 0 and f"All {SLOTS} slots covered" in out and "[WARNING]" not in out \
                and "[ERR]" not in out
            if ok or time.monotonic() > deadline:
                return ok, out
            time.sleep(0.5)


async def watch_failover(cluster, victim, replica, t_kill, fo):
    """Times the promotion of `replica` and the survivors' cluster_state:ok, then starts the killed
    node again (it rejoins as a replica of the promoted one)."""
    survivors = [p for p in cluster.ports if p != victim["port"]]
    deadline = t_kill + RESUME_DEADLINE_SECS
    while time.monotonic() < deadline:
        role = await asyncio.to_thread(cluster.role, replica["port"])
        if role == "master" and "promoted_secs" not in fo:
            fo["promoted_secs"] = secs(time.monotonic() - t_kill)
        if "promoted_secs" in fo:
            states = await asyncio.to_thread(lambda: [cluster.state(p) for p in survivors])
            if all(s == "ok" for s in states):
                fo["cluster_ok_secs"] = secs(time.monotonic() - t_kill)
                break
        await asyncio.sleep(0.1)
    if "cluster_ok_secs" not in fo:
        fo["error"] = f"replica {replica['port']} not promoted, or the cluster not ok, {RESUME_DEADLINE_SECS}s after the kill"
    t = time.monotonic()
    try:
        await cluster.ascript("up")
        fo["rejoined_secs"] = secs(time.monotonic() - t_kill)
        fo["restart_took_secs"] = secs(time.monotonic() - t)
    except SuiteError as e:
        fo["restart_error"] = str(e)
    role = await asyncio.to_thread(cluster.role, victim["port"])
    fo["killed_node_after"] = "replica" if role == "slave" else role


# ---------------------------------------------------------------------------------------------
# The clients: keep-alive HTTP/1.1 over asyncio (soak.py's way), with a ledger of every answer.

class Job:
    __slots__ = ("events", "single", "label", "attempts")

    def __init__(self, events, single, label=None):
        self.events, self.single = events, single
        self.label = label or ("single" if single else "batch")
        self.attempts = 0


class Ledger:
    """What one scenario sent and what it was told."""

    def __init__(self, name, account, partitions, victim_parts=None):
        self.name, self.account, self.partitions = name, account, partitions
        self.victim_parts = victim_parts   # partitions of the master killed in (b), when known
        self.sent = set()                  # every eventId sent
        self.acks = {}                     # eventId -> time of its first 202/200 answer
        self.accepted = Counter()          # eventId -> `accepted` answers
        self.duplicates = 0
        self.repeats = set()               # eventIds sent again on purpose
        self.repeat_answers = Counter()
        self.status = Counter()
        self.shed_events = 0               # events answered 503 (or shed as a batch item), then retried
        self.late = 0                      # events the pacer could not hand to a free client
        self.requests = []                 # (t0, t1, status, events, label, victim events accepted)
        self.violations = []
        self.t_kill = None
        self.first_shed_after_kill = self.last_shed_after_kill = self.t_resume = None
        self._shed_since_kill = False
        self.t0 = time.monotonic()

    def violation(self, what):
        if len(self.violations) < 40:
            self.violations.append(f"({self.name}) t={time.monotonic() - self.t0:.1f}s {what}")
        elif len(self.violations) == 40:
            self.violations.append(f"({self.name}) ... more violations not listed")

    def in_victim(self, eid):
        return self.victim_parts is not None and placement(self.account, eid, self.partitions) in self.victim_parts

    def ack(self, eid, status, now):
        self.acks.setdefault(eid, now)
        if status == "accepted":
            self.accepted[eid] += 1
            if self.accepted[eid] == 2:
                self.violation(f"{eid} was answered `accepted` twice (dedup let it in again)")
        else:
            self.duplicates += 1
        if eid in self.repeats:
            self.repeat_answers[status] += 1

    def stats(self, label=None, since=None, until=None, statuses=(200, 202)):
        return [t1 - t0 for t0, t1, st, _, lb, _ in self.requests
                if st in statuses and (label is None or lb == label)
                and (since is None or t0 >= since) and (until is None or t1 <= until)]


class Load:
    """`connections` keep-alive clients taking jobs from one queue; 503s are retried (same events)."""

    def __init__(self, args, port, key, ledger, connections):
        self.args, self.port, self.key, self.ledger = args, port, key, ledger
        self.connections = connections
        self.queue = asyncio.Queue()
        self.outstanding = 0
        self.closing = False
        self.progress = asyncio.Event()
        self.tasks = [asyncio.create_task(self._client()) for _ in range(connections)]

    def submit(self, job, delay=0.0):
        if job.attempts == 0:
            self.ledger.sent.update(e["eventId"] for e in job.events)
        self.outstanding += 1
        if delay:
            asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, job)
        else:
            self.queue.put_nowait(job)

    def _retry(self, job, delay):
        job.attempts += 1
        if job.attempts >= MAX_ATTEMPTS:
            self.ledger.violation(f"gave up on a request of {len(job.events)} events after {job.attempts} attempts")
            return
        self.submit(job, delay)

    def _done(self):
        self.outstanding -= 1
        self.progress.set()

    async def _client(self):
        reader = writer = None
        idle_since = time.monotonic()
        L = self.ledger
        while not (self.closing and self.outstanding <= 0):
            try:
                job = await asyncio.wait_for(self.queue.get(), 0.2)
            except asyncio.TimeoutError:
                continue
            # Never reuse a keep-alive connection the server may be closing (actix: 5 s idle).
            if writer is not None and (reader.at_eof() or time.monotonic() - idle_since > IDLE_REUSE_SECS):
                writer.close()
                reader = writer = None
            body = json.dumps(job.events[0] if job.single else {"events": job.events}).encode()
            path = "/api/v1/events" if job.single else "/api/v1/events/batch"
            req = (f"POST {path} HTTP/1.1\r\nhost: {HOST}:{self.port}\r\nx-api-key: {self.key}\r\n"
                   f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
            t0 = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, self.port)
                writer.write(req)
                await writer.drain()
                status, headers, rbody = await asyncio.wait_for(read_response(reader), self.args.request_timeout_secs)
            except asyncio.TimeoutError:
                L.violation(f"timeout after {self.args.request_timeout_secs}s ({len(job.events)} events; retried)")
                writer.close()
                reader = writer = None
                self._retry(job, 0.5)
                self._done()
                continue
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
                L.violation(f"connection reset or refused mid-request: {e!r} ({len(job.events)} events; retried)")
                if writer is not None:
                    writer.close()
                reader = writer = None
                self._retry(job, 0.5)
                self._done()
                continue
            t1 = idle_since = time.monotonic()
            try:
                self._answer(job, status, headers, rbody, t0, t1)
            except Exception as e:  # noqa: BLE001 — a body the suite cannot read is the api's violation
                L.violation(f"unreadable {status} answer ({e!r}): {rbody[:200]!r}")
            self._done()
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    def _answer(self, job, status, headers, rbody, t0, t1):
        L = self.ledger
        L.status[status] += 1
        ids = [e["eventId"] for e in job.events]
        victim_acked = 0
        if status in (200, 202):
            reply = json.loads(rbody)
            if job.single:
                st = reply.get("status")
                if st in ("accepted", "duplicate") and reply.get("eventId") == ids[0] \
                        and status == (202 if st == "accepted" else 200):
                    L.ack(ids[0], st, t1)
                    victim_acked = int(st == "accepted" and L.in_victim(ids[0]))
                else:
                    L.violation(f"single event answered {status}: {rbody[:200]!r}")
            else:
                results = reply.get("results") or []
                if len(results) != len(ids):
                    L.violation(f"batch of {len(ids)} answered {status} with {len(results)} results")
                shed, any_accepted = [], False
                for r in results:
                    i, st = r.get("index"), r.get("status")
                    if not isinstance(i, int) or not 0 <= i < len(ids):
                        L.violation(f"batch result with a bad index: {json.dumps(r)[:200]}")
                    elif st in ("accepted", "duplicate"):
                        L.ack(ids[i], st, t1)
                        any_accepted |= st == "accepted"
                        victim_acked += int(st == "accepted" and L.in_victim(ids[i]))
                    elif st == "rejected" and (r.get("error") or {}).get("code") in SHED_ITEM_CODES:
                        shed.append(job.events[i])
                    else:
                        L.violation(f"batch item {st}: {json.dumps(r)[:200]}")
                if any_accepted and status != 202:
                    L.violation(f"a batch with accepted items answered {status}")
                if shed:
                    L.shed_events += len(shed)
                    self._note_shed(t1)
                    self._retry(Job(shed, single=False, label=job.label), 0.5)
            if L.t_kill is not None and t0 > L.t_kill and L.t_resume is None:
                resumed = victim_acked > 0 if L.victim_parts is not None else (
                    L._shed_since_kill and all(e in L.acks for e in ids))
                if resumed:
                    L.t_resume = t1
        elif status == 503:
            ra = headers.get("retry-after", "").strip()
            if not ra.isdigit():
                L.violation(f"503 without a Retry-After: {rbody[:200]!r}")
            L.shed_events += len(ids)
            self._note_shed(t1)
            self._retry(job, min(max(float(ra) if ra.isdigit() else 1.0, 0.2), 1.0))
        else:
            L.violation(f"status {status} ({len(ids)} events): {rbody[:300]!r}")
        L.requests.append((t0, t1, status, len(ids), job.label, victim_acked))

    def _note_shed(self, t):
        L = self.ledger
        if L.t_kill is not None and t > L.t_kill:
            L._shed_since_kill = True
            L.first_shed_after_kill = L.first_shed_after_kill or t
            L.last_shed_after_kill = t

    async def finish(self, timeout):
        """Waits until every job (retries included) has its answer, then stops the clients."""
        t = time.monotonic()
        while self.outstanding > 0 and time.monotonic() - t < timeout:
            await asyncio.sleep(0.1)
        left = self.outstanding
        self.closing = True
        if left > 0:
            self.ledger.violation(f"{left} requests still without a 2xx answer {timeout:.0f}s after the load stopped")
            for task in self.tasks:
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return left


class Events:
    """Fresh events of one scenario: eventIds `<scenario>-<run>-<n>`."""

    def __init__(self, name, run_id):
        self.prefix, self.n = f"{name}-{run_id}-", 0

    def make(self, count):
        out = []
        for _ in range(count):
            n = self.n
            self.n += 1
            out.append({"eventId": f"{self.prefix}{n}", "eventType": "cluster.test", "userId": f"user-{n % 101}",
                        "properties": {"n": n}})
        return out


async def pacer(load, ledger, events, args, stop):
    """Open loop: --rate events/s, a --single-share of them alone, the rest in batches of --batch;
    what finds every client busy (more than 2 jobs queued per client) is not sent (`late`)."""
    budget, last = 0.0, time.monotonic()
    singles = total = 0
    while not stop.is_set():
        now = time.monotonic()
        budget += args.rate * (now - last)
        last = now
        while True:
            single = singles < args.single_share * (total + 1)
            n = 1 if single else args.batch
            if budget < n:
                break
            budget -= n
            total += n
            singles += n if single else 0
            if load.queue.qsize() >= load.connections * 2:
                ledger.late += n
                continue
            load.submit(Job(events.make(n), single=single))
        await asyncio.sleep(0.01)


async def probe(load, events, secs_):
    """Closed loop: every client sends single events back to back for `secs_`."""
    deadline = time.monotonic() + secs_
    while time.monotonic() < deadline:
        while load.outstanding < load.connections:
            load.submit(Job(events.make(1), single=True, label="probe"))
        load.progress.clear()
        try:
            await asyncio.wait_for(load.progress.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


# ---------------------------------------------------------------------------------------------

class Suite:
    def __init__(self, args):
        self.args = args
        self.uuid = uuid.uuid4()
        self.id = self.uuid.hex[:12]
        self.prefix = f"cluster-{self.uuid}"
        self.database = f"sluice_cluster_{self.id}"
        self.P = args.partitions
        self.streams = [partition_stream(self.prefix, p) for p in range(self.P)]
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cluster = TestCluster(args)
        self.redis = self.cluster.redis
        self.api = None
        self.api_wait = None
        self.workers = []
        self.accounts = {}
        self.mongo = None
        self.mapping_ok = False
        self.report = {"run": str(self.uuid), "prefix": self.prefix, "database": self.database,
                       "profile": args.profile, "partitions": self.P, "ports": self.cluster.ports,
                       "node_timeout_ms": args.node_timeout_ms, "scenarios": {}, "notes": []}
        self.violations = []
        self.ok_to_remove_data = False

    # -- processes ---------------------------------------------------------------------------
    def env(self, wait=0):
        env = dict(os.environ)
        env.update({
            "SLUICE_REDIS__URL": self.cluster.seeds,
            "SLUICE_REDIS__KEY_PREFIX": self.prefix,
            "SLUICE_REDIS__PARTITIONS": str(self.P),
            "SLUICE_REDIS__WAIT_REPLICAS": str(wait),
            "SLUICE_POSTGRES__URL": self.args.postgres_url,
            "SLUICE_MONGO__URL": self.args.mongo_url,
            "SLUICE_MONGO__DATABASE": self.database,
            "SLUICE_AUTH__JWT_SECRET": self.jwt_secret,
            "SLUICE_API__HOST": HOST,
            "SLUICE_WORKER__HOST": HOST,
            "SLUICE_WORKER__CLAIM_INTERVAL_MS": "2000",
            "SLUICE_WORKER__CLAIM_MIN_IDLE_MS": "10000",
        })
        return env

    async def ensure_api(self, wait):
        if self.api is not None and self.api.alive() and self.api_wait == wait:
            return
        if self.api is not None:
            await asyncio.to_thread(self.api.stop)
        env = self.env(wait)
        env["SLUICE_API__PORT"] = str(self.api.port if self.api else free_port())
        if self.api is None:
            self.api = Service("api", self.exes["api"], env, int(env["SLUICE_API__PORT"]), self.out)
        self.api.env = env
        self.api.start()
        await asyncio.to_thread(self.api.wait_ready)
        self.api_wait = wait
        log(f"api :{self.api.port} pid {self.api.proc.pid} (wait_replicas {wait})")

    def check_services(self, ledger):
        for s in [self.api, *self.workers]:
            if s is not None and not s.alive():
                ledger.violation(f"{s.name} exited ({s.proc.returncode}):\n{s.log_tail()}")
                raise SuiteError(f"{s.name} exited with {s.proc.returncode}; see {s.log_path}")

    async def setup(self):
        a = self.args
        self.cluster.preflight()
        t = time.monotonic()
        await asyncio.to_thread(self.cluster.up)
        self.report["cluster_up_secs"] = secs(time.monotonic() - t)
        log(f"cluster up on {self.cluster.ports[0]}-{self.cluster.ports[-1]} in {self.report['cluster_up_secs']}s "
            f"(data {self.cluster.data})")
        if a.selftest:
            return
        self.exes = ({n: str(Path(a.bin_dir).resolve() / f"sluice-{n}") for n in ("api", "worker")}
                     if a.bin_dir else binaries(a.profile))
        self.jwt_secret = base64.b64encode(secrets.token_bytes(48)).decode()
        env = self.env()
        await asyncio.to_thread(admin, self.exes["api"], env, "migrate")
        for name in ["setup"] + [{"a": "a", "b": "b0,b1", "c": "c"}[s] for s in a.scenarios]:
            for n in name.split(","):
                acct = await asyncio.to_thread(admin, self.exes["api"], env, "accounts", "create", "--email",
                                               f"cluster-{self.id}-{n}@sluice.local")
                key = await asyncio.to_thread(admin, self.exes["api"], env, "keys", "create", "--account", acct,
                                              "--name", f"cluster-{n}")
                self.accounts[n] = (acct, key)
        self.mongo = pymongo.MongoClient(a.mongo_url, serverSelectionTimeoutMS=10_000, socketTimeoutMS=600_000)
        await self.ensure_api(0)
        await self.placement_check()
        for i in range(a.workers):
            wenv = self.env()
            port = free_port()
            wenv.update(SLUICE_WORKER__PORT=str(port), SLUICE_WORKER__CONSUMER_NAME=f"cluster-{self.id}-w{i + 1}")
            w = Service(f"worker-{i + 1}", self.exes["worker"], wenv, port, self.out)
            w.start()
            self.workers.append(w)
        for w in self.workers:
            await asyncio.to_thread(w.wait_ready)
        log(f"{len(self.workers)} workers: " + ", ".join(f":{w.port} pid {w.proc.pid}" for w in self.workers))
        ledger = self.setup_ledger
        await self.drain(ledger)
        res = self.mongo_check(ledger)
        self.report["scenarios"]["setup"].update(res)
        if ledger.violations:
            self.violations += ledger.violations
            raise SuiteError("setup failed: " + "; ".join(ledger.violations[:5]))

    def read_entries(self, stream, after="-"):
        """Every entry of a stream after the id `after` (exclusive; "-": all): [(id, fields)]."""
        out, start = [], after if after == "-" else f"({after}"
        while True:
            batch = self.redis.cmd("XRANGE", stream, start, "+", "COUNT", 1000)
            if not isinstance(batch, list) or not batch:
                return out
            for eid, fields in batch:
                out.append((eid, dict(zip(fields[::2], fields[1::2]))))
            start = f"({batch[-1][0]}"

    @staticmethod
    def unpack(fields):
        """The events of a packed entry (`e`: a JSON array; an object for a one-event entry of old)."""
        e = json.loads(fields.get("e") or "[]")
        return e if isinstance(e, list) else [e]

    async def placement_check(self):
        """400 events queued before any worker runs, read back from the streams."""
        acct, key = self.accounts["setup"]
        ledger = self.setup_ledger = Ledger("setup", acct, self.P)
        load = Load(self.args, self.api.port, key, ledger, 1)
        load.submit(Job(Events("setup", self.id).make(400), single=False))
        await load.finish(60)
        found, twice, entries, bad_rid = {}, 0, 0, 0
        for p, s in enumerate(self.streams):
            for _, fields in await asyncio.to_thread(self.read_entries, s):
                entries += 1
                evs = self.unpack(fields)
                try:
                    rid = json.loads(fields.get("rid") or "null")
                except ValueError:
                    rid = None
                # One request id shared by every event (a JSON string), or one per event; `n` counts them.
                shared = isinstance(rid, str)
                if not ((shared or (isinstance(rid, list) and len(rid) == len(evs)))
                        and str(fields.get("n")) == str(len(evs))):
                    bad_rid += 1
                for ev in evs:
                    if ev.get("accountId") == acct:
                        twice += ev["eventId"] in found
                        found[ev["eventId"]] = p
        wrong = [e for e, p in found.items() if placement(acct, e, self.P) != p]
        states = await asyncio.to_thread(self.redis.streams_state, self.prefix, self.P)
        queued = sum(s["queued"] for s in states)
        self.mapping_ok = len(found) == len(ledger.acks) == 400 and not wrong and not twice
        per_part = Counter(found.values())
        res = {"accepted": len(ledger.acks), "entries": entries, "events_in_entries": len(found),
               "events_twice_in_entries": twice, "entries_without_matching_rid": bad_rid,
               "wrong_partition": len(wrong), "queued_counters": queued,
               "per_partition": [per_part.get(p, 0) for p in range(self.P)], "placement_verified": self.mapping_ok}
        self.report["scenarios"]["setup"] = res
        if twice:
            ledger.violation(f"{twice} events are in two stream entries")
        if len(found) != len(ledger.acks):
            ledger.violation(f"{len(ledger.acks)} events accepted, {len(found)} found in the stream entries "
                             f"(field `e` must be a JSON array of the events)")
        if bad_rid:
            ledger.violation(f"{bad_rid} of {entries} entries lack a `rid` (one shared id, or one per event) or an `n` matching their `e` array")
        if queued != len(found):
            ledger.violation(f"the partitions' queued counters sum to {queued}, the entries hold {len(found)} events")
        if wrong:
            self.report["notes"].append(f"{len(wrong)} events are in another partition than SHA-256 placement says; "
                                        f"(b) falls back to whole-request figures")
        log(f"setup: 400 events in {entries} entries over {sum(1 for v in per_part.values() if v)} partitions "
            f"{res['per_partition']}, placement {'verified' if self.mapping_ok else 'NOT verified'}")

    # -- checks --------------------------------------------------------------------------------
    async def drain(self, ledger):
        """Until every partition's group has had and acknowledged every entry."""
        t = last_change = time.monotonic()
        last = None
        while True:
            self.check_services(ledger)
            try:
                states = await asyncio.to_thread(self.redis.streams_state, self.prefix, self.P)
            except (OSError, RedisError) as e:
                states, err = None, e
            if states is not None:
                entries, events, drained = backlog_of(states)
                if drained:
                    return secs(time.monotonic() - t)
                if entries != last:
                    last, last_change = entries, time.monotonic()
            now = time.monotonic()
            if now - t > self.args.drain_timeout_secs or now - last_change > 90:
                what = f"{last} entries (about {events} events) unacknowledged" if states else f"Redis: {err!r}"
                ledger.violation(f"the drain stalled after {now - t:.0f}s: {what}")
                return secs(now - t)
            await asyncio.sleep(0.5)

    def mongo_check(self, ledger, lost_bound=None, no_accepted_loss=False):
        """What MongoDB holds for the ledger's account against what the clients were told."""
        db = self.mongo[self.database]
        acct = ledger.account
        ids = [d["eventId"] for d in db.events.find({"accountId": acct}, {"eventId": 1, "_id": 0})]
        stored = set(ids)
        acked = set(ledger.acks)
        lost = acked - stored
        lost_accepted = {e for e in lost if ledger.accepted[e]}
        extra = stored - ledger.sent
        never_acked = ledger.sent - acked
        dlq = db.events_dlq.count_documents({"accountId": acct})
        quarantined = db.events_quarantine.count_documents({"accountId": acct})
        if len(ids) != len(stored):
            ledger.violation(f"{len(ids) - len(stored)} events stored more than once")
        if extra:
            ledger.violation(f"{len(extra)} stored events were never sent, e.g. {sorted(extra)[:3]}")
        if never_acked:
            ledger.violation(f"{len(never_acked)} events sent were never acknowledged, e.g. {sorted(never_acked)[:3]}")
        if dlq or quarantined:
            ledger.violation(f"{dlq} events in events_dlq, {quarantined} in events_quarantine")
        if lost_bound is None and lost:
            ledger.violation(f"{len(lost)} acknowledged events not stored, e.g. {sorted(lost)[:3]}")
        elif lost_bound is not None and len(lost) > lost_bound:
            ledger.violation(f"{len(lost)} acknowledged events lost, over the bound of {lost_bound} (those first "
                             f"acknowledged within {LOSS_WINDOW_SECS}s of the kill, on its master's partitions)")
        if no_accepted_loss and lost_accepted:
            ledger.violation(f"{len(lost_accepted)} events answered 202 lost although WAIT had a replica take "
                             f"them, e.g. {sorted(lost_accepted)[:3]}")
        return {"stored": len(ids), "stored_distinct": len(stored), "acknowledged": len(acked),
                "accepted": len(ledger.accepted), "lost": len(lost), "lost_answered_202": len(lost_accepted),
                "stored_unacknowledged": len(stored - acked), "never_acknowledged": len(never_acked),
                "dlq": dlq, "quarantined": quarantined}

    def finish_ledger(self, name, ledger, res):
        res.update({"status": {str(k): v for k, v in sorted(ledger.status.items())},
                    "requests": len(ledger.requests), "events_sent": len(ledger.sent),
                    "shed_events_retried": ledger.shed_events, "late_events_not_sent": ledger.late,
                    "duplicates_answered": ledger.duplicates, "violations": ledger.violations})
        self.report["scenarios"][name] = res
        self.violations += ledger.violations

    # -- (a) -----------------------------------------------------------------------------------
    async def scenario_a(self):
        a = self.args
        acct, key = self.accounts["a"]
        ledger = Ledger("a", acct, self.P)
        rng = random.Random(self.id + "a")
        ev = Events("a", self.id)
        pool = ev.make(a.events)
        before = await asyncio.to_thread(self.redis.streams_state, self.prefix, self.P)

        def jobs_of(events):
            jobs, i = [], 0
            n_single = int(len(events) * 0.2)
            for e in events[:n_single]:
                jobs.append(Job([e], single=True))
            i = n_single
            while i < len(events):
                n = min(rng.randint(2, 250), len(events) - i)
                jobs.append(Job(events[i:i + n], single=n == 1))
                i += n
            rng.shuffle(jobs)
            return jobs

        half = len(pool) // 2
        n_rep = min(a.repeats, half)
        n_rep_single, n_rep_batched = n_rep * 2 // 5, n_rep - n_rep * 2 // 5
        mixed_new = pool[half:half + n_rep_batched]
        rest = pool[half + n_rep_batched:]
        load = Load(a, self.api.port, key, ledger, a.connections)
        t0 = time.monotonic()
        for j in jobs_of(pool[:half]):
            load.submit(j)
        t_half = time.monotonic()
        while load.outstanding > 0 and time.monotonic() - t_half < 120:
            await asyncio.sleep(0.05)
            self.check_services(ledger)
        firsts = [e for e in pool[:half] if ledger.accepted[e["eventId"]] == 1]
        reps = rng.sample(firsts, min(n_rep, len(firsts)))
        ledger.repeats.update(e["eventId"] for e in reps)
        second = jobs_of(rest)
        second += [Job([e], single=True, label="repeat") for e in reps[:n_rep_single]]
        rb, k = reps[n_rep_single:], 0
        while k < len(rb):  # batches of 50 repeats and 50 new events
            part = rb[k:k + 50] + mixed_new[k:k + 50]
            rng.shuffle(part)
            second.append(Job(part, single=False, label="batch"))
            k += 50
        rng.shuffle(second)
        for j in second:
            load.submit(j)
        await load.finish(120)
        load_secs = time.monotonic() - t0
        # The queue itself: the counters, and the entries when none was trimmed meanwhile.
        after = await asyncio.to_thread(self.redis.streams_state, self.prefix, self.P)
        queued = sum(s1["queued"] - s0["queued"] for s0, s1 in zip(before, after))
        in_entries, distinct, complete = 0, set(), True
        for s0, s1, stream in zip(before, after, self.streams):
            entries = await asyncio.to_thread(self.read_entries, stream, s0["last"] if s0["exists"] else "-")
            complete &= len(entries) == s1["added"] - s0["added"]
            for _, fields in entries:
                for e in self.unpack(fields):
                    if e.get("accountId") == acct:
                        in_entries += 1
                        distinct.add(e.get("eventId"))
        t_drain = await self.drain(ledger)
        res = self.mongo_check(ledger)
        n = len(pool)
        if res["stored"] != n:
            ledger.violation(f"MongoDB holds {res['stored']} events of the scenario, not exactly {n}")
        if len(ledger.accepted) != n:
            ledger.violation(f"{len(ledger.accepted)} distinct events answered accepted, not {n}")
        if ledger.repeat_answers.get("duplicate", 0) != len(reps):
            ledger.violation(f"of {len(reps)} repeats {dict(ledger.repeat_answers)} (every one must be `duplicate`)")
        if queued != n:
            ledger.violation(f"the partitions' queued counters grew by {queued}, not {n}")
        if complete and (in_entries != n or len(distinct) != n):
            ledger.violation(f"the stream entries carry {in_entries} events ({len(distinct)} distinct), not {n}")
        single_lat = ledger.stats("single") + ledger.stats("repeat")
        res.update({"events": n, "repeats": len(reps), "repeat_answers": dict(ledger.repeat_answers),
                    "connections": a.connections, "workers": len(self.workers),
                    "load_secs": secs(load_secs), "accepted_per_sec": round(len(ledger.accepted) / load_secs),
                    "requests_per_sec": round(len(ledger.requests) / load_secs),
                    "latency_single": lat(single_lat), "latency_batch": lat(ledger.stats("batch")),
                    "queued_counters_delta": queued,
                    "events_in_entries": in_entries if complete else "not counted: entries trimmed meanwhile",
                    "drain_secs": t_drain, "stored_per_sec_end_to_end": round(res["stored"] / (load_secs + t_drain))})
        self.finish_ledger("a", ledger, res)
        log(f"(a) {n} events + {len(reps)} repeats from {a.connections} clients in {load_secs:.1f}s "
            f"({res['accepted_per_sec']} ev/s accepted, {res['requests_per_sec']} req/s; single p50/p99 "
            f"{res['latency_single']['p50_ms']}/{res['latency_single']['p99_ms']} ms, batch "
            f"{res['latency_batch']['p50_ms']}/{res['latency_batch']['p99_ms']} ms); drained in {t_drain}s; "
            f"stored {res['stored']} ({res['stored_distinct']} distinct), repeats {dict(ledger.repeat_answers)}, "
            f"queued +{queued}, dlq {res['dlq']}; {len(ledger.violations)} violation(s)")

    # -- (b) -----------------------------------------------------------------------------------
    async def scenario_b(self, wait):
        a = self.args
        name = f"b{wait}"
        acct, key = self.accounts[name]
        await asyncio.to_thread(self.cluster.up)  # healthy before we start (idempotent)
        await self.ensure_api(wait)
        nodes = await asyncio.to_thread(self.cluster.nodes)
        victim = self.cluster.owner(key_slot(self.streams[0]), nodes)
        replica = self.cluster.replica_of(victim, nodes)
        victim_parts = {p for p, s in enumerate(self.streams) if self.cluster.owner(key_slot(s), nodes)["id"] == victim["id"]}
        ledger = Ledger(name, acct, self.P, victim_parts if self.mapping_ok else None)
        ev = Events(name, self.id)
        load = Load(a, self.api.port, key, ledger, a.connections)
        # 1. what the api answers closed-loop, single events
        t_probe = time.monotonic()
        await probe(load, ev, a.probe_secs)
        while load.outstanding > 0 and time.monotonic() - t_probe < a.probe_secs + 30:
            await asyncio.sleep(0.05)
        probe_lat = ledger.stats("probe", until=t_probe + a.probe_secs)
        # 2. open loop, then the kill
        stop = asyncio.Event()
        pace = asyncio.create_task(pacer(load, ledger, ev, a, stop))
        t_steady = time.monotonic()
        await asyncio.sleep(a.steady_secs)
        self.check_services(ledger)
        off, r_off = await asyncio.to_thread(self.cluster.repl, victim["port"])
        pid = await asyncio.to_thread(self.cluster.kill9, victim["port"])
        t_kill = ledger.t_kill = time.monotonic()
        log(f"({name}) kill -9 master {victim['port']} (pid {pid}; partitions {sorted(victim_parts)}); replica "
            f"{replica['port']} had acknowledged up to {None if r_off is None else off - r_off} bytes less "
            f"(replicas acknowledge once a second: an upper bound of what it lacked)")
        fo = {}
        watch = asyncio.create_task(watch_failover(self.cluster, victim, replica, t_kill, fo))
        # 3. until ingest resumed (and the killed node is back), a little longer, at most 60 s
        while True:
            now = time.monotonic()
            if ledger.t_resume is not None and now >= ledger.t_resume + a.after_resume_secs and watch.done():
                break
            if now - t_kill > RESUME_DEADLINE_SECS and (ledger.t_resume is None or watch.done()):
                if ledger.t_resume is None:
                    ledger.violation(f"ingest did not resume within {RESUME_DEADLINE_SECS}s of the kill")
                break
            if not self.api.alive():
                break
            await asyncio.sleep(0.2)
        stop.set()
        await pace
        load_end = time.monotonic()
        await load.finish(60)
        try:
            await asyncio.wait_for(watch, 240)
        except asyncio.TimeoutError:
            fo["error"] = "the failover watch did not end"
        if "error" in fo or "restart_error" in fo:
            ledger.violation(f"failover: {fo.get('error') or fo.get('restart_error')}")
        t_drain = await self.drain(ledger)
        # The bound: events of the killed master's partitions first acknowledged around the kill.
        window = [e for e, t in ledger.acks.items() if t_kill - LOSS_WINDOW_SECS <= t <= t_kill + LOSS_WINDOW_SECS
                  and (ledger.victim_parts is None or ledger.in_victim(e))]
        res = self.mongo_check(ledger, lost_bound=len(window), no_accepted_loss=wait > 0)
        steady = [x for x in ledger.requests if t_steady <= x[0] and x[1] <= t_kill and x[2] in (200, 202)]
        rel = lambda t: secs(t - t_kill) if t is not None else None  # noqa: E731
        res.update({
            "wait_replicas": wait, "victim": victim["port"], "replica": replica["port"],
            "victim_partitions": sorted(victim_parts), "replica_ack_lag_bytes_at_kill": None if r_off is None else off - r_off,
            "failover": fo, "first_503_after_kill_secs": rel(ledger.first_shed_after_kill),
            "last_503_after_kill_secs": rel(ledger.last_shed_after_kill),
            "ingest_resumed_after_secs": rel(ledger.t_resume),
            "probe": {"secs": a.probe_secs, "requests_per_sec": round(len(probe_lat) / a.probe_secs), **lat(probe_lat)},
            "steady": {"rate": a.rate, "single": lat([t1 - t0 for t0, t1, _, _, lb, _ in steady if lb == "single"]),
                       "batch": lat([t1 - t0 for t0, t1, _, _, lb, _ in steady if lb == "batch"])},
            "loss_bound": len(window), "loss_window_secs": LOSS_WINDOW_SECS,
            "load_secs": secs(load_end - t_probe), "drain_secs": t_drain,
        })
        self.finish_ledger(name, ledger, res)
        log(f"({name}) wait_replicas={wait}: promoted after {fo.get('promoted_secs')}s, cluster ok "
            f"{fo.get('cluster_ok_secs')}s, killed node back {fo.get('rejoined_secs')}s; clients: 503s from "
            f"{res['first_503_after_kill_secs']}s to {res['last_503_after_kill_secs']}s, ingest resumed after "
            f"{res['ingest_resumed_after_secs']}s; status {dict(ledger.status)}; lost {res['lost']} "
            f"(answered 202: {res['lost_answered_202']}; bound {len(window)}); probe {res['probe']['requests_per_sec']} "
            f"req/s p50/p99 {res['probe']['p50_ms']}/{res['probe']['p99_ms']} ms; stored {res['stored']}; "
            f"{len(ledger.violations)} violation(s)")

    # -- (c) -----------------------------------------------------------------------------------
    async def scenario_c(self):
        a = self.args
        acct, key = self.accounts["c"]
        await asyncio.to_thread(self.cluster.up)
        await self.ensure_api(0)
        plan = await asyncio.to_thread(self.cluster.reshard_plan, self.streams, a.reshard_slots)
        ledger = Ledger("c", acct, self.P)
        ev = Events("c", self.id)
        load = Load(a, self.api.port, key, ledger, a.connections)
        stop = asyncio.Event()
        t0 = time.monotonic()
        pace = asyncio.create_task(pacer(load, ledger, ev, a, stop))
        await asyncio.sleep(3)
        src, dst = plan["source"], plan["target"]
        cmd = ["redis-cli", "--cluster", "reshard", f"{HOST}:{self.cluster.ports[0]}", "--cluster-from", src["id"],
               "--cluster-to", dst["id"], "--cluster-slots", str(plan["slots"]), "--cluster-yes"]
        log(f"(c) resharding {plan['slots']} slots {src['port']} -> {dst['port']} (including slot {plan['slot']} "
            f"of {plan['stream']}) under load")
        reshard_log = self.out / "reshard.log"
        t_r = time.monotonic()
        with open(reshard_log, "wb") as f:
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=f, stderr=subprocess.STDOUT)
            try:
                rc = await asyncio.wait_for(proc.wait(), 300)
            except asyncio.TimeoutError:
                proc.kill()
                rc = await proc.wait()
                ledger.violation("the reshard did not finish in 300s")
        reshard_secs = time.monotonic() - t_r
        if rc != 0:
            ledger.violation(f"redis-cli --cluster reshard exited with {rc}: "
                             f"{reshard_log.read_text(errors='replace')[-1500:]}")
        await asyncio.sleep(3)
        stop.set()
        await pace
        load_secs = time.monotonic() - t0
        await load.finish(60)
        nodes = await asyncio.to_thread(self.cluster.nodes)
        owner = self.cluster.owner(plan["slot"], nodes)
        if owner["id"] != dst["id"]:
            ledger.violation(f"slot {plan['slot']} is served by {owner['port']} after the reshard, not {dst['port']}")
        ok, check_out = await asyncio.to_thread(self.cluster.check)
        if not ok:
            ledger.violation(f"redis-cli --cluster check is not clean:\n{check_out[-1500:]}")
        t_drain = await self.drain(ledger)
        res = self.mongo_check(ledger)
        during = [t1 - t0_ for t0_, t1, st, _, _, _ in ledger.requests if st in (200, 202) and t_r <= t0_ <= t_r + reshard_secs]
        res.update({"partition": plan["partition"], "slot": plan["slot"], "slots_moved": plan["slots"],
                    "from": src["port"], "to": dst["port"], "reshard_secs": secs(reshard_secs), "reshard_rc": rc,
                    "latency_during_reshard": lat(during), "load_secs": secs(load_secs), "drain_secs": t_drain,
                    "rate": a.rate})
        self.finish_ledger("c", ledger, res)
        log(f"(c) {plan['slots']} slots moved in {reshard_secs:.1f}s (rc {rc}), slot {plan['slot']} now on "
            f"{owner['port']}; status {dict(ledger.status)}, shed {ledger.shed_events} events (retried); 2xx p99 "
            f"during the reshard {res['latency_during_reshard']['p99_ms']} ms; stored {res['stored']} of "
            f"{res['acknowledged']} acknowledged, lost {res['lost']}; {len(ledger.violations)} violation(s)")

    # -- the cluster machinery alone -------------------------------------------------------------
    async def selftest(self):
        r = self.redis
        for s in self.streams:
            await asyncio.to_thread(r.cmd, "XADD", s, "*", "e", '[{"eventId":"x"}]', "rid", '["r"]')
        nodes = await asyncio.to_thread(self.cluster.nodes)
        victim = self.cluster.owner(key_slot(self.streams[0]), nodes)
        replica = self.cluster.replica_of(victim, nodes)
        res = {"victim": victim["port"], "replica": replica["port"]}
        pid = await asyncio.to_thread(self.cluster.kill9, victim["port"])
        t_kill = time.monotonic()
        fo = {}
        await watch_failover(self.cluster, victim, replica, t_kill, fo)
        res["failover"] = fo
        res["streams_after_failover"] = [await asyncio.to_thread(r.cmd, "XLEN", s) for s in self.streams]
        plan = await asyncio.to_thread(self.cluster.reshard_plan, self.streams, self.args.reshard_slots)
        t = time.monotonic()
        rr = await asyncio.to_thread(subprocess.run, [
            "redis-cli", "--cluster", "reshard", f"{HOST}:{self.cluster.ports[0]}", "--cluster-from",
            plan["source"]["id"], "--cluster-to", plan["target"]["id"], "--cluster-slots", str(plan["slots"]),
            "--cluster-yes"], capture_output=True, text=True, timeout=300)
        nodes = await asyncio.to_thread(self.cluster.nodes)
        ok, check_out = await asyncio.to_thread(self.cluster.check)
        r.slot_map = None
        res["reshard"] = {"partition": plan["partition"], "slot": plan["slot"], "slots": plan["slots"],
                          "from": plan["source"]["port"], "to": plan["target"]["port"], "rc": rr.returncode,
                          "secs": secs(time.monotonic() - t),
                          "slot_owner_after": self.cluster.owner(plan["slot"], nodes)["port"], "check_clean": ok,
                          "xlen_after": await asyncio.to_thread(r.cmd, "XLEN", plan["stream"])}
        problems = []
        if "cluster_ok_secs" not in fo or "rejoined_secs" not in fo or fo.get("killed_node_after") != "replica":
            problems.append(f"failover: {fo}")
        if res["streams_after_failover"] != [1] * self.P:
            problems.append(f"streams after the failover: {res['streams_after_failover']}")
        rs = res["reshard"]
        if rs["rc"] != 0 or rs["slot_owner_after"] != rs["to"] or not ok or rs["xlen_after"] != 1:
            problems.append(f"reshard: {rs} {rr.stdout[-300:]}{rr.stderr[-300:]}\ncheck: {check_out[-1500:]}")
        self.report["scenarios"]["selftest"] = res
        self.violations += [f"(selftest) {p}" for p in problems]
        log(f"selftest: killed {victim['port']} (pid {pid}): {fo}; reshard {rs}")

    # -- the whole run -----------------------------------------------------------------------------
    async def run(self):
        await self.setup()
        if self.args.selftest:
            await self.selftest()
            return
        for s in self.args.scenarios:
            t = time.monotonic()
            if s == "a":
                await self.scenario_a()
            elif s == "b":
                await self.scenario_b(0)
                await self.scenario_b(1)
            else:
                await self.scenario_c()
            self.report.setdefault("scenario_secs", {})[s] = secs(time.monotonic() - t)

    def cleanup(self):
        notes = []
        running = [s for s in [self.api, *self.workers] if s is not None and s.alive()]
        for s in running:  # all at once: each may take its drain gap / shutdown deadline
            s.proc.send_signal(signal.SIGTERM)
        for s in running:
            try:
                s.proc.wait(20)
            except subprocess.TimeoutExpired:
                notes.append(f"{s.name} (pid {s.proc.pid}) ignored SIGTERM for 20s; killed")
                s.proc.kill()
                s.proc.wait()
        if self.mongo is not None or not self.args.selftest:
            try:
                m = self.mongo or pymongo.MongoClient(self.args.mongo_url, serverSelectionTimeoutMS=10_000)
                m.drop_database(self.database)
                m.close()
            except Exception as e:  # noqa: BLE001
                notes.append(f"could not drop MongoDB database {self.database}: {e!r}")
        if self.cluster.started:
            try:
                self.redis.slot_map = None
                self.report["redis_keys_unlinked"] = self.redis.unlink_matching(f"{self.prefix}:*")
            except Exception as e:  # noqa: BLE001
                notes.append(f"could not delete the Redis keys {self.prefix}:*: {e!r}")
            try:
                self.cluster.down()
            except Exception as e:  # noqa: BLE001
                notes.append(f"could not stop the cluster: {e!r}")
        if (self.ok_to_remove_data and not notes) or not self.cluster.ever_started:
            shutil.rmtree(self.cluster.data, ignore_errors=True)
        else:
            notes.append(f"kept {self.cluster.data} (the nodes' logs are in its logs/) for a look")
        return notes


def summary(report):
    sc = report["scenarios"]
    lines = []
    if "a" in sc:
        x = sc["a"]
        lines.append(f"(a) {x['events']} events + {x['repeats']} repeats, {x['connections']} clients, "
                     f"{x['workers']} workers: {x['accepted_per_sec']} ev/s in, stored {x['stored']} "
                     f"({x['stored_distinct']} distinct), repeats {x['repeat_answers']}, dlq {x['dlq']}, "
                     f"drain {x['drain_secs']}s")
    for k in ("b0", "b1"):
        if k in sc:
            x = sc[k]
            lines.append(f"({k}) wait_replicas={x['wait_replicas']}: kill -9 {x['victim']} -> {x['replica']} promoted "
                         f"{x['failover'].get('promoted_secs')}s, clients resumed {x['ingest_resumed_after_secs']}s; "
                         f"status {x['status']}; lost {x['lost']} (bound {x['loss_bound']}); probe "
                         f"{x['probe']['requests_per_sec']} req/s p50 {x['probe']['p50_ms']} p99 {x['probe']['p99_ms']} ms; "
                         f"steady single p99 {x['steady']['single']['p99_ms']} ms, batch p99 {x['steady']['batch']['p99_ms']} ms")
    if "b0" in sc and "b1" in sc:
        p0, p1 = sc["b0"]["probe"], sc["b1"]["probe"]
        if p0["requests_per_sec"] and p0["p50_ms"] and p1["p50_ms"]:
            lines.append(f"     WAIT 1 costs: single-event throughput {p1['requests_per_sec']}/{p0['requests_per_sec']} "
                         f"= {p1['requests_per_sec'] / p0['requests_per_sec']:.2f}x, p50 {p0['p50_ms']} -> {p1['p50_ms']} ms, "
                         f"p99 {p0['p99_ms']} -> {p1['p99_ms']} ms")
    if "c" in sc:
        x = sc["c"]
        lines.append(f"(c) {x['slots_moved']} slots {x['from']} -> {x['to']} (slot {x['slot']}, partition {x['partition']}) "
                     f"in {x['reshard_secs']}s under {x['rate']} ev/s: status {x['status']}, stored {x['stored']} of "
                     f"{x['acknowledged']} acknowledged, lost {x['lost']}")
    return lines


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    suite = Suite(args)
    failed = None
    code = 1
    t = time.monotonic()
    try:
        asyncio.run(suite.run())
    except SuiteError as e:
        failed = str(e)
    except (KeyboardInterrupt, SystemExit) as e:
        code = 130 if isinstance(e, KeyboardInterrupt) else e.code
        failed = f"interrupted ({'Ctrl-C' if code == 130 else 'SIGTERM'})"
    except BaseException as e:  # noqa: BLE001 — bugs still clean up
        failed = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        if failed is None and not suite.violations:
            suite.ok_to_remove_data = True
        tc = time.monotonic()
        notes = suite.cleanup()
        suite.report["cleanup_secs"] = secs(time.monotonic() - tc)
    if failed:
        suite.violations.append(failed)
    suite.report["notes"] += notes
    suite.report["violations"] = suite.violations
    suite.report["wall_secs"] = secs(time.monotonic() - t)
    (suite.out / "report.json").write_text(json.dumps(suite.report, indent=2, default=str) + "\n")
    for line in summary(suite.report) if not failed else []:
        print("cluster_suite: " + line)
    for n in suite.report["notes"]:
        print(f"cluster_suite: note: {n}")
    print(f"cluster_suite: report {suite.out / 'report.json'}; wall {suite.report['wall_secs']}s")
    if suite.violations:
        print("cluster_suite: FAILED:\n  " + "\n  ".join(suite.violations), file=sys.stderr)
        return code if isinstance(code, int) and code else 1
    print("cluster_suite: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
