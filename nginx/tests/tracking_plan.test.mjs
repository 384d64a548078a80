// End-to-end tests of the dashboard's Tracking plan, Quarantine and Events pages in headless
// Chromium (Debian's), through nginx, against the stack `make up` runs. Each run signs up an
// account of its own, as dashboard.test.mjs does (an account holds at most 200 schema versions and
// none can be deleted, so runs against the demo account would fill it), and uses an event type of
// its own. Every wait is bounded (30 s) and its time reported as a test diagnostic.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as support from "./support.mjs";
import { BASE, WAIT } from "./support.mjs";

const run = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
const T = `ui-plan-${run}`;
const USER = `ui-plan-user-${run}`;
// e0 is sent before the type has a schema, e1 passes version 1, e2 breaks it and is quarantined.
const ID = { before: `${T}-e0`, valid: `${T}-e1`, invalid: `${T}-e2` };
const SAMPLE = { plan: "pro", seats: 3, note: "<img id=xss-sample src=x>" };
const DRAFT = {
  type: "object",
  properties: { plan: { type: "string" }, seats: { type: "number" }, note: { type: "string" } },
  required: ["plan", "seats", "note"],
};
const row = (table, id) => `#${table} tr[data-${table === "seen-types" || table === "schemas" ? "event-type" : "event-id"}="${id}"]`;
let browser, page, token, key;

before(async () => {
  let context;
  ({ browser, context } = await support.launch());
  page = await context.newPage();
  ({ token, key } = await support.signUpWithKey(page, `ui-plan-${run}@sluice.test`, "a tracking plan password", "tracking plan test"));
});
after(async () => { await browser?.close(); });

