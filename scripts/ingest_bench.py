#!/usr/bin/env python3
"""The ingest-tier benchmark of issue 13 (item 5), measured the way Sluice is measured from outside.

    python3 scripts/ingest_bench.py [--api-bin target/release/sluice-api] [--env K=V ...] [--out F.json]

For each load shape of `benches/wrk/` (copies of `../shared/bench/single.lua` and `batch.lua`):
a 5 s wrk warm-up with its own TAG, then wrk `-t1 -c64 -d15s` with another TAG. The api runs
alone (no worker: nothing reads the stream), its key's quota lifted (`quota_per_sec`/`quota_burst`
on the key row in PostgreSQL, the key's cached record `apikey:<sha256>` deleted from Redis) and the
backlog guard lifted (`SLUICE_API__MAX_BACKLOG`, `SLUICE_API__MAX_BACKLOG_BYTES`).

Measured per shape, over the 15 s run:
- events/s, p50, p99 and non-2xx from wrk (batch requests carry 100 events);
- CPU µs per accepted event of `redis-server` and of `sluice-api`: utime + stime (fields 14 + 15
  of /proc/<pid>/stat, all threads) after minus before, in clock ticks (`os.sysconf`), divided by
  the events accepted ((requests - non-2xx) x events per request);
- Redis bytes per event: `used_memory` (INFO memory) after the run minus before it, each read with
  every stream emptied first (XTRIM MAXLEN 0 on every key of type stream), so only what the events
  leave behind besides the stream (the dedup state) is counted, divided by the events accepted.

It starts its own redis-server (fresh, on a free port, `--save "" --appendonly yes --appendfsync
everysec`, data in a temp dir) and its own api (free port, its own JWT secret), and uses the shared
PostgreSQL and MongoDB of `make infra` (started with `make infra` when they do not answer). The key
is made with `sluice-api demo --key-file <temp file>` (a new key of the demo account) and its row
is deleted afterwards. Before each shape it prints `uptime` and, while the 1-minute load average
is above `--max-load` (and a 5 s sample does not show the box idle), waits in 30 s steps (at most
`--max-wait` seconds), since the figures are only comparable on a quiet box; the CPU other
processes used during each run is printed too, and a run during which they used more than
`--max-other` cores is measured again (at most `--retries` times, within the same wait budget). Everything it started is stopped at the end.
"""
import argparse, hashlib, json, os, re, resource, secrets, shutil, signal, socket, subprocess
import sys, tempfile, time, urllib.error, urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
WRK = ROOT / "benches" / "wrk"
TICKS = os.sysconf("SC_CLK_TCK")
SHAPES = {"single": ("single.lua", 1), "batch": ("batch.lua", 100)}
QUOTA = 1_000_000_000  # events/s and burst: the column is an INTEGER


