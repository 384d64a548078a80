#!/usr/bin/env python3
"""`make bench`: every figure of docs/PERFORMANCE.md in one run on this machine.

Starts the stack (`make up`), then measures, in order: the criterion hot-path benches; the limits
(redis-benchmark XADD with pipelines of 100 against the same Redis, and `sluice-hello`, an actix
handler that does nothing, under the same generator); Sluice single-event and 100-event-batch ingest
at saturation and at a fixed rate; the MongoDB server's own insert_many(100) rate with the same
indexes; the worker's drain rate of a backlog; end-to-end at half the drain rate; and the analytics
summary latency over 10 million events' rollups. Writes docs/PERFORMANCE.md (generated section).
"""
import json, os, platform, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
ART = ROOT / "artifacts" / "bench"
BACKLOG = int(os.environ.get("BACKLOG", "400000"))
SECS = int(os.environ.get("BENCH_SECS", "20"))


def sh(cmd, **kw):
    print("$", cmd if isinstance(cmd, str) else " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, text=True,
                          capture_output=True, cwd=ROOT, **kw).stdout


def redis(*args):
    return sh(["redis-cli", "-p", "6380", *map(str, args)])


PARTITIONS = int(os.environ.get("SLUICE_REDIS__PARTITIONS", "8"))


def backlog():
    """Unacknowledged entries over every partition, as the analytics pipeline view computes them."""
    total = 0
    for p in range(PARTITIONS):
        stream = f"sluice:{{p{p}}}:events"
        if redis("EXISTS", stream).strip() != "1":
            continue
        out = redis("XINFO", "GROUPS", stream).split("\n")
        kv = dict(zip(out[0::2], out[1::2]))
        info = redis("XINFO", "STREAM", stream).split("\n")
        st = dict(zip(info[0::2], info[1::2]))
        lag = kv.get("lag", "").strip()
        length = int(st.get("length", "0"))
        if kv.get("last-delivered-id") == st.get("last-generated-id"):
            lag = 0
        else:
            lag = min(int(lag) if lag.isdigit() else length, length)
        total += int(kv.get("pending", "0")) + lag
    return total


def wait_drained(limit=1800):
    t = time.time()
    while backlog() > 0 and time.time() - t < limit:
        time.sleep(1)


def loadtest(name, *args):
    out = ART / name
    sh([REL / "sluice-loadtest", "--keys", KEY, "--quiet", "--out", out, *map(str, args)])
    return json.loads((out / "report.json").read_text())


def stop_worker():
    pid = (ROOT / ".data/run/worker.pid").read_text().strip()
    subprocess.run(["kill", pid])
    time.sleep(2)


# The api refuses new events past `api.max_backlog` (500,000); the saturation runs below queue more
# than that while the worker is stopped, so the bench runs its own api with a higher limit.
os.environ["SLUICE_API__MAX_BACKLOG"] = "5000000"
sh("make up")
api_pid = ROOT / ".data/run/api.pid"
if api_pid.exists():
    subprocess.run(["kill", api_pid.read_text().strip()])
    time.sleep(2)
sh("make up")
sh("cargo build --release -q -p sluice-loadtest -p sluice-benches --bins")
ART.mkdir(parents=True, exist_ok=True)
KEY = (ROOT / ".data/demo-key").read_text().strip()
wait_drained()
R = {}

# Criterion (short runs: the figures are per operation).
crit = sh("cargo bench -q -p sluice-benches --bench hot_path -- --warm-up-time 1 --measurement-time 3 2>&1")
R["criterion"] = re.findall(r"^(\S+)\s*\n?\s*time:\s*\[[^\]]*?(\d+\.?\d*\s*\S+)\s+(\d+\.?\d*\s*\S+)\s", crit, re.M)
(ART / "criterion.txt").write_text(crit)

