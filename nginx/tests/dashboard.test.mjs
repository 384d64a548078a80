// End-to-end tests of the dashboard in headless Chromium (Debian's), through nginx, against the
// stack `make up` runs. Screenshots of every page go to artifacts/screenshots/ (git-ignored).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
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
  await page.waitForSelector("#consumers");
  await shot("pipeline");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("nav a[href='#/overview']");
  await page.waitForSelector("#total-events");
  await shot("overview-phone");
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("a dead letter is listed and replayed", async () => {
  // A number MongoDB cannot store (beyond a 64-bit signed integer) is accepted and then
  // dead-lettered by the worker as invalid.
  const r = await fetch(BASE + "/api/v1/events", {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": key },
    body: '{"eventId":"ui-poison","eventType":"odd","userId":"u","properties":{"n":18446744073709551615}}',
  });
  assert.equal(r.status, 202);
  await page.click("nav a[href='#/dlq']");
  // The list loads once per visit; ask again (the reason filter's change) until the letter is there.
  await page.waitForFunction(() => {
    const row = document.querySelector("#dead-letters tr[data-id]");
    if (!row) document.querySelector("#reason").dispatchEvent(new Event("change"));
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
