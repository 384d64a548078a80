#!/usr/bin/env python3
"""One Python SDK, unmodified, driven by scripts/sdk_suite.py (run with .venv-sdk/bin/python).

    py_client.py segment-py|rudder-py|posthog-py  < plan.json  > result.json

The plan (JSON on stdin) says where to send (`host`), with which key (`key`, and `bad_key`), and
what: `ops` (calls made through the SDK's own client, then flushed), `resend` (indexes into `ops`:
each is made again with the id the SDK gave it the first time, after the first flush) and
`bad_ops` (made through a second client holding `bad_key`, whose failure is observed the way the
SDK reports one: its `on_error` callback). The result (JSON on stdout) says what each call sent
(its id and timestamp, as the SDK returned them), every HTTP status the SDK's requests got (read
from urllib3's own debug log, so nothing of the SDK is patched), and every error it reported.
Logs go to stderr.
"""
import json
import logging
import sys

SDK = sys.argv[1] if len(sys.argv) > 1 else ""
PLAN = json.load(sys.stdin)

statuses = []  # {client, method, path, status} of every request the SDK made
_current = {"label": "good"}  # which client is making requests: "good", then "bad"


class StatusLog(logging.Handler):
    """urllib3 logs each response as `%s://%s:%s "%s %s %s" %s %s` (scheme, host, port, method,
    url, version, status, length): the statuses the SDK saw, without touching the SDK."""

    def emit(self, record):
        args = record.args
        if isinstance(args, tuple) and len(args) == 8 and record.msg.startswith('%s://%s:%s "'):
            statuses.append({"client": _current["label"], "method": args[3], "path": args[4], "status": args[6]})


_urllib3_log = logging.getLogger("urllib3.connectionpool")
_urllib3_log.setLevel(logging.DEBUG)
_urllib3_log.addHandler(StatusLog())
_urllib3_log.propagate = False
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"[{SDK}] %(name)s %(levelname)s %(message)s")


def describe(e):
    return {
        "type": type(e).__name__,
        "status": getattr(e, "status", None),
        "code": getattr(e, "code", None),
        "message": str(getattr(e, "message", None) or e)[:500],
    }


def text(v):
    return None if v is None else str(v)


def run_segment_family(make_client, version):
    """segment-analytics-python and rudder-sdk-python: the same API (track/identify/page return
    `(queued, msg)`, `message_id=` sets the messageId)."""
    errors = {"good": [], "bad": []}

    def on_error(label):
        return lambda e, batch: errors[label].append({**describe(e), "batch": len(batch)})

    def call(c, op, message_id=None):
        kind = op["call"]
        common = dict(user_id=op.get("userId"), anonymous_id=op.get("anonymousId"), context=op.get("context"),
                      integrations=op.get("integrations"), message_id=message_id)
        if kind == "track":
            ok, msg = c.track(event=op["event"], properties=op.get("properties"), **common)
        elif kind == "identify":
            ok, msg = c.identify(traits=op.get("traits"), **common)
        elif kind == "page":
            ok, msg = c.page(name=op.get("name"), category=op.get("category"), properties=op.get("properties"), **common)
        else:
            raise ValueError(f"unknown call {kind}")
        return {"queued": bool(ok), "id": text(msg.get("messageId")), "timestamp": text(msg.get("timestamp")),
                "type": msg.get("type")}

    sent = []
    good = make_client(PLAN["key"], on_error("good"))
    for i, op in enumerate(PLAN["ops"]):
        sent.append({"op": i, "phase": "first", **call(good, op)})
    good.flush()
    for i in PLAN.get("resend", []):
        first = next(s for s in sent if s["op"] == i)
        sent.append({"op": i, "phase": "resend", **call(good, PLAN["ops"][i], message_id=first["id"])})
    good.flush()
    good.shutdown()

    _current["label"] = "bad"
    bad_sent = []
    bad = make_client(PLAN["bad_key"], on_error("bad"))
    for i, op in enumerate(PLAN.get("bad_ops", [])):
        bad_sent.append({"op": i, **call(bad, op)})
    bad.flush()
    bad.shutdown()
    return {"version": version, "sent": sent, "bad_sent": bad_sent, "errors": errors["good"],
            "bad_errors": errors["bad"]}


def run_segment():
    from segment.analytics import Client
    from segment.analytics.version import VERSION

    def make(key, on_error):
        # SDK defaults (no gzip, upload_size 100) but fewer retries, so that a server error ends
        # the run in seconds rather than minutes.
        return Client(key, host=PLAN["host"], on_error=on_error, max_retries=3, timeout=15)

    return run_segment_family(make, VERSION)


def run_rudder():
    from rudderstack.analytics import Client
    from rudderstack.analytics.version import VERSION

    def make(key, on_error):
        # SDK defaults (gzip on, upload_size 100) but fewer retries.
        return Client(key, host=PLAN["host"], on_error=on_error, max_retries=3, timeout=15)

    return run_segment_family(make, VERSION)


def run_posthog():
    from posthog import Posthog
    from posthog.version import VERSION

    errors = {"good": [], "bad": []}

    def make(key, label):
        return Posthog(key, host=PLAN["host"], on_error=lambda e, batch: errors[label].append(
            {**describe(e), "batch": len(batch)}), max_retries=3, timeout=15)

    def call(c, op, uuid=None):
        kind = op["call"]
        if kind == "capture":
            got = c.capture(op["event"], distinct_id=op["distinctId"], properties=op.get("properties"), uuid=uuid)
        elif kind == "set":
            # posthog 7.x has no identify(): set() sends a `$set` event with a top-level `$set`.
            got = c.set(distinct_id=op["distinctId"], properties=op.get("properties"), uuid=uuid)
        else:
            raise ValueError(f"unknown call {kind}")
        return {"queued": got is not None, "id": text(got)}

    sent = []
    good = make(PLAN["key"], "good")
    for i, op in enumerate(PLAN["ops"]):
        sent.append({"op": i, "phase": "first", **call(good, op)})
    good.flush()
    for i in PLAN.get("resend", []):
        first = next(s for s in sent if s["op"] == i)
        sent.append({"op": i, "phase": "resend", **call(good, PLAN["ops"][i], uuid=first["id"])})
    good.flush()
    good.shutdown()

    _current["label"] = "bad"
    bad_sent = []
    bad = make(PLAN["bad_key"], "bad")
    for i, op in enumerate(PLAN.get("bad_ops", [])):
        bad_sent.append({"op": i, **call(bad, op)})
    bad.flush()
    bad.shutdown()
    return {"version": VERSION, "sent": sent, "bad_sent": bad_sent, "errors": errors["good"],
            "bad_errors": errors["bad"]}


RUNNERS = {"segment-py": run_segment, "rudder-py": run_rudder, "posthog-py": run_posthog}

if SDK not in RUNNERS:
    sys.exit(f"py_client: unknown SDK {SDK!r} (one of {', '.join(RUNNERS)})")
result = RUNNERS[SDK]()
result["http"] = statuses
json.dump(result, sys.stdout)
sys.stdout.write("\n")
