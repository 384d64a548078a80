// What the browser tests share: the stack's address, the screenshots' folder, Chromium (Debian's,
// headless), an account signed up through the page, the api called with its token, and waits that
// are bounded and report their time as a test diagnostic. Not a test file itself (`node --test`
// runs `*.test.mjs`).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

export const BASE = process.env.SLUICE_URL || "http://127.0.0.1:8080";
export const SHOTS = new URL("../../artifacts/screenshots/", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });
export const WAIT = 30_000;

/** Chromium and a 1280×900 context in it. */
export async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  return { browser, context };
}

/** A full-page screenshot under artifacts/screenshots/. */
export const shot = (page, name) => page.screenshot({ path: SHOTS + name + ".png", fullPage: true });

/** Signs an account up through the page, and gives it an API key: `{ token, key }`. */
export async function signUpWithKey(page, email, password, keyName) {
  await page.goto(BASE + "/#/signup");
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#empty", { timeout: WAIT });
  const token = await page.evaluate(() => sessionStorage.getItem("sluice.token"));
  const r = await fetch(BASE + "/api/v1/keys", {
    method: "POST", headers: { "content-type": "application/json", authorization: "Bearer " + token },
    body: JSON.stringify({ name: keyName }),
  });
  assert.equal(r.status, 201, await r.clone().text());
  return { token, key: (await r.json()).key };
}

/** A call of the api with an account's token (the dashboard's own credentials). */
export async function authed(token, method, path, body) {
  const headers = { authorization: "Bearer " + token };
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: await r.json().catch(() => null) };
}

/** A bounded wait for `fn` (run in the page with `arg`), its time reported; a timeout names what was awaited. */
export async function waitFor(page, t, what, fn, arg, { timeout = WAIT, polling = 250 } = {}) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(fn, arg, { timeout, polling });
  } catch (e) {
    throw new Error(`${what}: not within ${timeout / 1000} s (${e.message.split("\n")[0]})`);
  }
  t.diagnostic(`${what}: ${Date.now() - t0} ms`);
}

/** A wait for the page's flash message to match `re`. */
export const flashMatches = (page, t, re, options) => waitFor(page, t, `the message ${re}`,
  ([src, flags]) => new RegExp(src, flags).test(document.querySelector("#flash")?.textContent || ""),
  [re.source, re.flags], options);
