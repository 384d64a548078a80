// End-to-end tests of the dashboard's Privacy page in headless Chromium (Debian's), through nginx,
// against the stack `make up` (scripts/stack.sh up) runs (docs/PRIVACY.md). Each run signs up an
// account of its own, as rules.test.mjs does, and regulates userIds of its own, so the
// regulations and suppressions the page shows are this run's only. The tests run in order: the
// unsuppress ends one of the suppressions the suppress made. Every wait is bounded and its time
// reported as a test diagnostic.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as support from "./support.mjs";
import { BASE, WAIT } from "./support.mjs";

// A worker carries a regulation out within 20 s; the page asks for it again every 2 s.
const REGULATION_WAIT = 20_000 + 2_500;
const run = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
// Markup in a userId: the page must show it as text.
const USER_A = `ui-privacy-a-${run}`;
const USER_B = `ui-privacy-b-<img/id=xss-privacy>-${run}`;
let browser, page, token, suppressId;

before(async () => {
  let context;
  ({ browser, context } = await support.launch());
  page = await context.newPage();
});
after(async () => { await browser?.close(); });

const shot = (name) => support.shot(page, name);
const authed = (method, path, body) => support.authed(token, method, path, body);
const waitFor = (t, what, fn, arg, timeout) => support.waitFor(page, t, what, fn, arg, { timeout });
const flashMatches = (t, re) => support.flashMatches(page, t, re);
const regulationRow = (id) => `#regulations tr[data-regulation-id="${id}"]`;
const regulationIds = () => page.$$eval("#regulations tr[data-regulation-id]", (rows) => rows.map((r) => r.dataset.regulationId));
const suppressedIds = () => page.$$eval("#suppressions tr[data-user-id]", (rows) => rows.map((r) => r.dataset.userId));
// The row of a regulation shown with `status`, by the page's own 2 s refresh (nothing is clicked);
// a timeout says what the api has of it.
async function regulationShown(t, id, status) {
  try {
    await waitFor(t, `regulation ${id} shown ${status}`,
      ([sel, s]) => document.querySelector(sel)?.dataset.status === s, [regulationRow(id), status], REGULATION_WAIT);
  } catch (e) {
    const now = await authed("GET", "/api/v1/regulations/" + id).catch((f) => f.message);
    throw new Error(`${e.message}; the api has ${JSON.stringify(now)}`);
  }
}
// The suppressed users shown are exactly `ids` (in any order); the table is refreshed until then.
const suppressedShown = (t, what, ids) => waitFor(t, what, (want) => {
  const rows = [...document.querySelectorAll("#suppressions tr[data-user-id]")].map((r) => r.dataset.userId);
  const done = rows.length === want.length && want.every((id) => rows.includes(id));
  if (!done) document.querySelector("#suppressions-refresh")?.click();
  return done;
}, ids, REGULATION_WAIT);
const submitRegulation = async (type, text) => {
  await page.selectOption("#regulation-type", type);
  await page.fill("#regulation-user-ids", text);
  await page.click("#submit-regulation");
};

test("a visitor who is not logged in sees no Privacy link, and the page's address shows the login form", async () => {
  await page.goto(BASE + "/#/privacy");
  await page.waitForSelector("#email", { timeout: WAIT });
  assert.equal(await page.isVisible("nav a[href='#/privacy']"), false);
  assert.equal(await page.$("#retention-form"), null);
  assert.equal(await page.$("#new-regulation"), null);

  await page.goto(BASE + "/#/signup");
  await page.fill("#email", `ui-privacy-${run}@sluice.test`);
  await page.fill("#password", "a privacy page password");
  await page.click("button[type=submit]");
  await page.waitForSelector("#empty", { timeout: WAIT });
  token = await page.evaluate(() => sessionStorage.getItem("sluice.token"));
  assert.ok(token, "logged in");
  assert.equal(await page.isVisible("nav a[href='#/privacy']"), true, "the link once logged in");
});

