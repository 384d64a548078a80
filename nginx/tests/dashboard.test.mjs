// End-to-end tests of the dashboard in headless Chromium (Debian's), through nginx, against the
// stack `make up` runs. Screenshots of every page go to artifacts/screenshots/ (git-ignored).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import * as support from "./support.mjs";
import { BASE } from "./support.mjs";

let browser, context, page;

before(async () => {
  ({ browser, context } = await support.launch());
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  page = await context.newPage();
});
after(async () => { await browser?.close(); });

const shot = (name) => support.shot(page, name);
const email = `ui-${Date.now()}-${Math.floor(Math.random() * 1e6)}@sluice.test`;
const password = "a dashboard password";
let key;

async function send(event, k = key) {
  const r = await fetch(BASE + "/api/v1/events", {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": k }, body: JSON.stringify(event),
  });
  return r.status;
}

test("nginx's workers run as an unprivileged user and still serve the dashboard", async () => {
  const data = process.env.SLUICE_DATA_DIR || new URL("../../.data/", import.meta.url).pathname;
  const master = readFileSync(data + "/run/nginx.pid", "utf8").trim();
  const status = (pid) => readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (text, name) => text.match(new RegExp(`^${name}:\\s*(.*)$`, "m"))[1].split(/\s+/);
  const workers = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return field(status(p), "PPid")[0] === master && /nginx/.test(readFileSync(`/proc/${p}/cmdline`, "utf8")); } catch { return false; }
  });
  assert.ok(workers.length > 0, `no worker of nginx master ${master}`);
  for (const w of workers) {
    // Real, effective, saved and filesystem uid: none of them root.
    assert.ok(field(status(w), "Uid").every((u) => u !== "0"), `nginx worker ${w} runs as root: ${field(status(w), "Uid")}`);
  }
  const r = await fetch(BASE + "/app.js");
  assert.equal(r.status, 200);
  assert.ok((await r.text()).length > 1000);
});

test("a visitor who is not logged in sees no navigation, only the login form", async () => {
  await page.goto(BASE + "/#/overview");
  await page.waitForSelector("#email");
  assert.equal(await page.isVisible("nav"), false);
  assert.equal(await page.isVisible("nav a[href='#/keys']"), false);
  assert.equal(await page.isVisible("#logout"), false);
});

test("sign up, create a key and copy it", async () => {
  await page.goto(BASE + "/#/signup");
  await shot("signup");
  assert.equal(await page.isVisible("nav"), false, "no navigation before signing up");
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#empty");
  assert.equal(await page.isVisible("nav"), true, "navigation once logged in");
  await shot("overview-empty");
  assert.match(await page.textContent("#empty"), /No events in this range yet/);

  await page.click("nav a[href='#/keys']");
  await page.fill("#key-name", "browser test");
  await page.click("form button[type=submit]");
  await page.waitForSelector("#new-key");
  key = (await page.textContent("#new-key")).trim();
  assert.match(key, /^slk_[0-9a-f]{64}$/);
  await page.click("#copy-key");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
  await page.waitForSelector("#keys tr[data-key-id]");
  const listed = await page.textContent("#keys");
  assert.ok(listed.includes(key.slice(0, 12)) && !listed.includes(key), "the list shows the prefix, never the key");
  await shot("keys");
});