# Limits.
rb = sh(["redis-benchmark", "-p", "6380", "-n", "500000", "-P", "100", "-q", "XADD", "bench:xadd", "*", "f", "v"])
R["redis_xadd_p100"] = float(re.search(r"([\d.]+) requests per second", rb).group(1))
redis("DEL", "bench:xadd")
hello = subprocess.Popen([REL / "sluice-hello"], env={**os.environ, "HELLO_PORT": "3009"})
time.sleep(1)
try:
    R["hello"] = json.loads(json.dumps(loadtest("hello", "--url", "http://127.0.0.1:3009",
        "--connections", 64, "--duration-secs", SECS // 2, "--warmup-secs", 2)))
finally:
    hello.terminate()

# Sluice ingest, worker stopped so the backlog does not slow Redis with reads.
stop_worker()
R["single_fixed"] = loadtest("single-fixed", "--rate", 5000, "--duration-secs", SECS // 2, "--warmup-secs", 2)
R["single"] = loadtest("single", "--connections", 64, "--duration-secs", SECS // 2, "--warmup-secs", 2)
R["batch"] = loadtest("batch", "--connections", 8, "--batch", 100, "--duration-secs", 3, "--warmup-secs", 1)
R["backlog_before_drain"] = backlog()
if R["backlog_before_drain"] < BACKLOG:
    loadtest("fill", "--connections", 8, "--batch", 100, "--duration-secs",
             max(1, (BACKLOG - R["backlog_before_drain"]) // 50000), "--warmup-secs", 0)
R["backlog_before_drain"] = backlog()

# Drain.
sh("make up")
t0 = time.time()
wait_drained()
R["drain_secs"] = time.time() - t0
R["drain_rate"] = R["backlog_before_drain"] / R["drain_secs"]
R["mongo_insert_many"] = json.loads(sh([REL / "sluice-bench-mongo", "50000"]).strip().splitlines()[-1])

# End to end at half the drain rate.
R["e2e"] = loadtest("e2e", "--rate", int(R["drain_rate"] / 2), "--duration-secs", SECS, "--warmup-secs", 2, "--e2e")

# Analytics.
an = sh([REL / "sluice-bench-analytics"])
R["analytics"] = json.loads((ROOT / "artifacts/bench-analytics.json").read_text())

# Export of stored events with the api's RSS sampled (issue 18): an api of its own, release.
# 1,000,000 by default (EXPORT_EVENTS to change it): about 5 minutes to store them in the stand-in
# and 1.5 to export them.
sh([ROOT / ".venv/bin/python", ROOT / "scripts/export_bench.py", "--json", ART / "export.json"],
   env={**os.environ, "PROFILE": "release", "EVENTS": os.environ.get("EXPORT_EVENTS", "1000000")})
R["export"] = json.loads((ART / "export.json").read_text())
(ART / "results.json").write_text(json.dumps(R, indent=2))

commit = sh("git rev-parse --short HEAD").strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lat = lambda r: r["latency"]
svc = lambda r, s: r["services"].get(s, {})
ratio_single = R["single"]["achieved_requests_per_sec"] / R["hello"]["achieved_requests_per_sec"]
ratio_batch = R["batch"]["achieved_events_per_sec"] / R["redis_xadd_p100"]
ratio_drain = R["drain_rate"] / R["mongo_insert_many"]["docs_per_sec"]
a = R["analytics"]["results"]
lines = [
    f"Generated by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}`,",
    f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. Generator, Redis, PostgreSQL, MongoDB",
    "stand-in and services all on this one machine, so every figure shares its two cores.",
    "",
    "| what | measured | limit in the same run | ratio |",
    "| --- | --- | --- | --- |",
    f"| single-event ingest, 64 connections | {R['single']['achieved_events_per_sec']:.0f} events/s, p99 {lat(R['single'])['p99_ms']:.1f} ms, non-2xx {sum(v for k, v in R['single']['status_counts'].items() if k not in ('200', '202'))} | hello-world {R['hello']['achieved_requests_per_sec']:.0f} req/s | {ratio_single:.2f} |",
    f"| batch ingest (100/request), 8 connections | {R['batch']['achieved_events_per_sec']:.0f} events/s, p99 {lat(R['batch'])['p99_ms']:.1f} ms, non-2xx {sum(v for k, v in R['batch']['status_counts'].items() if k not in ('200', '202'))} | redis-benchmark XADD -P 100: {R['redis_xadd_p100']:.0f}/s | {ratio_batch:.2f} |",
    f"| single-event ingest at a fixed 5,000 events/s (open loop) | {R['single_fixed']['achieved_events_per_sec']:.0f} events/s, p50 {lat(R['single_fixed'])['p50_ms']:.2f} ms, p99 {lat(R['single_fixed'])['p99_ms']:.2f} ms, statuses {R['single_fixed']['status_counts']} | | |",
    f"| worker drain of a {R['backlog_before_drain']:,}-event backlog | {R['drain_rate']:.0f} events/s ({R['drain_secs']:.0f} s) | MongoDB stand-in insert_many(100), same indexes: {R['mongo_insert_many']['docs_per_sec']:.0f} docs/s | {ratio_drain:.2f} |",
    f"| end to end at half the drain rate ({R['e2e']['asked_events_per_sec']:.0f}/s) | all {R['e2e']['end_to_end']['accepted_ids']:,} accepted events stored {R['e2e']['end_to_end']['seconds_until_all_stored'] or 0:.1f} s after the last was sent; {R['e2e']['end_to_end']['missing']} missing | | |",
    f"| api RSS | {svc(R['single'], 'api').get('rss_mib_peak', 0):.0f} MiB peak after the runs | | |",
    f"| analytics summary, 7d over {R['analytics']['events']:,} events' rollups | miss p50 {a['7d_miss']['p50_ms']:.1f} ms, p99 {a['7d_miss']['p99_ms']:.1f} ms; hit p99 {a['7d_hit']['p99_ms']:.2f} ms | | |",
    f"| export of {R['export']['events']:,} stored events (`GET /api/v1/export/events`, NDJSON {R['export']['mib']} MiB) | {R['export']['events_per_sec']:,} events/s ({R['export']['secs']:.0f} s); api RSS {R['export']['rss_before_mib']} MiB before, {R['export']['rss_peak_mib']} MiB at most | | |",
    f"| analytics summary, 24h | miss p50 {a['24h_miss']['p50_ms']:.1f} ms, p99 {a['24h_miss']['p99_ms']:.1f} ms; hit p99 {a['24h_hit']['p99_ms']:.2f} ms | | |",
    "",
    "CPU used during the saturation runs (cores, from /proc):",
    "",
    "| run | api | redis | mongodb | worker |",
    "| --- | --- | --- | --- | --- |",
]
for name in ["single", "batch", "single_fixed"]:
    s = R[name]["services"]
    lines.append(f"| {name} | " + " | ".join(f"{s.get(k, {}).get('cpu_cores', 0):.2f}" for k in ["api", "redis", "mongodb", "worker"]) + " |")
lines += ["", "Criterion (time per iteration, median):", ""]
for name, lo, mid in R["criterion"]:
    lines.append(f"- `{name}`: {mid}")
gen = "\n".join(lines)

doc = ROOT / "docs" / "PERFORMANCE.md"
text = doc.read_text() if doc.exists() else "# Performance\n\n<!-- generated:start -->\n<!-- generated:end -->\n"
text = re.sub(r"<!-- generated:start -->.*<!-- generated:end -->",
              "<!-- generated:start -->\n" + gen + "\n<!-- generated:end -->", text, flags=re.S)
doc.write_text(text)
print(gen)
