"""What the bench scripts that run services of their own share (rules_bench, privacy_bench,
export_bench): the binaries' profile, the services' environment on the infrastructure `make up` /
`make infra` started, starting and stopping a service, calling the api, and a fresh account.
"""
import json, os, subprocess, time, urllib.request, uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: target/$PROFILE: release if built, else debug.
PROFILE = os.environ.get("PROFILE") or ("release" if (ROOT / "target/release/sluice-api").exists() else "debug")
MONGO = os.environ.get("SLUICE_MONGO__URL", "mongodb://127.0.0.1:27018/?directConnection=true")


def service_env(prefix, database, api_port, worker_port=None, **extra):
    """The environment of a bench's api and worker: its own Redis key prefix and MongoDB database,
    the infrastructure's URLs unless the caller's environment names others; `extra` on top
    (setting names without `SLUICE_`, e.g. `AUTH__KEY_QUOTA_PER_SEC="1000000"`)."""
    e = dict(os.environ)
    e.update({
        "SLUICE_REDIS__URL": e.get("SLUICE_REDIS__URL", "redis://127.0.0.1:6380"),
        "SLUICE_POSTGRES__URL": e.get("SLUICE_POSTGRES__URL", "postgres://postgres@127.0.0.1:5433/sluice"),
        "SLUICE_MONGO__URL": MONGO,
        "SLUICE_REDIS__KEY_PREFIX": prefix,
        "SLUICE_MONGO__DATABASE": database,
        "SLUICE_API__PORT": str(api_port),
        "SLUICE_AUTH__JWT_SECRET": (ROOT / ".data/jwt-secret").read_text().strip(),
        "SLUICE_AUTH__LOGIN_PER_MINUTE": "1000",
        "RUST_LOG": "warn",
    })
    if worker_port is not None:
        e.update({"SLUICE_WORKER__PORT": str(worker_port), "SLUICE_WORKER__CONSUMER_NAME": prefix})
    e.update({f"SLUICE_{k}": v for k, v in extra.items()})
    return e


def start(binary, env, port, stdout=subprocess.DEVNULL, tries=300):
    """target/$PROFILE/`binary` with `env`, once `/api/ready` on `port` answers (tries × 0.1 s)."""
    p = subprocess.Popen([str(ROOT / "target" / PROFILE / binary)], env=env,
                         stdout=stdout, stderr=subprocess.STDOUT if stdout is not subprocess.DEVNULL else stdout)
    for _ in range(tries):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ready", timeout=1)
            return p
        except Exception:
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{binary} did not become ready")


def stop(p):
    """Stops a service and gives its port a moment before the next one takes it."""
    p.terminate()
    p.wait(timeout=30)
    time.sleep(0.3)


class Api:
    """The api on a local port."""

    def __init__(self, port, timeout=600):
        self.port, self.timeout = port, timeout

    def call(self, method, path, body=None, token=None, key=None, raw=False):
        """(status, the body as JSON — or as bytes when `raw`); an error status raises HTTPError."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        if key:
            req.add_header("x-api-key", key)
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            data = r.read()
            return r.status, data if raw else json.loads(data or b"null")

    def tenant(self, tag="bench"):
        """A new account: (JWT, API key, accountId)."""
        email = f"{tag}-{uuid.uuid4().hex[:12]}@example.com"
        self.call("POST", "/api/v1/auth/register", {"email": email, "password": "bench-password-123"})
        _, login = self.call("POST", "/api/v1/auth/login", {"email": email, "password": "bench-password-123"})
        token = login["token"]
        _, key = self.call("POST", "/api/v1/keys", {"name": "bench"}, token=token)
        _, me = self.call("GET", "/api/v1/auth/me", token=token)
        return token, key["key"], me.get("accountId") or me["id"]
