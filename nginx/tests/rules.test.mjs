// End-to-end tests of the dashboard's Rules, Live and Anomalies pages in headless Chromium
// (Debian's), through nginx, against the stack `make up` runs (docs/RULES.md). Each run signs up
// an account of its own, as tracking_plan.test.mjs does, so its rules and anomalies are the only
// ones the pages show. The tests run in order: the anomaly the Live page shows is the one the
// Anomalies page lists. Every wait is bounded and its time reported as a test diagnostic.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as support from "./support.mjs";
import { BASE, WAIT } from "./support.mjs";

// How long an anomaly may take from the batch to the page: the worker stores the batch, judges
// the rule, stores the anomaly and publishes it; the api hands it to the socket.
const ANOMALY_WAIT = 20_000;
const run = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
const USER = `ui-rules-user-${run}`;
// Markup in rule names: every page must show it as text (the anomaly's message repeats the name).
const FORM_RULE = `ui rule <img id=xss-rule src=x> ${run}`;
const LIVE_RULE = `checkout burst <img id=xss-live src=x> ${run}`;
const INFO_RULE = `ui info ${run}`;
const INFO_TYPE = `ui-info-${run}`;
const TAIL_TYPE = `ui-tail-${run}`;
let browser, page, token, key, liveRule, infoRule;

before(async () => {
  let context;
  ({ browser, context } = await support.launch());
  page = await context.newPage();
  ({ token, key } = await support.signUpWithKey(page, `ui-rules-${run}@sluice.test`, "a rules and anomalies password", "rules test"));
});
after(async () => { await browser?.close(); });