const shot = (name) => support.shot(page, name);
async function send(event) {
  const r = await fetch(BASE + "/api/v1/events", {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": key }, body: JSON.stringify(event),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}
const waitFor = (t, what, fn, arg) => support.waitFor(page, t, what, fn, arg, { polling: 500 });
const flashMatches = (t, re) => support.flashMatches(page, t, re, { polling: 500 });
const json = async (selector) => JSON.parse(await page.inputValue(selector));
const rowIds = (table) => page.$$eval(`#${table} tr[data-event-id]`, (rows) => rows.map((r) => r.dataset.eventId));

test("Tracking plan: a type seen lately gets a schema drafted from its event and from a pasted sample; one that does not compile is refused at its pointer; published, its type is set to quarantine", async (t) => {
  const first = await send({ eventId: ID.before, eventType: T, userId: USER, properties: SAMPLE });
  assert.equal(first.status, 202, JSON.stringify(first.body));
  await page.click("nav a[href='#/plan']");
  await page.waitForSelector("#schemas-empty", { timeout: WAIT });
  assert.equal(await page.inputValue("#account-mode"), "allow");

  // The aggregates are cached for 10 s: refresh the seen types until the new one is there.
  await waitFor(t, "the type among those seen in the last 24 hours", (sel) => {
    const found = document.querySelector(sel);
    if (!found) document.querySelector("#seen-refresh")?.click();
    return !!found;
  }, row("seen-types", T));
  assert.equal(await page.getAttribute(row("seen-types", T), "data-covered"), "false");
  assert.match(await page.textContent(row("seen-types", T) + " .coverage"), /no schema/);

  // A draft from its stored event (asked for again until the worker has stored it).
  await page.click(row("seen-types", T) + " button.draft-from-events");
  assert.equal(await page.inputValue("#schema-event-type"), T);
  await waitFor(t, "the stored event as the sample", () => {
    if (document.querySelector("#sample").value) return true;
    document.querySelector("#load-samples").click();
    return false;
  });
  assert.deepEqual(await json("#sample"), SAMPLE);
  assert.match(await page.textContent("#sample-note"), new RegExp(ID.before));
  await page.click("#derive");
  assert.deepEqual(await json("#schema-json"), DRAFT);

  // A pasted sample: not JSON, not an object, then properties with the same keys and types.
  await page.fill("#sample", "{");
  await page.click("#derive");
  await flashMatches(t, /The sample is not valid JSON/);
  await page.fill("#sample", "[1, 2]");
  await page.click("#derive");
  await flashMatches(t, /The sample must be a JSON object/);
  await page.fill("#schema-json", "");
  await page.fill("#sample", JSON.stringify({ plan: "team", seats: 12, note: "pasted" }));
  await page.click("#derive");
  assert.deepEqual(await json("#schema-json"), DRAFT);
  assert.match(await page.textContent("#schema-next-version"), /version 1 of this type/);

  // A schema that does not compile is refused with its pointer, and nothing is published.
  const broken = structuredClone(DRAFT);
  broken.properties.seats.type = "numbr";
  await page.fill("#schema-json", JSON.stringify(broken));
  await page.click("#publish-schema");
  await flashMatches(t, /\/schema\/properties\/seats/);
  assert.match(await page.textContent("#flash"), /does not compile/);
  assert.ok(await page.$("#schemas-empty"), "nothing was published");

  await page.click("#derive");
  await page.fill("#schema-description", "drafted from a sample");
  await page.click("#publish-schema");
  await flashMatches(t, new RegExp(`Published “${T}” version 1`));
  assert.equal((await page.textContent(row("schemas", T) + " td.versions")).trim(), "v1");
  assert.equal(await page.inputValue(row("schemas", T) + " select.mode"), "allow");
  assert.match(await page.textContent(row("schemas", T) + " .mode-source"), /the account's default/);
  assert.equal(await page.getAttribute(row("seen-types", T), "data-covered"), "true");
  assert.match(await page.textContent(row("seen-types", T) + " .coverage"), /v1, allow mode/);
  assert.equal(await page.inputValue("#schema-json"), "", "the draft is cleared once published");

  await page.selectOption(row("schemas", T) + " select.mode", "quarantine");
  await page.click(row("schemas", T) + " button.set-mode");
  await flashMatches(t, new RegExp(`“${T}” is in quarantine mode now`));
  assert.equal(await page.inputValue(row("schemas", T) + " select.mode"), "quarantine");
  assert.match(await page.textContent(row("schemas", T) + " .mode-source"), /its own mode/);
  const plan = await (await fetch(BASE + "/api/v1/schemas", { headers: { authorization: "Bearer " + token } })).json();
  const mine = plan.find((p) => p.eventType === T);
  assert.deepEqual([mine.mode, mine.ownMode, mine.latestVersion, mine.versions[0].description],
    ["quarantine", true, 1, "drafted from a sample"]);
  assert.equal(await page.$("#xss-sample"), null, "a sample's markup is text");
  await shot("tracking-plan");
});

test("Quarantine: an event that breaks the schema is held with its violation pointer; after a looser version it is replayed from the page, once", async (t) => {
  const valid = await send({ eventId: ID.valid, eventType: T, userId: USER, properties: { plan: "pro", seats: 5, note: "fine" } });
  assert.deepEqual([valid.status, valid.body?.status], [202, "accepted"], JSON.stringify(valid.body));
  const invalid = await send({ eventId: ID.invalid, eventType: T, userId: USER,
    properties: { plan: "pro", seats: "three", note: "<img id=xss-quarantine src=x>" } });
  assert.deepEqual([invalid.status, invalid.body?.status], [202, "quarantined"], JSON.stringify(invalid.body));

  await page.click("nav a[href='#/quarantine']");
  await page.waitForSelector("#quarantine-filter");
  await page.fill("#q-event-type", T);
  await page.click("#quarantine-filter button[type=submit]");
  // The worker stores it within about a second: show the list again until it is there.
  await waitFor(t, "the invalid event on the Quarantine page", (sel) => {
    const found = document.querySelector(sel);
    if (!found) document.querySelector("#quarantine-filter button[type=submit]").click();
    return !!found;
  }, row("quarantine", ID.invalid));
  assert.deepEqual(await rowIds("quarantine"), [ID.invalid], "only the event that broke the schema");
  const held = await page.textContent(row("quarantine", ID.invalid));
  assert.match(held, /\/properties\/seats/);
  assert.match(held, /v1/);
  assert.ok(held.includes("<img id=xss-quarantine src=x>"), "its properties shown as text");
  assert.equal(await page.$("#xss-quarantine"), null, "never as HTML");
  assert.equal(await page.isDisabled("#replay-selected"), true, "nothing selected yet");
  await shot("quarantine");

  // A looser version 2, started from version 1.
  await page.click("nav a[href='#/plan']");
  await page.click(row("schemas", T) + " button.version[data-version='1']");
  await page.waitForSelector("#schema-view");
  assert.deepEqual(JSON.parse(await page.textContent("#schema-view-json")), DRAFT);
  assert.match(await page.textContent("#schema-view"), /drafted from a sample/);
  await page.click("#edit-version");
  assert.equal(await page.inputValue("#schema-event-type"), T);
  assert.deepEqual(await json("#schema-json"), DRAFT);
  assert.match(await page.textContent("#schema-next-version"), /Publishes version 2/);
  const looser = structuredClone(DRAFT);
  looser.properties.seats.type = ["number", "string"];
  await page.fill("#schema-json", JSON.stringify(looser, null, 2));
  await page.fill("#schema-description", "seats may be written out");
  await page.click("#publish-schema");
  await flashMatches(t, new RegExp(`Published “${T}” version 2`));
  assert.equal((await page.textContent(row("schemas", T) + " td.versions")).replace(/\s+/g, " ").trim(), "v1 v2");

  // Back to Quarantine with the type in the address: the filter is filled and applied.
  await page.evaluate((type) => { location.hash = "#/quarantine/" + encodeURIComponent(type); }, T);
  await page.waitForSelector(row("quarantine", ID.invalid), { timeout: WAIT });
  assert.equal(await page.inputValue("#q-event-type"), T);
  await page.check(row("quarantine", ID.invalid) + " input.pick");
  assert.equal(await page.isDisabled("#replay-selected"), false);
  await page.click("#replay-selected");
  await page.waitForSelector("#replay-result", { timeout: WAIT });
  const answer = await page.textContent("#replay-result");
  assert.match(answer, /1 replayed/);
  assert.match(answer, /0 still quarantined/);
  await page.waitForSelector("#quarantine-empty", { timeout: WAIT });

  // A replay by the filter finds nothing more: the event was moved once.
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click("#replay-filter");
  await waitFor(t, "the answer of the replay by filter", () => /0 replayed/.test(document.querySelector("#replay-result")?.textContent || ""));
  assert.ok(asked.includes(T), `the confirmation names the filter: ${asked}`);
  assert.match(await page.textContent("#replay-result"), /0 still quarantined/);
  await shot("quarantine-replayed");
});

test("Events: the type's events newest first, the replayed one too, paged with nextBefore, each shown whole in the detail panel as text", async (t) => {
  await page.click("nav a[href='#/events']");
  await page.waitForSelector("#events-filter");
  await page.fill("#e-event-type", T);
  await page.fill("#e-limit", "50");
  await page.click("#events-filter button[type=submit]");
  // The replayed event goes through the stream to the worker: show the list again until it is stored.
  await waitFor(t, "the type's three events (the replayed one included) on the Events page", (ids) => {
    const shown = [...document.querySelectorAll("#events tr[data-event-id]")].map((r) => r.dataset.eventId);
    if (ids.every((id) => shown.includes(id))) return true;
    document.querySelector("#events-filter button[type=submit]").click();
    return false;
  }, [ID.invalid, ID.valid, ID.before]);
  assert.deepEqual(await rowIds("events"), [ID.invalid, ID.valid, ID.before], "newest first");
  assert.equal((await page.textContent(row("events", ID.invalid) + " td:last-child")).trim(), "v2");
  assert.equal((await page.textContent(row("events", ID.valid) + " td:last-child")).trim(), "v1");
  assert.equal((await page.textContent(row("events", ID.before) + " td:last-child")).trim(), "—");

  // Pages of two: the second is reached with nextBefore and is the last.
  await page.fill("#e-limit", "2");
  await page.click("#events-filter button[type=submit]");
  await waitFor(t, "the first page of two", (n) => document.querySelectorAll("#events tr[data-event-id]").length === n, 2);
  assert.deepEqual(await rowIds("events"), [ID.invalid, ID.valid]);
  assert.equal(await page.isVisible("#e-next"), true);
  assert.equal(await page.isVisible("#e-prev"), false);
  assert.equal(await page.textContent("#e-page"), "page 1");
  await page.click("#e-next");
  await waitFor(t, "the second page", (id) => !!document.querySelector(`#events tr[data-event-id="${id}"]`), ID.before);
  assert.deepEqual(await rowIds("events"), [ID.before]);
  assert.equal(await page.isVisible("#e-next"), false, "a short page is the last");
  assert.equal(await page.textContent("#e-page"), "page 2");
  await page.click("#e-prev");
  await waitFor(t, "the first page again", (id) => !!document.querySelector(`#events tr[data-event-id="${id}"]`), ID.invalid);
  assert.deepEqual(await rowIds("events"), [ID.invalid, ID.valid]);

  // A click on a row shows the stored event, as JSON text.
  await page.click(row("events", ID.invalid));
  await page.waitForSelector("#event-json", { timeout: WAIT });
  const shown = JSON.parse(await page.textContent("#event-json"));
  assert.deepEqual([shown.eventId, shown.eventType, shown.userId, shown.properties, shown.schemaVersion],
    [ID.invalid, T, USER, { plan: "pro", seats: "three", note: "<img id=xss-quarantine src=x>" }, 2]);
  assert.equal(shown.schemaViolations, undefined, "it passes version 2");
  assert.equal(shown.quarantinedAt, undefined);
  assert.equal(await page.getAttribute(row("events", ID.invalid), "aria-selected"), "true");
  assert.equal(await page.$("#xss-quarantine"), null, "never as HTML");
  await shot("events");
  await page.click(row("events", ID.valid) + " button");
  await waitFor(t, "the other event in the detail panel", (id) => (document.querySelector("#event-json")?.textContent || "").includes(`"eventId": "${id}"`), ID.valid);
  assert.equal(JSON.parse(await page.textContent("#event-json")).properties.seats, 5);
  await page.click("#event-detail-close");
  assert.equal(await page.$("#event-detail"), null);

  // Another user's filter matches none of them.
  await page.fill("#e-user-id", "nobody-" + run);
  await page.click("#events-filter button[type=submit]");
  await page.waitForSelector("#events-empty", { timeout: WAIT });
  assert.equal(await page.$$eval("main img", (imgs) => imgs.length), 0);
});