def log(msg):
    print(f"# {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def cpu_ticks(pid):
    """utime + stime (fields 14 + 15) and cutime + cstime (16 + 17) of a process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()  # rest[0] is field 3
    return int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def system_busy_ticks():
    """CPU time of every process on the box (user, nice, system; not irq/softirq), in ticks."""
    with open("/proc/stat") as f:
        user, nice, system = map(int, f.readline().split()[1:4])
    return user + nice + system


def children_cpu_secs():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Redis:
    def __init__(self, port):
        self.port = port

    def __call__(self, *args, check=True):
        p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *map(str, args)],
                           capture_output=True, text=True)
        if check and (p.returncode != 0 or p.stdout.startswith("ERR") or p.stdout.startswith("(error)")):
            raise RuntimeError(f"redis-cli {' '.join(map(str, args))}: {p.stdout}{p.stderr}")
        return p.stdout

    def used_memory(self):
        return int(re.search(r"^used_memory:(\d+)", self("INFO", "memory"), re.M).group(1))

    def expired_keys(self):
        return int(re.search(r"^expired_keys:(\d+)", self("INFO", "stats"), re.M).group(1))

    def stream_keys(self):
        keys, cursor = [], "0"
        while True:
            out = self("SCAN", cursor, "COUNT", 1000, "TYPE", "stream").split("\n")
            cursor, keys = out[0].strip(), keys + [k for k in out[1:] if k]
            if cursor == "0":
                return sorted(set(keys))

    def empty_streams(self):
        """XTRIM MAXLEN 0 on every stream (keys and consumer groups stay); returns entries dropped."""
        return sum(int(self("XTRIM", k, "MAXLEN", 0).strip() or 0) for k in self.stream_keys())


def load1():
    return float(open("/proc/loadavg").read().split()[0])


def busy_cores(secs=5):
    """Cores the box's processes use over `secs` (ours are idle meanwhile)."""
    b0, t0 = system_busy_ticks(), time.monotonic()
    time.sleep(secs)
    return (system_busy_ticks() - b0) / TICKS / (time.monotonic() - t0)


def wait_quiet(max_load, max_wait):
    """Waits while the 1-minute load average is above `max_load`, unless a 5 s sample shows the
    box idle (then the load average is the echo of this bench's own last phase)."""
    waited = 0
    while True:
        up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        busy = busy_cores()
        up = f"{up}; {busy:.2f} cores busy over 5 s"
        log(f"uptime: {up}")
        if load1() <= max_load or busy <= 0.10:
            return up, waited
        if waited >= max_wait:
            log(f"load average still above {max_load} and the wait budget spent; measuring anyway")
            return up, waited
        log(f"load average above {max_load}: waiting 30 s")
        time.sleep(30)
        waited += 30


def http(url, body=None, headers=None, timeout=5):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def accepted_metric(api_url):
    """The api's own count of accepted events (`sluice_events_total{outcome="accepted"}`), if any."""
    try:
        _, text = http(f"{api_url}/metrics")
    except OSError:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("sluice_events_total{") and 'outcome="accepted"' in line:
            total, seen = total + float(line.rsplit(" ", 1)[1]), True
    return total if seen else None


def wrk(args, script, key, tag, secs):
    env = {**os.environ, "KEY": key, "TAG": tag}
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{secs}s", "-s", str(script), args.api_url]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=secs + 120)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout


def parse_wrk(out):
    res = dict(re.findall(r"(\w+)=([\d.]+)", re.search(r"^RESULT .*$", out, re.M).group(0)))
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m|h)\b", out)
    scale = {"s": 1, "ms": 1e-3, "m": 60, "h": 3600}[m.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(res["rps"]), "p50_ms": float(res["p50_ms"]), "p99_ms": float(res["p99_ms"]),
        "requests": int(m.group(1)), "wrk_secs": float(m.group(2)) * scale,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, sock.groups())) if sock else 0,
    }


def measure(args, name, key, redis, redis_pid, api_pid, max_wait):
    script, per_request = SHAPES[name]
    script = WRK / script
    uptime, waited = wait_quiet(args.max_load, max_wait)
    run = secrets.token_hex(4)
    log(f"{name}: warm-up {args.warmup} s (TAG=warm{run})")
    wrk(args, script, key, f"warm{run}", args.warmup)
    dropped = redis.empty_streams()
    time.sleep(1)
    mem0, exp0 = redis.used_memory(), redis.expired_keys()
    acc0 = accepted_metric(args.api_url)
    (r0, rc0), (a0, _), sys0, ch0, t0 = cpu_ticks(redis_pid), cpu_ticks(api_pid), system_busy_ticks(), \
        children_cpu_secs(), time.monotonic()
    log(f"{name}: run {args.duration} s (TAG=run{run}); {dropped} warm-up stream entries trimmed")
    out = wrk(args, script, key, f"run{run}", args.duration)
    (r1, rc1), (a1, _), sys1, ch1, t1 = cpu_ticks(redis_pid), cpu_ticks(api_pid), system_busy_ticks(), \
        children_cpu_secs(), time.monotonic()
    acc1 = accepted_metric(args.api_url)
    entries = redis.empty_streams()
    time.sleep(1)
    mem1, exp1 = redis.used_memory(), redis.expired_keys()
    w = parse_wrk(out)
    accepted = (w["requests"] - w["non2xx"]) * per_request
    redis_s, api_s = (r1 - r0) / TICKS, (a1 - a0) / TICKS
    wall, wrk_s = t1 - t0, ch1 - ch0
    other_s = (sys1 - sys0) / TICKS - redis_s - api_s - wrk_s
    per = lambda x: x / accepted if accepted else float("nan")
    fig = {
        "events_per_sec": w["rps"] * per_request, "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"],
        "non2xx": w["non2xx"], "socket_errors": w["socket_errors"], "requests": w["requests"],
        "events_accepted": accepted,
        "events_accepted_by_api_metric": None if acc0 is None or acc1 is None else acc1 - acc0,
        "stream_entries_trimmed_after_run": entries,
        "redis_cpu_secs": redis_s, "api_cpu_secs": api_s, "wrk_cpu_secs": wrk_s,
        "redis_us_per_event": per(redis_s * 1e6), "api_us_per_event": per(api_s * 1e6),
        "redis_child_cpu_secs": (rc1 - rc0) / TICKS,
        "redis_used_memory_before": mem0, "redis_used_memory_after": mem1,
        "redis_bytes_per_event": per(mem1 - mem0),
        # Keys that expired between the two memory readings (their bytes are missing from the delta).
        "redis_keys_expired_meanwhile": exp1 - exp0,
        "wall_secs": wall, "other_processes_cores": other_s / wall,
        "uptime_before": uptime, "waited_for_quiet_secs": waited,
    }
    log(f"{name}: {json.dumps(fig)}")
    return fig