test("Retention: the effective values are shown; a saved one is shown and read back after a reload; an out-of-range one shows the api's error", async (t) => {
  const defaults = await authed("GET", "/api/v1/account/retention");
  assert.equal(defaults.status, 200, JSON.stringify(defaults.body));
  for (const k of ["eventsDays", "deadLettersDays", "quarantineDays", "anomaliesDays"]) assert.equal(typeof defaults.body[k], "number", k);

  await page.click("nav a[href='#/privacy']");
  await page.waitForSelector("#retention-form", { timeout: WAIT });
  await waitFor(t, "the retention in effect", () => /In effect/.test(document.querySelector("#retention-state")?.textContent || ""));
  assert.equal(await page.getAttribute("nav a[href='#/privacy']", "aria-current"), "page");
  assert.deepEqual(
    await Promise.all(["#ret-events", "#ret-dead-letters", "#ret-quarantine", "#ret-anomalies"].map((s) => page.inputValue(s))),
    [defaults.body.eventsDays, defaults.body.deadLettersDays, defaults.body.quarantineDays, defaults.body.anomaliesDays].map(String));
  for (const s of ["#ret-events", "#ret-dead-letters", "#ret-quarantine", "#ret-anomalies"]) {
    assert.deepEqual([await page.getAttribute(s, "min"), await page.getAttribute(s, "max")], ["1", "3650"], s);
  }

  // 30 days of events, the rest as they were.
  await page.fill("#ret-events", "30");
  await page.click("#save-retention");
  await flashMatches(t, /Retention saved: events 30 days/);
  assert.match(await page.textContent("#retention-state"), /In effect: events 30 days/);
  const saved = (await authed("GET", "/api/v1/account/retention")).body;
  assert.deepEqual([saved.eventsDays, saved.deadLettersDays, saved.quarantineDays, saved.anomaliesDays],
    [30, defaults.body.deadLettersDays, defaults.body.quarantineDays, defaults.body.anomaliesDays]);
  await shot("privacy-retention");

  // After a reload the form is filled from GET again.
  await page.reload();
  await page.waitForSelector("#retention-form", { timeout: WAIT });
  await waitFor(t, "the saved retention after a reload", () => document.querySelector("#ret-events")?.value === "30"
    && /In effect: events 30 days/.test(document.querySelector("#retention-state")?.textContent || ""));
  assert.equal(await page.inputValue("#ret-dead-letters"), String(defaults.body.deadLettersDays));

  // Out of range: the browser's own check holds it back first (max 3650)…
  await page.fill("#ret-events", "5000");
  assert.equal(await page.$eval("#ret-events", (i) => i.validity.rangeOverflow), true);
  // …so it is lifted, as an older page would have, to see the api's answer. The api's own message is shown.
  const refused = await authed("PUT", "/api/v1/account/retention", { ...defaults.body, eventsDays: 5000 });
  assert.equal(refused.status, 400, JSON.stringify(refused.body));
  assert.equal(refused.body.error.code, "invalid_request");
  assert.equal(refused.body.error.details?.[0]?.path, "/eventsDays", JSON.stringify(refused.body));
  await page.$eval("#ret-events", (i) => i.removeAttribute("max"));
  await page.click("#save-retention");
  await waitFor(t, "the api's message", (m) => (document.querySelector("#flash")?.textContent || "").includes(m), refused.body.error.message);
  assert.match(await page.textContent("#flash"), /eventsDays/);
  assert.notEqual(await page.getAttribute("#flash", "class"), "ok");
  assert.match(await page.textContent("#retention-state"), /In effect: events 30 days/, "what is in effect is unchanged");
  assert.equal((await authed("GET", "/api/v1/account/retention")).body.eventsDays, 30);
});

