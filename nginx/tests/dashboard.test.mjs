// End-to-end tests of the dashboard in headless Chromium (Debian's), through nginx, against the
// stack `make up` runs. Screenshots of every page go to artifacts/screenshots/ (git-ignored).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const BASE = process.env.SLUICE_URL || "http://127.0.0.1:8080";
const SHOTS = new URL("../../artifacts/screenshots/", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });
let browser, context, page;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  page = await context.newPage();
});
after(async () => { await browser?.close(); });

const shot = (name) => page.screenshot({ path: SHOTS + name + ".png", fullPage: true });
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

test("sign up, create a key and copy it", async () => {
  await page.goto(BASE + "/#/signup");
  await shot("signup");
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#empty");
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