test("events sent with the key show on the overview", async () => {
  for (let i = 0; i < 12; i++) {
    assert.equal(await send({ eventType: i % 3 ? "page_view" : "purchase", userId: "ui-user-" + (i % 4) }), 202);
  }
  await page.click("nav a[href='#/overview']");
  // Answers are cached for 10 s: the page refreshes every 2 s until the count arrives.
  await page.waitForFunction(() => document.querySelector("#total-events")?.textContent === "12", null, { timeout: 30_000 });
  assert.match(await page.textContent("#by-type"), /page_view/);
  assert.match(await page.textContent("#top-users"), /ui-user-/);
  await shot("overview");
  await page.click("#top-users a");
  await page.waitForSelector("#user-events tbody tr");
  await shot("user-explorer");
  await page.click("nav a[href='#/pipeline']");
  await page.waitForSelector("#pipeline-state");
  // The tenant's own figures and a coarse state; no stream figures or consumer names.
  assert.match(await page.getAttribute("#pipeline-state", "data-state"), /^(ok|degraded|backlogged)$/);
  await page.waitForFunction(() => document.querySelector("#ingest-1h .value")?.textContent === "12", null, { timeout: 30_000 });
  assert.equal(await page.$("#consumers"), null);
  assert.doesNotMatch(await page.textContent("main"), /stream length|consumer/i);
  await shot("pipeline");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("nav a[href='#/overview']");
  await page.waitForSelector("#total-events");
  await shot("overview-phone");
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("a dead letter is listed and replayed", async () => {
  // The api refuses everything the worker could not store (a number beyond a 64-bit signed
  // integer is a 400 now), so the letter is written as the worker writes one for an entry it
  // could not store: the event as queued, the reason, the account.
  const r = await fetch(BASE + "/api/v1/events", {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": key },
    body: '{"eventId":"ui-poison","eventType":"odd","userId":"u","properties":{"n":18446744073709551615}}',
  });
  assert.equal(r.status, 400);
  const token = await page.evaluate(() => sessionStorage.getItem("sluice.token"));
  const me = await (await fetch(BASE + "/api/v1/auth/me", { headers: { authorization: "Bearer " + token } })).json();
  const queued = JSON.stringify({ eventId: "ui-poison", accountId: me.accountId, eventType: "odd", userId: "u",
    timestamp: new Date().toISOString(), receivedAt: new Date().toISOString() });
  const venv = new URL("../../.venv/bin/python", import.meta.url).pathname;
  execFileSync(venv, ["-c", `
import sys, json, datetime, pymongo
e = sys.argv[2]
url = sys.argv[1]
db = pymongo.MongoClient(url)["sluice"]
sid = sys.argv[3]
db.events_dlq.insert_one({"_id": sid + ":ui-poison", "event": json.loads(e), "rawEntry": {"e": e},
  "reason": "invalid", "error": "written by the dashboard test", "attempts": 1, "streamId": sid,
  "consumer": "dashboard-test", "failedAt": datetime.datetime.now(datetime.timezone.utc),
  "accountId": json.loads(e)["accountId"], "eventId": "ui-poison"})
`, process.env.SLUICE_MONGO__URL || "mongodb://127.0.0.1:27018/?directConnection=true", queued, `${Date.now()}-0`]);
  await page.click("nav a[href='#/dlq']");
  // The list loads once per visit; ask again (the reason filter's change) until the letter is there.
  await page.waitForFunction(() => {
    const row = document.querySelector("#dead-letters tr[data-id]");
    if (!row) document.querySelector("#reason")?.dispatchEvent(new Event("change"));
    return !!row;
  }, null, { timeout: 30_000, polling: 1000 });
  assert.match(await page.textContent("#dead-letters"), /ui-poison/);
  assert.match(await page.textContent("#dead-letters"), /invalid/);
  await shot("dead-letters");
  await page.click("#dead-letters tr[data-id] button");
  await page.waitForFunction(() => document.querySelector("#flash")?.textContent.includes("Replayed"));
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#dead-letters .replayed")].some((td) => td.textContent !== "—"));
});

test("Sources: the SDK snippets carry this origin and the key's prefix; a webhook source is created, rotated and deleted", async () => {
  const esc = (t) => t.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  const origin = esc(new URL(BASE).origin);
  const prefix = key.slice(0, 12);
  await page.click("nav a[href='#/sources']");
  await page.waitForSelector("#sdk-snippets #snippet-posthog-node pre");
  await page.waitForSelector("#sources-empty");
  const snippet = (id) => page.textContent(`#snippet-${id} pre`);
  // Each SDK's own option names, with the host set to this Sluice and the key's prefix as a placeholder.
  assert.match(await snippet("segment-node"), new RegExp(`new Analytics\\(\\{ writeKey: '${prefix}…', host: '${origin}' \\}\\)`));
  assert.match(await snippet("segment-python"), new RegExp(`analytics\\.write_key = '${prefix}…'\\nanalytics\\.host = '${origin}'`));
  assert.match(await snippet("rudderstack-python"), new RegExp(`rudder_analytics\\.write_key = '${prefix}…'\\nrudder_analytics\\.dataPlaneUrl = '${origin}'`));
  assert.match(await snippet("posthog-js"), new RegExp(`posthog\\.init\\('${prefix}…', \\{ api_host: '${origin}' \\}\\)`));
  assert.match(await snippet("posthog-python"), new RegExp(`Posthog\\('${prefix}…', host='${origin}'\\)`));
  assert.match(await snippet("posthog-node"), new RegExp(`new PostHog\\('${prefix}…', \\{ host: '${origin}' \\}\\)`));
  assert.match(await page.textContent("#snippet-key-note"), /put the whole key there/);
  assert.equal(await page.isVisible("#snippet-key"), false, "no key picker for a single key");
  assert.ok(!(await page.textContent("main")).includes(key), "the page never shows the key itself");
  // What the snippets point at answers through nginx, as the SDKs send it.
  const sdk = async (path, headers, body) => (await fetch(BASE + path, {
    method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) })).status;
  assert.equal(await sdk("/v1/batch", { authorization: "Basic " + Buffer.from(key + ":").toString("base64") },
    { batch: [{ type: "track", event: "Order Completed", userId: "ui-sdk", messageId: "ui-sdk-1" }], writeKey: key }), 200);
  assert.equal(await sdk("/batch/", {}, { api_key: key, batch: [{ event: "order completed", distinct_id: "ui-sdk", uuid: crypto.randomUUID() }] }), 200);
  await shot("sources");

  // An api error shows its message (once, not repeated from its details).
  await page.fill("#source-name", "ui webhook");
  await page.fill("#source-event-type", "ui.webhook");
  await page.fill("#source-user-id-from", "customer");
  await page.click("#new-source button[type=submit]");
  await page.waitForFunction(() => /userIdFrom: must be a JSON pointer/.test(document.querySelector("#flash")?.textContent || ""));
  assert.equal((await page.textContent("#flash")).match(/must be a JSON pointer/g).length, 1);
  await page.fill("#source-user-id-from", "/data/customer");
  await page.click("#new-source button[type=submit]");
  await page.waitForSelector("#new-secret");
  const secret = (await page.textContent("#new-secret")).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]{40,}={0,2}$/);
  assert.match(await page.textContent("#source-secret-box"), /Copy this signing secret now: it will not be shown again/);
  const url = (await page.textContent("#new-source-url")).trim();
  assert.match(url, new RegExp(`^${origin}/api/v1/webhooks/[0-9a-f-]{36}$`));
  await page.click("#copy-secret");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await page.waitForSelector("#sources tr[data-source-id]");
  const listed = await page.textContent("#sources");
  assert.ok(listed.includes("ui webhook") && listed.includes(url) && listed.includes("/data/customer"), listed);
  assert.ok(!listed.includes(secret), "the list never shows a secret");
  assert.equal(await page.$$eval("#new-secret", (e) => e.length), 1);
  await shot("sources-created");

  // A delivery signed as Standard Webhooks signs it, to the URL shown, with the secret shown.
  const deliver = async (s, id) => {
    const body = JSON.stringify({ type: "invoice.paid", data: { customer: "ui-cust" } });
    const ts = Math.floor(Date.now() / 1000);
    const sig = createHmac("sha256", Buffer.from(s.slice("whsec_".length), "base64")).update(`${id}.${ts}.${body}`).digest("base64");
    const r = await fetch(url, { method: "POST", body,
      headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": "v1," + sig } });
    return r.status;
  };
  assert.equal(await deliver(secret, "msg_ui_1"), 202);

  page.once("dialog", (d) => d.accept());
  await page.click("#sources tr[data-source-id] button.rotate");
  await page.waitForFunction((old) => { const t = document.querySelector("#new-secret")?.textContent; return t && t !== old; }, secret);
  const rotated = (await page.textContent("#new-secret")).trim();
  assert.match(rotated, /^whsec_/);
  assert.match(await page.textContent("#source-secret-box"), /previous secret keeps verifying until/);
  await page.waitForFunction(() => /rotated/.test(document.querySelector("#sources .rotated")?.textContent || ""));
  assert.ok(!(await page.textContent("#sources")).includes(rotated));
  assert.equal(await deliver(rotated, "msg_ui_2"), 202);
  assert.equal(await deliver(secret, "msg_ui_3"), 202, "the previous secret verifies during the grace period");
  assert.equal(await deliver("whsec_" + Buffer.alloc(32, 7).toString("base64"), "msg_ui_4"), 401);

  // Shown once: leaving the page and coming back shows no secret.
  await page.click("nav a[href='#/keys']");
  await page.waitForSelector("#keys");
  await page.click("nav a[href='#/sources']");
  await page.waitForSelector("#sources tr[data-source-id]");
  assert.equal(await page.$("#new-secret"), null);
  assert.ok(!(await page.textContent("main")).includes(rotated));

  page.once("dialog", (d) => d.accept());
  await page.click("#sources tr[data-source-id] button.danger");
  await page.waitForSelector("#sources-empty");
  assert.match(await page.textContent("#flash"), /deleted/);
  assert.equal(await deliver(rotated, "msg_ui_5"), 404);

  // Stripe issues its own secret: pasted at create, replaced with "Set the sender's secret"; never echoed.
  await page.selectOption("#source-scheme", "stripe");
  assert.match(await page.textContent("#source-scheme-hint"), /Stripe issues the signing secret/);
  await page.fill("#source-name", "ui stripe");
  await page.fill("#source-event-type", "stripe.event");
  await page.fill("#source-secret", "whsec_ui_stripe_secret_1");
  await page.click("#new-source button[type=submit]");
  await page.waitForFunction(() => /ui stripe/.test(document.querySelector("#sources")?.textContent || ""));
  assert.equal(await page.$("#new-secret"), null);
  assert.match(await page.textContent("#source-secret-box"), /verifies its deliveries with the secret you pasted/);
  const stripeUrl = (await page.textContent("#new-source-url")).trim();
  assert.ok(!(await page.textContent("main")).includes("whsec_ui_stripe_secret_1"));
  const stripe = async (s, id) => {
    const body = JSON.stringify({ id, object: "event", type: "invoice.paid", data: { object: { customer: "cus_ui" } } });
    const t = Math.floor(Date.now() / 1000);
    const v1 = createHmac("sha256", s).update(`${t}.${body}`).digest("hex");
    return (await fetch(stripeUrl, { method: "POST", body, headers: { "content-type": "application/json", "stripe-signature": `t=${t},v1=${v1}` } })).status;
  };
  assert.equal(await stripe("whsec_ui_stripe_secret_1", "evt_ui_1"), 202);
  await page.click("#sources tr[data-source-id] button.own");
  await page.fill("#sources tr[data-source-id] form.own-secret input", "whsec_ui_stripe_secret_2");
  await page.click("#sources tr[data-source-id] form.own-secret button[type=submit]");
  await page.waitForFunction(() => /rotated/.test(document.querySelector("#sources .rotated")?.textContent || ""));
  assert.match(await page.textContent("#source-secret-box"), /previous secret keeps verifying until/);
  assert.ok(!(await page.textContent("main")).includes("whsec_ui_stripe_secret_2"));
  assert.equal(await stripe("whsec_ui_stripe_secret_2", "evt_ui_2"), 202);
  page.once("dialog", (d) => d.accept());
  await page.click("#sources tr[data-source-id] button.danger");
  await page.waitForSelector("#sources-empty");
});

test("a page on another origin posts to the SDK intakes: nginx passes the CORS preflight to the api", async () => {
  // posthog-js posts from the customer's site: a preflighted cross-origin request (JSON body).
  const site = createServer((req, res) => { res.setHeader("content-type", "text/html"); res.end("<!doctype html><title>shop</title>"); });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  const other = await context.newPage();
  try {
    await other.goto(`http://127.0.0.1:${site.address().port}/`);
    const answers = await other.evaluate(async (base) => {
      const out = {};
      for (const p of ["/v1/batch", "/batch/", "/i/v0/e/?compression=gzip-js&ver=1.2", "/flags/?v=2"]) {
        const r = await fetch(base + p, { method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ api_key: "slk_not_a_key", batch: [{ event: "e", distinct_id: "u" }] }) });
        out[p] = [r.status, (await r.json()).error?.code ?? "ok"];
      }
      return out;
    }, BASE);
    assert.deepEqual(answers, { "/v1/batch": [401, "unauthorized"], "/batch/": [401, "unauthorized"],
      "/i/v0/e/?compression=gzip-js&ver=1.2": [401, "unauthorized"], "/flags/?v=2": [200, "ok"] });
  } finally {
    await other.close();
    site.close();
  }
});

test("a revoked key is refused, and a 401 returns to login", async () => {
  await page.click("nav a[href='#/keys']");
  page.once("dialog", (d) => d.accept());
  await page.click("#keys button.danger");
  await page.waitForFunction(() => /revoked/.test(document.querySelector("#keys").textContent));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await send({ eventType: "after", userId: "u" }), 401);
  await page.evaluate(() => sessionStorage.setItem("sluice.token", "not-a-valid-token"));
  await page.click("nav a[href='#/pipeline']");
  await page.waitForSelector("#email");
  await shot("login");
});