test("Regulations: a suppress of two userIds is listed, followed until finished, and both users are in the suppressed table, as text", async (t) => {
  await page.click("nav a[href='#/rules']");
  await page.click("nav a[href='#/privacy']");
  await page.waitForSelector("#regulations-empty", { timeout: WAIT });
  await page.waitForSelector("#suppressions-empty", { timeout: WAIT });

  // One a line and separated by commas, with blanks and a repeat: two userIds.
  await submitRegulation("suppress", `${USER_A}\n\n ${USER_B} ,${USER_A}\n`);
  await flashMatches(t, /Regulation suppress of 2 users submitted/);
  const listed = await authed("GET", "/api/v1/regulations");
  assert.equal(listed.status, 200, JSON.stringify(listed.body));
  assert.equal(listed.body.regulations.length, 1, JSON.stringify(listed.body));
  const reg = listed.body.regulations[0];
  assert.equal(reg.type, "suppress");
  assert.deepEqual([...reg.userIds].sort(), [USER_A, USER_B].sort());
  suppressId = reg.id;
  await page.waitForSelector(regulationRow(suppressId), { timeout: WAIT });
  assert.equal(await page.inputValue("#regulation-user-ids"), "", "the form's userIds are cleared once submitted");

  await regulationShown(t, suppressId, "finished");
  const row = regulationRow(suppressId);
  assert.equal((await page.textContent(row + " td.type")).trim(), "suppress");
  assert.equal((await page.textContent(row + " td.status")).trim(), "finished");
  const users = await page.textContent(row + " td.users");
  assert.match(users, /^2 users: /);
  assert.ok(users.includes(USER_A) && users.includes(USER_B), users);
  assert.notEqual((await page.textContent(row + " td.finished")).trim(), "—");
  const done = await authed("GET", "/api/v1/regulations/" + suppressId);
  assert.deepEqual([done.status, done.body.status], [200, "finished"], JSON.stringify(done.body));
  const counts = await page.textContent(row + " td.counts");
  for (const [k, n] of Object.entries(done.body.counts || {})) assert.ok(counts.includes(`${k}: ${n.toLocaleString("en-US")}`), `${k}: ${n} in ${counts}`);

  await suppressedShown(t, "both users in the suppressed table", [USER_A, USER_B]);
  // Each with its userId as text, suppressed by itself (no linked ids), by this regulation.
  const shown = await page.$$eval("#suppressions tr[data-user-id]", (rows) => rows.map((r) =>
    [r.querySelector("td.user-id").textContent, r.querySelector("td.via").textContent.trim(), r.dataset.regulationId]));
  assert.deepEqual(shown.sort(), [[USER_A, "itself", suppressId], [USER_B, "itself", suppressId]].sort());
  const api = await authed("GET", "/api/v1/suppressions");
  assert.deepEqual(api.body.suppressions.map((s) => s.userId).sort(), [USER_A, USER_B].sort());
  assert.equal(await page.$("#xss-privacy"), null, "a userId is text, never HTML");
  await shot("privacy");
});

test("Regulations: an unsuppress of one user is listed above the suppress, finishes, and the user leaves the suppressed table", async (t) => {
  await submitRegulation("unsuppress", USER_A);
  await flashMatches(t, /Regulation unsuppress of 1 user submitted/);
  const listed = (await authed("GET", "/api/v1/regulations")).body.regulations;
  assert.equal(listed.length, 2, JSON.stringify(listed));
  const unsuppress = listed[0];
  assert.deepEqual([unsuppress.type, unsuppress.userIds, listed[1].id], ["unsuppress", [USER_A], suppressId]);
  await page.waitForSelector(regulationRow(unsuppress.id), { timeout: WAIT });
  assert.deepEqual(await regulationIds(), [unsuppress.id, suppressId], "newest first");

  await regulationShown(t, unsuppress.id, "finished");
  assert.match(await page.textContent(regulationRow(unsuppress.id) + " td.users"), new RegExp(`^1 user: ${USER_A}$`));
  await suppressedShown(t, "only the other user in the suppressed table", [USER_B]);
  assert.deepEqual(await suppressedIds(), [USER_B]);
  assert.deepEqual((await authed("GET", "/api/v1/suppressions")).body.suppressions.map((s) => s.userId), [USER_B]);

  // The filter: only the finished unsuppress, by status and userId.
  await page.selectOption("#reg-status", "finished");
  await waitFor(t, "both finished regulations", (n) => document.querySelectorAll("#regulations tr[data-regulation-id]").length === n, 2);
  await page.fill("#reg-user-id", USER_B);
  await page.click("#regulations-filter button[type=submit]");
  await waitFor(t, "only the regulation of the other user", (id) => {
    const ids = [...document.querySelectorAll("#regulations tr[data-regulation-id]")].map((r) => r.dataset.regulationId);
    return ids.length === 1 && ids[0] === id;
  }, suppressId);
  await page.selectOption("#reg-status", "failed");
  await page.waitForSelector("#regulations-empty", { timeout: WAIT });
  assert.equal(await page.$("#xss-privacy"), null, "a userId is text, never HTML");
  await shot("privacy-unsuppressed");
});