const shot = (name) => support.shot(page, name);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const authed = (method, path, body) => support.authed(token, method, path, body);
async function sendBatch(events) {
  const r = await fetch(BASE + "/api/v1/events/batch", {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": key }, body: JSON.stringify({ events }),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}
const waitFor = (t, what, fn, arg, timeout) => support.waitFor(page, t, what, fn, arg, { timeout });
const flashMatches = (t, re) => support.flashMatches(page, t, re);
const connected = (t) => waitFor(t, "the Live page connected", () => document.querySelector("#live-state")?.dataset.state === "connected");
const ruleRow = (id) => `#rules tr[data-rule-id="${id}"]`;
const listedRuleIds = (selector) => page.$$eval(selector, (items) => items.map((i) => i.dataset.ruleId));
const threshold = (name, severity, eventType, value) => ({
  name, severity, cooldownSeconds: 300,
  condition: { type: "threshold", eventType, windowSeconds: 60, operator: ">=", value },
});

test("Rules: a threshold rule is created through the form (a refused one shows its pointer), listed with its condition and severity, disabled and enabled again, and deleted", async (t) => {
  await page.click("nav a[href='#/rules']");
  await page.waitForSelector("#rules-empty", { timeout: WAIT });

  // Each condition type shows its own fields only.
  assert.equal(await page.isVisible("#rule-window"), true);
  assert.equal(await page.isVisible("#rule-bucket"), false);
  await page.selectOption("#rule-type", "zscore");
  for (const f of ["#rule-bucket", "#rule-baseline", "#rule-threshold", "#rule-direction"]) assert.equal(await page.isVisible(f), true, f);
  assert.equal(await page.isVisible("#rule-window"), false);
  await page.selectOption("#rule-type", "threshold");
  assert.equal(await page.isVisible("#rule-operator"), true);

  // A name of white space only passes the browser's `required`; the api refuses it at its pointer.
  await page.fill("#rule-name", "   ");
  await page.click("#create-rule");
  await flashMatches(t, /\/name/);
  assert.ok(await page.$("#rules-empty"), "nothing was created");

  await page.fill("#rule-name", FORM_RULE);
  await page.selectOption("#rule-severity", "warning");
  await page.fill("#rule-event-type", `signup-${run}`);
  await page.fill("#rule-window", "60");
  await page.selectOption("#rule-operator", ">=");
  await page.fill("#rule-value", "3");
  await page.fill("#rule-cooldown", "300");
  await page.click("#create-rule");
  await flashMatches(t, /created/);
  await page.waitForSelector("#rules tr[data-rule-id]", { timeout: WAIT });
  const listed = (await authed("GET", "/api/v1/rules")).body.rules;
  assert.equal(listed.length, 1, JSON.stringify(listed));
  const rule = listed[0];
  assert.deepEqual([rule.name, rule.severity, rule.enabled, rule.cooldownSeconds, rule.version], [FORM_RULE, "warning", true, 300, 1]);
  assert.deepEqual([rule.condition.type, rule.condition.eventType, rule.condition.windowSeconds, rule.condition.operator, rule.condition.value],
    ["threshold", `signup-${run}`, 60, ">=", 3]);
  const row = ruleRow(rule.id);
  assert.ok((await page.textContent(row + " .rule-name")).includes(FORM_RULE), "the name as text");
  assert.equal(await page.$("#xss-rule"), null, "never as HTML");
  assert.equal(await page.textContent(row + " td.condition"), `count of “signup-${run}” events in 60 s >= 3`);
  assert.equal((await page.textContent(row + " td.severity")).trim(), "warning");
  assert.equal(await page.isChecked(row + " input.enabled"), true);
  assert.equal(await page.inputValue("#rule-name"), "", "the form's name is cleared once created");
  await shot("rules");

  // Disabled, then enabled again: each a PATCH {"enabled"} that raises the version.
  await page.click(row + " input.enabled");
  await waitFor(t, "the rule shown disabled", (sel) => document.querySelector(sel)?.dataset.enabled === "false", row);
  await flashMatches(t, /is disabled/);
  assert.equal(await page.isChecked(row + " input.enabled"), false);
  let now = await authed("GET", "/api/v1/rules/" + rule.id);
  assert.deepEqual([now.status, now.body.enabled, now.body.version], [200, false, 2]);
  await page.click(row + " input.enabled");
  await waitFor(t, "the rule shown enabled", (sel) => document.querySelector(sel)?.dataset.enabled === "true", row);
  await flashMatches(t, /is enabled/);
  now = await authed("GET", "/api/v1/rules/" + rule.id);
  assert.deepEqual([now.status, now.body.enabled, now.body.version], [200, true, 3]);

  // Deleted, after a confirmation that names it.
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click(row + " button.delete");
  await page.waitForSelector("#rules-empty", { timeout: WAIT });
  assert.ok(asked.includes(FORM_RULE), `the confirmation names the rule: ${asked}`);
  await flashMatches(t, /deleted/);
  assert.deepEqual((await authed("GET", "/api/v1/rules")).body.rules, []);
  assert.equal((await authed("GET", "/api/v1/rules/" + rule.id)).status, 404);
});

test("Live: once connected, it shows an anomaly raised while it is open, with its severity, as text", async (t) => {
  await page.click("nav a[href='#/live']");
  await connected(t);
  assert.match(await page.textContent("#live-state"), /Connected/);
  assert.equal(await page.isVisible("#live-anomalies-empty"), true);

  const r = await authed("POST", "/api/v1/rules", threshold(LIVE_RULE, "critical", "checkout", 3));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  liveRule = r.body;
  // Every worker reloads its rules on the change's announcement, within a second.
  await sleep(1_500);
  const sent = await sendBatch([0, 1, 2].map((i) => ({ eventId: `ui-checkout-${run}-${i}`, eventType: "checkout", userId: USER, properties: { plan: "pro" } })));
  assert.deepEqual([sent.status, sent.body?.accepted], [202, 3], JSON.stringify(sent.body));

  await waitFor(t, "the anomaly on the Live page", (name) => (document.querySelector("#live-anomalies")?.textContent || "").includes(name),
    LIVE_RULE, ANOMALY_WAIT);
  const item = `#live-anomalies li[data-rule-id="${liveRule.id}"]`;
  assert.deepEqual(await listedRuleIds("#live-anomalies li[data-anomaly-id]"), [liveRule.id], "one anomaly, of this rule");
  assert.equal(await page.getAttribute(item, "data-severity"), "critical");
  assert.equal((await page.textContent(item + " .sev")).trim(), "critical");
  assert.equal(await page.textContent(item + " .rule-name"), LIVE_RULE);
  assert.match(await page.textContent(item + " .anomaly-message"), /matching events in 60 s/);
  assert.equal(await page.$("#xss-live"), null, "the rule's name is text, never HTML");
  assert.equal(await page.isVisible("#live-anomalies-empty"), false);
  assert.equal(await page.getAttribute("#live-state", "data-state"), "connected");
  await shot("live");
});

test("Anomalies: the anomaly is listed with its severity, newest first, by severity, and older pages are loaded with nextBefore", async (t) => {
  // A second anomaly, of severity info and raised after the first, for the order and the pages.
  const r = await authed("POST", "/api/v1/rules", threshold(INFO_RULE, "info", INFO_TYPE, 1));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  infoRule = r.body;
  await sleep(1_500);
  const sent = await sendBatch([{ eventId: `${INFO_TYPE}-e1`, eventType: INFO_TYPE, userId: USER }]);
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const t0 = Date.now();
  for (;;) {
    const a = await authed("GET", "/api/v1/anomalies");
    assert.equal(a.status, 200, JSON.stringify(a.body));
    if (a.body.anomalies.length >= 2) break;
    assert.ok(Date.now() - t0 < ANOMALY_WAIT, `the second anomaly: not within ${ANOMALY_WAIT / 1000} s: ${JSON.stringify(a.body)}`);
    await sleep(250);
  }
  t.diagnostic(`the second anomaly: ${Date.now() - t0} ms`);

  await page.click("nav a[href='#/anomalies']");
  await waitFor(t, "both anomalies on the Anomalies page", () => document.querySelectorAll("#anomalies li[data-anomaly-id]").length === 2);
  assert.deepEqual(await listedRuleIds("#anomalies li[data-anomaly-id]"), [infoRule.id, liveRule.id], "newest first");
  const critical = `#anomalies li[data-rule-id="${liveRule.id}"]`;
  assert.equal(await page.textContent(critical + " .rule-name"), LIVE_RULE);
  assert.equal((await page.textContent(critical + " .sev")).trim(), "critical");
  assert.match(await page.getAttribute(critical + " .sev", "class"), /\bsev-critical\b/);
  assert.match(await page.textContent(critical + " .anomaly-figures"), /observed 3/);
  assert.equal((await page.textContent(`#anomalies li[data-rule-id="${infoRule.id}"] .sev`)).trim(), "info");
  assert.equal(await page.$("#xss-live"), null, "the rule's name is text, never HTML");
  assert.equal(await page.isVisible("#anomalies-more"), false, "one page holds them");
  await shot("anomalies");

  // By severity.
  await page.selectOption("#a-severity", "critical");
  await waitFor(t, "only the critical anomaly", (id) => {
    const ids = [...document.querySelectorAll("#anomalies li[data-anomaly-id]")].map((l) => l.dataset.ruleId);
    return ids.length === 1 && ids[0] === id;
  }, liveRule.id);
  await page.selectOption("#a-severity", "warning");
  await page.waitForSelector("#anomalies-empty", { timeout: WAIT });

  // Pages of one: “Load older” asks for the page before nextBefore and adds it below. (A change
  // of severity shows the list at once, so the page size is set first.)
  await page.fill("#a-limit", "1");
  await page.selectOption("#a-severity", "");
  await waitFor(t, "the first page of one", (id) => {
    const ids = [...document.querySelectorAll("#anomalies li[data-anomaly-id]")].map((l) => l.dataset.ruleId);
    return ids.length === 1 && ids[0] === id;
  }, infoRule.id);
  assert.equal(await page.isVisible("#anomalies-more"), true);
  await page.click("#anomalies-more");
  await waitFor(t, "the older anomaly below", () => document.querySelectorAll("#anomalies li[data-anomaly-id]").length === 2);
  assert.deepEqual(await listedRuleIds("#anomalies li[data-anomaly-id]"), [infoRule.id, liveRule.id]);
  // A full page of one has a cursor still; the page after it is empty and has none.
  if (await page.isVisible("#anomalies-more")) {
    await page.click("#anomalies-more");
    await waitFor(t, "no older page", () => document.querySelector("#anomalies-more")?.hidden === true);
  }
  assert.equal(await page.$$eval("#anomalies li[data-anomaly-id]", (l) => l.length), 2);
});

test("Live: the event tail shows the stored events of the type asked for, and no other", async (t) => {
  await page.click("nav a[href='#/live']");
  await connected(t);
  await page.fill("#live-tail-type", TAIL_TYPE);
  await page.check("#live-tail");
  await waitFor(t, "the tail subscribed", () => /Tailing “/.test(document.querySelector("#live-tail-state")?.textContent || ""));
  assert.equal(await page.isVisible("#live-events"), true);

  // The api marks the account as tailed and the workers read that within a few seconds: send a
  // pair (one of the type, one of another) until the first shows. A pair is one batch, so the
  // other type was judged by the time its partner arrived.
  const t0 = Date.now();
  let n = 0;
  while (!(await page.$(`#live-events tr[data-event-id^="${TAIL_TYPE}-"]`))) {
    assert.ok(Date.now() - t0 < WAIT, `a tailed event: not within ${WAIT / 1000} s`);
    const sent = await sendBatch([
      { eventId: `${TAIL_TYPE}-${n}`, eventType: TAIL_TYPE, userId: USER },
      { eventId: `other-${run}-${n}`, eventType: `other-${run}`, userId: USER },
    ]);
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    n++;
    await page.waitForSelector(`#live-events tr[data-event-id^="${TAIL_TYPE}-"]`, { timeout: 1_500 }).catch(() => {});
  }
  t.diagnostic(`a tailed event: ${Date.now() - t0} ms (${n} pairs sent)`);
  const shown = await page.textContent("#live-events tbody");
  assert.ok(shown.includes(TAIL_TYPE) && shown.includes(USER), shown);
  assert.equal(await page.$(`#live-events tr[data-event-id^="other-${run}-"]`), null, "only the type asked for");
  await shot("live-tail");

  await page.uncheck("#live-tail");
  assert.equal(await page.textContent("#live-tail-state"), "Not tailing.");
  assert.equal(await page.isVisible("#live-events"), false);
  // Leaving the page closes the socket and its reconnects: back on Live, a new one connects.
  await page.click("nav a[href='#/rules']");
  await page.waitForSelector("#rules tr[data-rule-id]", { timeout: WAIT });
  await page.click("nav a[href='#/live']");
  await connected(t);
});