def table(results):
    rows = ["| run | ev/s | p50 ms | p99 ms | non-2xx | Redis µs/event | api µs/event | Redis B/event |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, f in results.items():
        rows.append(f"| {name} | {f['events_per_sec']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
                    f"{f['non2xx']} | {f['redis_us_per_event']:.2f} | {f['api_us_per_event']:.2f} | "
                    f"{f['redis_bytes_per_event']:.1f} |")
    notes = [f"- {name}: before it `{f['uptime_before']}`; other processes used "
             f"{f['other_processes_cores']:.2f} cores during the run; {f['events_accepted']:,} events accepted"
             + (f" ({f['events_accepted_by_api_metric']:,.0f} by the api's metric)"
                if f["events_accepted_by_api_metric"] is not None else "")
             + f"; redis AOF-rewrite child CPU {f['redis_child_cpu_secs']:.2f} s (not counted)"
             + (f"; **{f['redis_keys_expired_meanwhile']} Redis keys expired during the run: B/event understated**"
                if f["redis_keys_expired_meanwhile"] else "")
             + (f"; attempt {f['attempt']} (earlier ones had other processes above {f['max_other']} cores)"
                if f["attempt"] > 1 else "")
             + (f"; **other processes above {f['max_other']} cores: not a quiet run**"
                if f["other_processes_cores"] > f["max_other"] else "")
             for name, f in results.items()]
    return "\n".join(rows + [""] + notes)


def two_kb_schema():
    """About 2 KB of JSON Schema that the wrk shapes' events (`{"path", "price"}`) satisfy: 20
    bounded string fields, a pattern, a format, a range, an enum (as benches/benches/hot_path.rs)."""
    props = {f"field_{i:02}": {"type": "string", "minLength": 1, "maxLength": 64,
                                "description": "a string field of the plan"} for i in range(20)}
    props.update({"path": {"type": "string", "pattern": "^/[a-z0-9/]*$"},
                  "referrer": {"type": "string", "minLength": 1, "maxLength": 2048},
                  "price": {"type": "number", "minimum": 0, "maximum": 1000000},
                  "plan": {"enum": ["free", "pro", "team"]}})
    return {"type": "object", "required": ["path", "price"], "properties": props,
            "additionalProperties": True}


def publish_2kb_schema(api_url):
    """As the demo account (whose key the run uses): the schema, then mode enforce."""
    creds = json.dumps({"email": "demo@sluice.local", "password": "sluice-demo-password"}).encode()
    status, body = http(f"{api_url}/api/v1/auth/login", creds, {"content-type": "application/json"})
    if status != 200:
        raise RuntimeError(f"demo login answered {status}: {body}")
    auth = {"content-type": "application/json", "authorization": f"Bearer {json.loads(body)['token']}"}
    schema = two_kb_schema()
    status, body = http(f"{api_url}/api/v1/schemas",
                        json.dumps({"eventType": "page_view", "schema": schema}).encode(), auth)
    if status != 201:
        raise RuntimeError(f"publishing the schema answered {status}: {body}")
    req = urllib.request.Request(f"{api_url}/api/v1/schemas/page_view/mode",
                                 data=json.dumps({"mode": "enforce"}).encode(), method="PUT", headers=auth)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    log(f"a {len(json.dumps(schema))}-byte schema for page_view, mode enforce")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api-bin", default=str(ROOT / "target" / "release" / "sluice-api"))
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="extra environment for the api (repeatable), e.g. SLUICE_REDIS__PARTITIONS=8")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--redis-conf", action="append", default=[], metavar="--NAME=VALUE",
                    help="an extra redis-server option for a diagnosis, e.g. --redis-conf=--appendonly=no "
                         "(the figures compare with the outside ones only without it)")
    ap.add_argument("--shapes", default="single,batch", help="comma-separated: single,batch")
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-load", type=float, default=1.0, help="wait while the 1-minute load average is above")
    ap.add_argument("--max-wait", type=int, default=600,
                    help="seconds to wait for --max-load at most, per shape (all its attempts together)")
    ap.add_argument("--max-other", type=float, default=0.3,
                    help="a run during which other processes used more cores than this is measured again")
    ap.add_argument("--retries", type=int, default=2, help="how many times a shape is measured again at most")
    ap.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5433/sluice")
    ap.add_argument("--mongo-url", default="mongodb://127.0.0.1:27018/?directConnection=true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, AOF)")
    ap.add_argument("--schema-2kb", action="store_true",
                    help="publish a 2 KB tracking-plan schema for page_view (the shapes' type) in mode "
                         "enforce first, so every event is judged by it (issue 16's measurement)")
    args = ap.parse_args()
    extra = {}
    for kv in args.env:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--env wants K=V, not {kv!r}")
        extra[k] = v
    api_bin = Path(args.api_bin).resolve()
    shapes = [s for s in args.shapes.split(",") if s]
    if not api_bin.is_file() or any(s not in SHAPES for s in shapes):
        ap.error(f"no {api_bin}, or an unknown shape in {args.shapes}")

    # SIGTERM/SIGHUP clean up like Ctrl-C.
    def interrupted(*_):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    pg, mongo = urlparse(args.postgres_url), urlparse(args.mongo_url.split(",")[0])
    if not (port_open(pg.hostname, pg.port or 5432) and port_open(mongo.hostname, mongo.port or 27017)):
        log("PostgreSQL or MongoDB does not answer: make infra")
        subprocess.run(["make", "infra"], cwd=ROOT, check=True)

    tmp = Path(tempfile.mkdtemp(prefix="sluice-ingest-bench-"))
    redis_proc = api_proc = key_hash = None
    psql = lambda sql: subprocess.run(["psql", args.postgres_url, "-q", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                                      capture_output=True, text=True, check=True).stdout.strip()
    try:
        # Our own Redis.
        rport = free_port()
        (tmp / "redis").mkdir()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(tmp / "redis"),
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
             "--logfile", str(tmp / "redis.log")] + [a for kv in args.redis_conf for a in kv.split("=", 1)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        redis = Redis(rport)
        for _ in range(100):
            if redis("PING", check=False).strip() == "PONG":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"redis-server on {rport} does not answer; see {tmp}/redis.log")
        log(f"redis-server {redis_proc.pid} on {rport}, data in {tmp}/redis")

        aport = free_port()
        args.api_url = f"http://127.0.0.1:{aport}"
        env = {k: v for k, v in os.environ.items() if k != "SLUICE_CONFIG"}
        env.update({
            "SLUICE_REDIS__URL": f"redis://127.0.0.1:{rport}",
            "SLUICE_POSTGRES__URL": args.postgres_url,
            "SLUICE_MONGO__URL": args.mongo_url,
            "SLUICE_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
            "SLUICE_API__HOST": "127.0.0.1",
            "SLUICE_API__PORT": str(aport),
            "SLUICE_API__MAX_BACKLOG": str(10**12),
            "SLUICE_API__MAX_BACKLOG_BYTES": str(10**15),
        })
        env.update(extra)
        # The api reads ./sluice.toml when there is one: run it where there is none.
        admin = lambda *a: subprocess.run([str(api_bin), *a], env=env, cwd=tmp, capture_output=True, text=True)
        m = admin("migrate")
        if m.returncode != 0:
            log(f"`sluice-api migrate` failed (the schema may be ahead of this binary), going on: {m.stderr.strip()[-300:]}")
        d = admin("demo", "--key-file", str(tmp / "key"))
        if d.returncode != 0:
            raise RuntimeError(f"sluice-api demo failed: {d.stderr}")
        key = d.stdout.strip().splitlines()[-1].strip()
        # The demo account's tracking plan for the shapes' type: none, unless this run publishes
        # one (an earlier --schema-2kb run leaves its schema behind otherwise).
        psql("DELETE FROM event_type_modes WHERE event_type = 'page_view' AND account_id = "
             "(SELECT id FROM accounts WHERE email = 'demo@sluice.local')")
        psql("DELETE FROM event_schemas WHERE event_type = 'page_view' AND account_id = "
             "(SELECT id FROM accounts WHERE email = 'demo@sluice.local')")
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        rows = psql(f"UPDATE api_keys SET quota_per_sec = {QUOTA}, quota_burst = {QUOTA} "
                    f"WHERE key_hash = '{key_hash}' RETURNING id")
        if not rows:
            raise RuntimeError("the demo key's row was not found in api_keys")
        redis("DEL", f"apikey:{key_hash}")
        log(f"key {key[:12]}… (id {rows}), quota lifted to {QUOTA}/s burst {QUOTA}")

        api_proc = subprocess.Popen([str(api_bin)], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                    stdout=open(tmp / "api.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            if api_proc.poll() is not None:
                raise RuntimeError(f"the api exited ({api_proc.returncode}): {(tmp / 'api.log').read_text()[-2000:]}")
            try:
                if http(f"{args.api_url}/api/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the api is not ready after 60 s; see {tmp}/api.log")
            time.sleep(0.2)
        log(f"sluice-api {api_proc.pid} ({api_bin}) on {aport}, extra env {extra or 'none'}")
        if args.schema_2kb:
            publish_2kb_schema(args.api_url)
        status, body = http(f"{args.api_url}/api/v1/events",
                            json.dumps({"eventId": f"probe-{secrets.token_hex(6)}", "eventType": "page_view",
                                        "userId": "user-1",
                                        "properties": {"path": "/probe", "price": 1}}).encode(),
                            {"content-type": "application/json", "x-api-key": key})
        if status != 202:
            raise RuntimeError(f"a probe event was answered {status}: {body}")

        results = {}
        for name in shapes:
            waited = 0  # --max-wait is the budget of all the attempts of one shape
            for attempt in range(1, args.retries + 2):
                fig = measure(args, name, key, redis, redis_proc.pid, api_proc.pid, args.max_wait - waited)
                waited += fig["waited_for_quiet_secs"]
                fig.update(attempt=attempt, max_other=args.max_other)
                if fig["other_processes_cores"] <= args.max_other or waited >= args.max_wait:
                    break
                log(f"{name}: other processes used {fig['other_processes_cores']:.2f} cores during the run"
                    + ("; measuring again" if attempt <= args.retries else "; keeping it"))
            results[name] = fig
        print()
        print(f"api `{api_bin}`, extra env {' '.join(f'{k}={v}' for k, v in extra.items()) or 'none'}; "
              f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s after a {args.warmup} s warm-up; "
              f"{os.cpu_count()} cores")
        print()
        print(table(results))
        if args.out:
            Path(args.out).write_text(json.dumps({
                "api_bin": str(api_bin), "extra_env": extra, "threads": args.threads,
                "connections": args.connections, "duration_secs": args.duration, "warmup_secs": args.warmup,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}, indent=2) + "\n")
            log(f"wrote {args.out}")
    except KeyboardInterrupt:
        log("interrupted")
        return_code = 130
    except Exception:
        for f in ("api.log", "redis.log"):
            if (tmp / f).exists():
                log(f"last lines of {f}:\n" + "".join((tmp / f).read_text(errors="replace").splitlines(True)[-15:]))
        raise
    else:
        return_code = 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc, name in ((api_proc, "sluice-api"), (redis_proc, "redis-server")):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    log(f"{name} {proc.pid} did not stop in 15 s: kill -9")
                    proc.kill()
                    proc.wait()
        if key_hash:
            try:
                psql(f"DELETE FROM api_keys WHERE key_hash = '{key_hash}'")
            except subprocess.CalledProcessError as e:
                log(f"could not delete the bench key's row: {e.stderr.strip()}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return return_code


if __name__ == "__main__":
    sys.exit(main())
