#!/usr/bin/env python3
"""Overload soak on processes of its own (issue 19, section 3).

Starts its own `sluice-api` and `sluice-worker` (target/$PROFILE/, built if missing) on free ports,
with a Redis key prefix (`soak-<uuid>`: its streams are `soak-<uuid>:{p<N>}:events`), a MongoDB
database (`sluice_soak_<id>`) and a JWT secret of their own, against the shared Redis (one server, or
a Redis Cluster given as a seed list), PostgreSQL and MongoDB; creates its account and key
with the api's admin CLI. It offers about three times what the worker stores (batches of 100) for
`--secs`, kills its worker with `kill -9` half way and starts it again with the same environment,
waits for the drain and compares what its database holds with what was accepted. Whatever happens,
it stops its processes, drops its database and deletes every Redis key of its prefix (SCAN MATCH
`soak-<uuid>:*` on every master).
It fails (exit 1) on any violation:
  - an answer other than 200/202, or 429/503 with Retry-After; a timeout; a reset connection;
  - a batch item other than `accepted` (the soak's events are valid and fresh);
  - Redis used_memory above its maxmemory, when one is set (the soak never changes Redis' config;
    in a cluster, on any master);
  - its api's or worker's RSS above --max-rss-mb;
  - after the drain, stored eventIds != accepted eventIds (each exactly once), or any of them in a
    dead-letter or quarantine collection.

Its own HTTP/1.1 client (asyncio, keep-alive) is used rather than sluice-loadtest because the soak
must know which eventIds were accepted and whether every shed answer carried Retry-After.
scripts/cluster_suite.py imports this file's Redis client, service and HTTP helpers.

Stream entries carry several events each (field `e`, a JSON array): the backlog the group holds is
counted in entries (exact: pending + lag over every partition, zero once drained), and turned into an
estimate of events with each partition's `<prefix>:{p<N>}:meta` `events` count ÷ its entries-added.

Usage: scripts/soak.py            (make test: 20 s of load)
       scripts/soak.py --secs 300 (make soak)
The environment is passed on to the services (e.g. MALLOC_ARENA_MAX=2, PROFILE=release).
"""
import argparse
import asyncio
import base64
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"

try:
    import pymongo  # the project's .venv has it (scripts/stack.sh installs the MongoDB stand-in there)
except ImportError:
    if VENV_PY.exists() and Path(sys.prefix).resolve() != VENV_PY.parent.parent.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])
    sys.exit("soak: pymongo is missing; run `scripts/stack.sh install` (it creates .venv)")

IDLE_REUSE_SECS = 2.0  # well under actix-web's 5 s keep-alive


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--secs", type=int, default=20,
                   help="seconds of load (the worker is killed half way); 20 in make test, 300 in make soak")
    p.add_argument("--rate", type=int, default=0,
                   help="events/s to offer; 0 (default) measures what the worker stores first and offers 3x")
    p.add_argument("--overload", type=float, default=3.0, help="offered / stored, when --rate is 0")
    p.add_argument("--calibrate-secs", type=int, default=10,
                   help="seconds of measuring (at most half of --secs, so it ends before the kill)")
    p.add_argument("--calibrate-rate", type=int, default=5_000,
                   help="events/s offered while measuring (above what the MongoDB stand-in stores)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--request-timeout-secs", type=float, default=30.0)
    p.add_argument("--drain-timeout-secs", type=int, default=900)
    p.add_argument("--profile", default=os.environ.get("PROFILE", "debug"), choices=("debug", "release"),
                   help="which target/<profile>/ binaries to run (built if missing)")
    p.add_argument("--redis-url", default=os.environ.get("SLUICE_REDIS__URL", "redis://127.0.0.1:6380"))
    p.add_argument("--postgres-url", default=os.environ.get(
        "SLUICE_POSTGRES__URL", "postgres://postgres@127.0.0.1:5433/sluice"))
    p.add_argument("--mongo-url", default=os.environ.get(
        "SLUICE_MONGO__URL", "mongodb://127.0.0.1:27018/?directConnection=true"))
    p.add_argument("--max-rss-mb", type=int, default=1024,
                   help="bound on the peak RSS of the soak's api and of its worker (catches runaway growth)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "soak"),
                   help="where report.json and the services' logs go")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# Small I/O helpers: Redis over RESP, /proc, the services' HTTP endpoints.

class RedisError(RuntimeError):
    """An error reply (`-ERR …`, `-MOVED …`), returned in place of a reply rather than raised."""


def _crc16(data):
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def _crc16_table():
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else c << 1
        table.append(c & 0xFFFF)
    return table


_CRC16_TABLE = _crc16_table()


def key_slot(key):
    """The Redis Cluster slot of a key: CRC16 of its hash tag (`{…}`) or of the whole key."""
    k = key.encode() if isinstance(key, str) else key
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1:e]
    return _crc16(k) % 16384


def partition_stream(prefix, p):
    return f"{prefix}:{{p{p}}}:events"


def partition_meta(prefix, p):
    """The partition's meta hash: `events` (events ever queued) and `last` (newest entry id)."""
    return f"{prefix}:{{p{p}}}:meta"


def stream_id(s):
    """`1700000000000-3` -> (1700000000000, 3), for comparing stream ids."""
    ms, _, seq = (s or "0-0").partition("-")
    return int(ms), int(seq or 0)


# The first argument that is a key, by command (cluster routing); commands not listed take none.
_KEY_ARG = {"XINFO": 2, "XGROUP": 2, "MEMORY": 2, "OBJECT": 2, "EVAL": 3, "EVALSHA": 3}


class Redis:
    """A small RESP client: one server (`redis://host:port[/db]`), or a Redis Cluster given as a
    comma-separated seed list (`redis://127.0.0.1:7001,redis://127.0.0.1:7002,…`), whose keyed
    commands are routed by slot (MOVED refreshes the slot map, ASK is followed once)."""

    def __init__(self, url, timeout=10):
        urls = [u.strip() for u in url.replace("redis-cluster://", "redis://").split(",") if u.strip()]
        self.cluster = len(urls) > 1 or url.startswith("redis-cluster://")
        self.seeds = []
        for raw in urls:
            u = urllib.parse.urlparse(raw)
            self.seeds.append((u.hostname or "127.0.0.1", u.port or 6379))
        u = urllib.parse.urlparse(urls[0])
        self.auth = ([urllib.parse.unquote(u.username)] if u.username else []) + (
            [urllib.parse.unquote(u.password)] if u.password else [])
        self.db = (u.path or "/").strip("/") or "0"
        self.addr = self.seeds[0]
        self.timeout = timeout
        self.slot_map = None  # [(first, last, (host, port))], cluster mode

    # -- one node ---------------------------------------------------------------------------
    def node_pipeline(self, addr, commands):
        """Commands over one connection to one node; replies in order, errors as RedisError."""
        setup = ([("AUTH", *self.auth)] if self.auth else []) + (
            [("SELECT", self.db)] if self.db != "0" and not self.cluster else [])
        cmds = setup + list(commands)
        with socket.create_connection(tuple(addr), timeout=self.timeout) as s:
            s.sendall(b"".join(f"*{len(c)}\r\n".encode() + b"".join(
                (lambda b: f"${len(b)}\r\n".encode() + b + b"\r\n")(
                    a if isinstance(a, bytes) else str(a).encode()) for a in c) for c in cmds))
            f = s.makefile("rb")

            def read():
                line = f.readline()
                if not line:
                    raise ConnectionError(f"Redis {addr[0]}:{addr[1]} closed the connection")
                line = line.rstrip(b"\r\n")
                kind, rest = line[:1], line[1:]
                if kind == b"$":
                    n = int(rest)
                    return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
                if kind == b"*":
                    n = int(rest)
                    return None if n < 0 else [read() for _ in range(n)]
                if kind == b"-":
                    return RedisError(rest.decode())
                if kind == b":":
                    return int(rest)
                return rest.decode()

            return [read() for _ in cmds][len(setup):]

    def node_cmd(self, addr, *args):
        r = self.node_pipeline(addr, [args])[0]
        if isinstance(r, RedisError):
            raise r
        return r

    # -- the cluster's slot map ---------------------------------------------------------------
    def refresh(self):
        last = None
        for addr in ([self.addr] + [a for a in self.seeds if a != self.addr]):
            try:
                reply = self.node_cmd(addr, "CLUSTER", "SLOTS")
            except (OSError, RedisError) as e:
                last = e
                continue
            self.slot_map = sorted((r[0], r[1], (r[2][0] or addr[0], int(r[2][1]))) for r in reply)
            self.addr = addr
            return
        raise ConnectionError(f"no seed node answers CLUSTER SLOTS: {last!r}")

    def node_of_slot(self, slot):
        if self.slot_map is None:
            self.refresh()
        for first, last, addr in self.slot_map:
            if first <= slot <= last:
                return addr
        raise RedisError(f"CLUSTERDOWN slot {slot} is not served")

    def masters(self):
        """Every node serving slots (the one server, outside a cluster)."""
        if not self.cluster:
            return [self.addr]
        self.refresh()
        return sorted({addr for _, _, addr in self.slot_map})

    def _route(self, c):
        name = str(c[0]).upper()
        i = _KEY_ARG.get(name, 1)
        if name in ("XREAD", "XREADGROUP"):
            i = next((j + 1 for j, a in enumerate(c) if str(a).upper() == "STREAMS"), len(c))
        if not self.cluster or len(c) <= i or str(c[0]).upper() in ("INFO", "PING", "CLUSTER", "SCAN"):
            return self.addr if not self.cluster else None
        return self.node_of_slot(key_slot(c[i]))

    # -- what callers use -----------------------------------------------------------------------
    def pipeline(self, *commands, raise_errors=True):
        """Replies in order. Outside a cluster, one connection; in a cluster, one per node, each
        command sent to the node of its key (keyless ones to any node). NOGROUP and `no such key`
        come back as RedisError; other errors raise unless raise_errors is False."""
        commands = list(commands)
        replies = [None] * len(commands)
        if not self.cluster:
            replies = self.node_pipeline(self.addr, commands)
        else:
            for attempt in range(2):  # a node gone (a failover): the slot map again, once
                try:
                    by_node = {}
                    for i, c in enumerate(commands):
                        addr = self._route(c) or self.addr
                        by_node.setdefault(addr, []).append(i)
                    for addr, idx in by_node.items():
                        for i, r in zip(idx, self.node_pipeline(addr, [commands[i] for i in idx])):
                            replies[i] = r
                    break
                except OSError:
                    if attempt:
                        raise
                    self.refresh()
            for i, r in enumerate(replies):
                for _ in range(3):  # a slot that moved meanwhile: MOVED, or ASK while it moves
                    if not isinstance(r, RedisError):
                        break
                    word, *rest = str(r).split()
                    if word == "MOVED" and len(rest) == 2:
                        self.refresh()
                        host, _, port = rest[1].rpartition(":")
                        r = self.node_pipeline((host or self.addr[0], int(port)), [commands[i]])[0]
                    elif word == "ASK" and len(rest) == 2:
                        host, _, port = rest[1].rpartition(":")
                        r = self.node_pipeline((host or self.addr[0], int(port)),
                                               [("ASKING",), commands[i]])[1]
                    else:
                        break
                replies[i] = r
        if raise_errors:
            for r in replies:
                if isinstance(r, RedisError) and not str(r).startswith("NOGROUP") and "no such key" not in str(r):
                    raise r
        return replies

    def cmd(self, *args):
        return self.pipeline(args)[0]

    def info(self, addr, section):
        text = self.node_cmd(addr, "INFO", section)
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)

    def memory(self):
        """(used_memory, maxmemory, policy): the fullest node's, in a cluster."""
        best = None
        for addr in self.masters():
            f = self.info(addr, "memory")
            m = (int(f["used_memory"]), int(f["maxmemory"]), f.get("maxmemory_policy", "").strip())
            if best is None or (m[1] and m[0] / m[1] > (best[0] / best[1] if best[1] else 0)):
                best = m
        return best

    def unlink_matching(self, pattern):
        """SCAN MATCH pattern on every master and UNLINK what it finds; how many keys went."""
        n = 0
        for addr in self.masters():
            cursor = "0"
            while True:
                cursor, keys = self.node_cmd(addr, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                if keys:
                    # One key per UNLINK: keys of different slots may not share a command in a cluster.
                    for r in self.node_pipeline(addr, [("UNLINK", k) for k in keys]):
                        if isinstance(r, RedisError):
                            raise r
                        n += r
                if str(cursor) == "0":
                    break
        return n

    def streams_state(self, prefix, partitions, group="workers"):
        """Per partition: {entries, added, pending, lag, delivered, last, queued, memory}, read
        with XINFO STREAM/GROUPS, HGET <prefix>:{pN}:meta events and MEMORY USAGE. `lag` is the
        group's (entries not yet delivered), derived from entries-added - entries-read when Redis
        reports none; `drained` says everything was delivered and acknowledged."""
        cmds = []
        for p in range(partitions):
            s = partition_stream(prefix, p)
            cmds += [("XINFO", "STREAM", s), ("XINFO", "GROUPS", s), ("HGET", partition_meta(prefix, p), "events"),
                     ("MEMORY", "USAGE", s)]
        replies = self.pipeline(*cmds)
        out = []
        for p in range(partitions):
            info, groups, queued, mem = replies[4 * p:4 * p + 4]
            st = {"partition": p, "exists": isinstance(info, list), "entries": 0, "added": 0,
                  "last": "0-0", "pending": 0, "lag": 0, "delivered": "0-0", "group": False,
                  "queued": int(queued or 0), "memory": mem if isinstance(mem, int) else 0}
            if isinstance(info, list):
                i = dict(zip(info[::2], info[1::2]))
                st.update(entries=int(i.get("length") or 0), added=int(i.get("entries-added") or 0),
                          last=i.get("last-generated-id") or "0-0")
            for g in groups if isinstance(groups, list) else []:
                g = dict(zip(g[::2], g[1::2]))
                if g.get("name") != group:
                    continue
                st["group"] = True
                st["pending"] = int(g.get("pending") or 0)
                st["delivered"] = g.get("last-delivered-id") or "0-0"
                lag = g.get("lag")
                if lag is None:
                    read = g.get("entries-read")
                    lag = max(0, st["added"] - int(read)) if read is not None else st["entries"]
                st["lag"] = int(lag)
            st["drained"] = not st["exists"] or (
                st["group"] and st["pending"] == 0 and stream_id(st["delivered"]) >= stream_id(st["last"]))
            out.append(st)
        return out


def backlog_of(states):
    """(entries the group has not acknowledged, an estimate of the events they carry, drained)."""
    entries = sum(s["pending"] + s["lag"] for s in states)
    events = 0.0
    for s in states:
        per_entry = s["queued"] / s["added"] if s["added"] else 1.0
        events += (s["pending"] + s["lag"]) * per_entry
    return entries, round(events), all(s["drained"] for s in states)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid, *fields):
    """VmRSS, VmHWM, RssAnon, RssFile ... of a live process, in kB (None when gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in fields:
                out[k] = int(v.split()[0])
    except (OSError, ValueError):
        return None
    return out


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return None, ""


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the soak itself dies (even by kill -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Service:
    """One process of the soak's own: started, restarted and stopped by the soak, by its pid."""

    def __init__(self, name, exe, env, port, logdir):
        self.name, self.exe, self.env, self.port = name, exe, env, port
        self.log_path = Path(logdir) / f"{name}.log"
        self.log_path.write_bytes(b"")
        self.proc = None
        self.pids = []

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.exe], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()
        self.pids.append(self.proc.pid)
        return self.proc.pid

    def wait_ready(self, secs=90):
        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_get(f"http://127.0.0.1:{self.port}/api/ready", timeout=2)[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {secs}s:\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def binaries(profile):
    exes = {n: ROOT / "target" / profile / f"sluice-{n}" for n in ("api", "worker")}
    if not all(e.exists() for e in exes.values()):
        cmd = ["cargo", "build", "-q", "-p", "sluice-api", "-p", "sluice-worker"] + (
            ["--release"] if profile == "release" else [])
        print(f"soak: building: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    return {n: str(e) for n, e in exes.items()}


def admin(exe, env, *args):
    r = subprocess.run([exe, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"sluice-api {' '.join(args)} exited with {r.returncode}: {r.stderr[-2000:]}")
    lines = r.stdout.strip().splitlines()
    return lines[-1].strip() if lines else ""


# ---------------------------------------------------------------------------------------------
# The load: an open loop paced in batches, over keep-alive connections.

class Figures:
    def __init__(self):
        self.offered = 0            # events sent
        self.requests = 0
        self.accepted = set()       # eventIds answered `accepted`
        self.by_status = {}         # HTTP status -> requests
        self.shed_events = {}       # status -> events refused
        self.violations = []
        self.latency_max = 0.0
        self.late_batches = 0       # batches the client could not send on time (client-side lag)
        self.t0 = time.monotonic()

    def violation(self, what):
        if len(self.violations) < 50:
            self.violations.append(f"t={time.monotonic() - self.t0:.0f}s {what}")
        elif len(self.violations) == 50:
            self.violations.append("... more violations not listed")


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            n = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(n + 2)
            if n == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def connection(args, host, port, key, queue, fig, stop):
    reader = writer = None
    idle_since = time.monotonic()
    while not (stop.is_set() and queue.empty()):
        try:
            job = await asyncio.wait_for(queue.get(), 0.2)
        except asyncio.TimeoutError:
            continue
        ids, body = job
        # A keep-alive connection the server may be closing (actix closes idle ones after 5 s) is
        # not reused: that race is the client's, not the server's, as in every HTTP client.
        if writer is not None and (reader.at_eof() or time.monotonic() - idle_since > IDLE_REUSE_SECS):
            writer.close()
            reader = writer = None
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        req = (f"POST /api/v1/events/batch HTTP/1.1\r\nhost: {host}:{port}\r\nx-api-key: {key}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
        t0 = time.monotonic()
        fig.offered += len(ids)
        fig.requests += 1
        try:
            writer.write(req)
            await writer.drain()
            status, headers, rbody = await asyncio.wait_for(read_response(reader),
                                                            args.request_timeout_secs)
        except asyncio.TimeoutError:
            fig.violation(f"timeout after {args.request_timeout_secs}s ({len(ids)} events unknown)")
            writer.close()
            reader = writer = None
            continue
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            fig.violation(f"connection reset or closed mid-request: {e!r}")
            writer.close()
            reader = writer = None
            continue
        idle_since = time.monotonic()
        fig.latency_max = max(fig.latency_max, idle_since - t0)
        fig.by_status[status] = fig.by_status.get(status, 0) + 1
        if status in (200, 202):
            reply = json.loads(rbody)
            for r in reply.get("results", []):
                if r.get("status") == "accepted":
                    fig.accepted.add(ids[r["index"]])
                else:
                    fig.violation(f"batch item {r.get('status')}: {json.dumps(r)[:200]}")
        elif status in (429, 503):
            fig.shed_events[status] = fig.shed_events.get(status, 0) + len(ids)
            if not headers.get("retry-after", "").strip().isdigit():
                fig.violation(f"{status} without a Retry-After: {rbody[:200]!r}")
        else:
            fig.violation(f"status {status}: {rbody[:300]!r}")
        if headers.get("connection", "").lower() == "close":
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def pacer(args, run, rate_box, queue, fig, stop, deadline):
    """Puts one batch on the queue every batch/rate seconds; never more than the connections can
    hold, so a slow client shows as `late_batches`, not as an unbounded queue."""
    seq = 0
    budget, last = 0.0, time.monotonic()
    while (now := time.monotonic()) < deadline:
        budget += rate_box[0] * (now - last) / args.batch
        last = now
        while budget >= 1:
            budget -= 1
            if queue.qsize() >= args.connections * 2:
                fig.late_batches += 1
                continue
            ids = [f"soak-{run}-{seq + i}" for i in range(args.batch)]
            events = [{"eventId": e, "eventType": "soak.event", "userId": f"user-{(seq + i) % 997}",
                       "properties": {"n": seq + i, "pad": "x" * 64}} for i, e in enumerate(ids)]
            seq += args.batch
            queue.put_nowait((ids, json.dumps({"events": events}).encode()))
        await asyncio.sleep(0.01)
    stop.set()


# ---------------------------------------------------------------------------------------------

class Run:
    """The soak's own names, secret, ports and processes; `cleanup` undoes what `setup` made."""

    def __init__(self, args):
        self.args = args
        self.uuid = uuid.uuid4()
        self.id = self.uuid.hex[:12]
        self.prefix = f"soak-{self.uuid}"
        self.partitions = int(os.environ.get("SLUICE_REDIS__PARTITIONS") or 8)
        self.database = f"sluice_soak_{self.id}"
        self.redis = Redis(args.redis_url)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.api = self.worker = None
        self.account = None
        self.unlinked = None  # Redis keys of the prefix deleted by cleanup

    def setup(self):
        exes = binaries(self.args.profile)
        api_port, worker_port = free_port(), free_port()
        env = dict(os.environ)  # e.g. MALLOC_ARENA_MAX, RUST_LOG, SLUICE_* tuning; then the soak's own:
        env.update({
            "SLUICE_REDIS__URL": self.args.redis_url,
            "SLUICE_POSTGRES__URL": self.args.postgres_url,
            "SLUICE_MONGO__URL": self.args.mongo_url,
            "SLUICE_REDIS__KEY_PREFIX": self.prefix,
            "SLUICE_REDIS__PARTITIONS": str(self.partitions),
            "SLUICE_MONGO__DATABASE": self.database,
            "SLUICE_AUTH__JWT_SECRET": base64.b64encode(secrets.token_bytes(48)).decode(),
            "SLUICE_API__HOST": "127.0.0.1", "SLUICE_API__PORT": str(api_port),
            "SLUICE_WORKER__HOST": "127.0.0.1", "SLUICE_WORKER__PORT": str(worker_port),
            "SLUICE_WORKER__CONSUMER_NAME": f"soak-{self.id}",
        })
        admin(exes["api"], env, "migrate")
        self.account = admin(exes["api"], env, "accounts", "create", "--email", f"soak-{self.id}@sluice.local")
        self.key = admin(exes["api"], env, "keys", "create", "--account", self.account, "--name", "soak")
        self.api = Service("api", exes["api"], env, api_port, self.out)
        self.worker = Service("worker", exes["worker"], env, worker_port, self.out)
        self.api.start()
        self.worker.start()
        self.api.wait_ready()
        self.worker.wait_ready()

    def cleanup(self):
        notes = []
        for s in (self.api, self.worker):
            if s is not None:
                s.stop()
        try:
            m = pymongo.MongoClient(self.args.mongo_url, serverSelectionTimeoutMS=10_000, socketTimeoutMS=120_000)
            m.drop_database(self.database)
            m.close()
        except Exception as e:  # noqa: BLE001 — report, and still delete the Redis keys
            notes.append(f"could not drop MongoDB database {self.database}: {e!r}")
        try:
            self.unlinked = self.redis.unlink_matching(f"{self.prefix}:*")
        except Exception as e:  # noqa: BLE001
            notes.append(f"could not delete the Redis keys {self.prefix}:*: {e!r}")
        return notes


async def soak(args, run):
    wall0 = time.monotonic()
    fig = Figures()
    notes = []
    # Never more calibration than half the load: it must end before the worker is killed.
    calibrate_secs = min(args.calibrate_secs, args.secs / 2)
    print(f"soak: run {run.uuid}: Redis keys {run.prefix}:* ({run.partitions} partitions), "
          f"database {run.database}", flush=True)
    run.setup()
    setup_secs = time.monotonic() - wall0
    _, maxmem, policy = run.redis.memory()
    if maxmem == 0:
        notes.append("Redis runs without maxmemory: used_memory is reported, not bounded")
    print(f"soak: account {run.account}, {args.profile} api :{run.api.port} pid {run.api.proc.pid}, "
          f"worker :{run.worker.port} pid {run.worker.proc.pid}; {args.secs}s of load, "
          f"batches of {args.batch}", flush=True)

    queue = asyncio.Queue()
    stop = asyncio.Event()
    rate_box = [args.rate or args.calibrate_rate]
    t_start = time.monotonic()
    deadline = t_start + args.secs
    conns = [asyncio.create_task(connection(args, "127.0.0.1", run.api.port, run.key, queue, fig, stop))
             for _ in range(args.connections)]
    pace = asyncio.create_task(pacer(args, run.id, rate_box, queue, fig, stop, deadline))

    # Peaks per process (name#pid), kB: VmRSS sampled each second, VmHWM (the kernel's own peak),
    # and the anonymous (heap) and file-backed (the mapped binary) parts of the sampled RSS.
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    peaks = {}
    redis_peak = [0]
    stream_mem_peak = [0]
    backlog_peak = [0]
    backlog_events_peak = [0]
    killed_at = restarted_pid = None
    stored_rate = None          # the first measurement, after --calibrate-secs
    offers = []                 # (seconds into the load, events/s offered from then)
    # What the worker stored so far, read from Redis rather than from its metrics (which a kill -9
    # resets): events accepted minus the events in the group's lag + pending entries (estimated).
    stored_hist = []            # (monotonic, estimated events stored)

    def sample():
        for s in (run.api, run.worker):
            if s.alive():
                v = proc_kb(s.proc.pid, *fields)
                if v:
                    p = peaks.setdefault(f"{s.name}#{s.proc.pid}", dict.fromkeys(fields, 0))
                    for k in fields:
                        p[k] = max(p[k], v.get(k, 0))
        for addr in run.redis.masters():
            f = run.redis.info(addr, "memory")
            used, m = int(f["used_memory"]), int(f["maxmemory"])
            redis_peak[0] = max(redis_peak[0], used)
            if m and used > m:
                fig.violation(f"Redis {addr[0]}:{addr[1]} used_memory {used} over its maxmemory {m}")
        states = run.redis.streams_state(run.prefix, run.partitions)
        stream_mem_peak[0] = max(stream_mem_peak[0], sum(s["memory"] for s in states))
        entries, events, drained = backlog_of(states)
        backlog_peak[0] = max(backlog_peak[0], entries)
        backlog_events_peak[0] = max(backlog_events_peak[0], events)
        return entries, events, drained

    offers.append((0, rate_box[0]))
    next_adjust = t_start + calibrate_secs
    while not pace.done():
        await asyncio.sleep(1)
        _, backlog_events, _ = sample()
        now = time.monotonic()
        stored_hist.append((now, len(fig.accepted) - backlog_events))
        # Offer `--overload` times what the worker stored over the last 10 s: measured once after
        # the calibration, then again every 5 s, as the store rate moves with the machine's load.
        if not args.rate and now >= next_adjust:
            t0, s0 = next((h for h in stored_hist if h[0] >= now - 10), stored_hist[0])
            if now - t0 >= 3:
                rate = max(0.0, (stored_hist[-1][1] - s0) / (now - t0))
                new = max(int(rate * args.overload), args.batch)
                if stored_rate is None:
                    stored_rate = rate
                    print(f"soak: the worker stored {rate:.0f} events/s under load; "
                          f"offering {new} events/s from now (adjusted every 5 s)", flush=True)
                if new != rate_box[0]:
                    rate_box[0] = new
                    offers.append((round(now - t_start, 1), new))
            next_adjust = now + 5
        if killed_at is None and now - t_start >= args.secs / 2:
            wpid = run.worker.proc.pid
            run.worker.kill9()
            killed_at = now - t_start
            print(f"soak: kill -9 worker {wpid} at {killed_at:.0f}s", flush=True)
            await asyncio.sleep(1)
            restarted_pid = run.worker.start()
            print(f"soak: worker started again as {restarted_pid}", flush=True)
    await asyncio.gather(*conns)
    load_secs = time.monotonic() - t_start
    # Means over the load after the first calibration: what was stored and what was offered.
    after = [h for h in stored_hist if h[0] >= t_start + calibrate_secs]
    stored_rate_load = ((after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0])
                        if len(after) > 1 and after[-1][0] > after[0][0] else 0.0)
    print(f"soak: load stopped after {load_secs:.0f}s; {len(fig.accepted)} accepted; draining", flush=True)

    # The drain, watched through Redis (the group's lag and pending entries) rather than by counting
    # in MongoDB: a count is a scan in the stand-in and would slow the very writes it waits for.
    t_drain = time.monotonic()
    last, last_change = None, time.monotonic()
    while True:
        backlog, _, drained = sample()
        if backlog != last:
            last, last_change = backlog, time.monotonic()
        if drained:
            break
        if not run.worker.alive():
            fig.violation(f"the worker exited ({run.worker.proc.returncode}) with {backlog} entries "
                          f"unacknowledged:\n{run.worker.log_tail()}")
            break
        if time.monotonic() - t_drain > args.drain_timeout_secs or time.monotonic() - last_change > 120:
            fig.violation(f"drain stalled with {backlog} entries unacknowledged")
            break
        await asyncio.sleep(1)
    drain_secs = time.monotonic() - t_drain
    await asyncio.sleep(3)  # the last acknowledged batch's rollups; anything extra would show now
    sample()
    if not run.api.alive():
        fig.violation(f"the api exited ({run.api.proc.returncode}):\n{run.api.log_tail()}")
    mongo = pymongo.MongoClient(args.mongo_url, socketTimeoutMS=600_000)
    db = mongo[run.database]
    stored_ids = [d["eventId"] for d in db.events.find({"accountId": run.account}, {"eventId": 1, "_id": 0})]
    stored_set = set(stored_ids)
    missing = fig.accepted - stored_set
    extra = stored_set - fig.accepted
    if len(stored_ids) != len(stored_set):
        fig.violation(f"{len(stored_ids) - len(stored_set)} events stored more than once")
    if missing:
        fig.violation(f"{len(missing)} accepted events not stored, e.g. {sorted(missing)[:3]}")
    if extra:
        fig.violation(f"{len(extra)} stored events that were never accepted, e.g. {sorted(extra)[:3]}")
    elsewhere = {c: db[c].count_documents({}) for c in db.list_collection_names()
                 if c in ("events_dlq", "events_quarantine")}
    mongo.close()
    for c, n in elsewhere.items():
        if n:
            fig.violation(f"{n} events in {c}")
    for proc, p in peaks.items():
        if p["VmHWM"] > args.max_rss_mb * 1024 or p["VmRSS"] > args.max_rss_mb * 1024:
            fig.violation(f"{proc} peak RSS {max(p['VmHWM'], p['VmRSS']) // 1024} MiB over "
                          f"--max-rss-mb {args.max_rss_mb}")

    mib = lambda kb: round(kb / 1024)  # noqa: E731
    report = {
        "run": str(run.uuid), "profile": args.profile, "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "secs": args.secs, "load_secs": round(load_secs, 1), "batch": args.batch,
        "setup_secs": round(setup_secs, 1),
        "stored_rate_calibration": round(stored_rate or 0),
        "stored_rate_after_calibration": round(stored_rate_load),
        "offered_rate_after_calibration": round(sum(
            (min(t1, load_secs) - max(t0, calibrate_secs)) * r for (t0, r), (t1, _) in
            zip(offers, offers[1:] + [(load_secs, 0)]) if min(t1, load_secs) > max(t0, calibrate_secs))
            / max(load_secs - calibrate_secs, 1e-9)),
        "offers": offers,
        "offered": fig.offered, "requests": fig.requests, "accepted": len(fig.accepted),
        "shed_events_by_status": fig.shed_events, "requests_by_status": fig.by_status,
        "late_batches_client": fig.late_batches, "latency_max_secs": round(fig.latency_max, 3),
        "worker_killed_at_secs": round(killed_at or 0, 1), "worker_restarted_pid": restarted_pid,
        "stored": len(stored_ids), "stored_distinct": len(stored_set), "dead_or_quarantined": elsewhere,
        "drain_secs": round(drain_secs, 1), "backlog_peak_entries": backlog_peak[0],
        "backlog_peak_events_estimate": backlog_events_peak[0], "redis_key_prefix": run.prefix,
        "partitions": run.partitions,
        "stream_memory_peak_mib": round(stream_mem_peak[0] / 2**20),
        "redis_used_memory_peak_mib": round(redis_peak[0] / 2**20),
        "redis_maxmemory_mib": round(maxmem / 2**20), "redis_policy": policy,
        "rss_peaks_mib": {proc: {k: mib(v) for k, v in p.items()} for proc, p in peaks.items()},
        "max_rss_mb": args.max_rss_mb,
        "notes": notes, "violations": fig.violations,
    }
    return report, wall0


def main():
    args = parse_args()
    # SIGTERM (make stopping the suite) unwinds through the finally as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = Run(args)
    wall0 = time.monotonic()
    report = None
    try:
        report, wall0 = asyncio.run(soak(args, run))
    finally:
        t = time.monotonic()
        cleanup_notes = run.cleanup()
        if report is None:
            print("soak: cleaned up after a failure: " + ("; ".join(cleanup_notes) or "ok"), file=sys.stderr)
    report["cleanup_secs"] = round(time.monotonic() - t, 1)
    report["wall_secs"] = round(time.monotonic() - wall0, 1)
    report["notes"] += cleanup_notes
    report["redis_keys_unlinked"] = run.unlinked
    (run.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    shed = sum(report["shed_events_by_status"].values())
    print(f"soak: offered {report['offered']}, accepted {report['accepted']}, shed {shed} "
          f"{report['shed_events_by_status']}, stored {report['stored_distinct']} distinct, "
          f"drained in {report['drain_secs']:.0f}s, Redis used_memory peak {report['redis_used_memory_peak_mib']} "
          f"MiB of maxmemory {report['redis_maxmemory_mib']} MiB, RSS peaks (MiB) "
          f"{ {k: v['VmHWM'] for k, v in report['rss_peaks_mib'].items()} }, wall {report['wall_secs']:.0f}s")
    if report["violations"]:
        print("soak: FAILED:\n  " + "\n  ".join(report["violations"]), file=sys.stderr)
        return 1
    print("soak: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
