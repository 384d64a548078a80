// The Sluice dashboard: a small single-page app with no dependencies and nothing loaded from other
// hosts. The JWT lives in sessionStorage (never in a cookie); a 401 from any call returns to login.
(function () {
  "use strict";
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const flash = document.getElementById("flash");
  const TOKEN = "sluice.token";
  let timers = [];
  // What a page undoes when it is left (the Live page's WebSocket and its reconnect timers).
  let cleanups = [];

  // ---- helpers ---------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v === true) e.setAttribute(k, "");
      else if (v !== false && v != null) e.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  const fmt = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 }));
  const when = (t) => (t ? new Date(t).toLocaleString() : "—");
  function say(text, ok) {
    flash.textContent = text;
    flash.className = ok ? "ok" : "";
    flash.hidden = !text;
  }
  function render(title, ...children) {
    main.replaceChildren(h("h1", {}, title), ...children);
    document.title = title + " · Sluice";
  }

  class ApiError extends Error {
    constructor(message, code) { super(message); this.code = code; }
  }
  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.authorization = "Bearer " + token;
    if (body !== undefined) headers["content-type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError("The server cannot be reached. Check your connection and try again.");
    }
    const data = resp.status === 204 ? null : await resp.json().catch(() => null);
    if (resp.status === 401 && token) {
      sessionStorage.removeItem(TOKEN);
      location.hash = "#/login";
      throw new ApiError("Your session has ended; please log in again.");
    }
    if (!resp.ok) {
      const err = data && data.error;
      let msg = err ? err.message : "Request failed (" + resp.status + ")";
      // The message often names its one violation already ("/name: must be …"): add only the others.
      const extra = err && err.details ? err.details.filter((d) => !msg.includes(d.message)) : [];
      if (extra.length) msg += ": " + extra.map((d) => (d.path || "") + " " + d.message).join("; ");
      if (resp.status === 429) msg = "Too many attempts; wait a moment and try again.";
      throw new ApiError(msg, err && err.code);
    }
    return data;
  }
  function guard(fn) {
    return async (...a) => {
      try { say(""); await fn(...a); } catch (e) { say(e.message || String(e)); }
    };
  }
  // A path with the query parameters that have a value.
  function query(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v != null && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? path + "?" + s : path;
  }
  // A datetime-local input's value (the browser's local time) as RFC 3339 for the api; none when empty.
  function instant(input, label) {
    if (!input.value) return undefined;
    const d = new Date(input.value);
    if (isNaN(d)) throw new Error(label + " is not a date and time.");
    return d.toISOString();
  }
  function parseJson(text, what) {
    try { return JSON.parse(text); } catch (e) { throw new Error(what + " is not valid JSON: " + e.message); }
  }
  const jsonText = (v) => JSON.stringify(v, null, 2);
  const short = (s, n = 160) => (s.length > n ? s.slice(0, n) + "…" : s);
  const violationList = (vs) => (vs && vs.length
    ? h("ul", { class: "violations" }, vs.map((v) => h("li", {}, h("code", {}, v.path), " ", v.message)))
    : "—");
  // Cursor pages, newest first: an answer's nextBefore is the position of the next page (not an
  // offset, so events arriving meanwhile do not shift it); the positions of the pages above are
  // kept for “Previous page”.
  function pager(prefix, show) {
    let above = [], at, next;
    const prev = h("button", { type: "button", class: "secondary", id: prefix + "-prev", hidden: true, onclick: guard(() => go(above[above.length - 1], -1)) }, "Previous page");
    const more = h("button", { type: "button", class: "secondary", id: prefix + "-next", hidden: true, onclick: guard(() => go(next, 1)) }, "Next page");
    const where = h("span", { class: "muted", id: prefix + "-page" });
    async function go(before, step) {
      const r = await show(before);
      if (step > 0) above.push(at); else if (step < 0) above.pop();
      at = before;
      next = r.nextBefore;
      prev.hidden = !above.length;
      more.hidden = !next;
      where.textContent = above.length || next ? "page " + (above.length + 1) : "";
    }
    return { controls: h("div", { class: "inline pager" }, prev, more, where), first: () => { above = []; return go(undefined, 0); } };
  }

  // A line chart as SVG, with its numbers as a table for screen readers and keyboard users.
  function chart(points, label) {
    const W = 800, H = 200, P = 30;
    const max = Math.max(1, ...points.map((p) => p.v));
    const x = (i) => P + (i * (W - 2 * P)) / Math.max(1, points.length - 1);
    const y = (v) => H - P + 5 - (v * (H - 2 * P)) / max;
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label + "; the same numbers are in the table below");
    const line = (x1, y1, x2, y2, stroke) => {
      const l = document.createElementNS(NS, "line");
      Object.entries({ x1, y1, x2, y2, stroke, "stroke-width": 1 }).forEach(([k, v]) => l.setAttribute(k, v));
      svg.append(l);
    };
    line(P, H - P + 5, W - P, H - P + 5, "#b8c2cc");
    const text = (tx, ty, s) => {
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("font-size", "11"); t.setAttribute("fill", "#5b6776");
      t.textContent = s; svg.append(t);
    };
    text(2, 14, fmt(max)); text(2, H - P + 5, "0");
    if (points.length) {
      const path = document.createElementNS(NS, "polyline");
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "#0b5cad");
      path.setAttribute("stroke-width", "2");
      path.setAttribute("points", points.map((p, i) => x(i) + "," + y(p.v)).join(" "));
      svg.append(path);
      text(P, H - 4, points[0].label); text(W - P - 60, H - 4, points[points.length - 1].label);
    }
    const table = h("details", {}, h("summary", {}, "Show the numbers"),
      h("div", { class: "table-wrap" }, h("table", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, label)),
        points.map((p) => h("tr", {}, h("td", {}, p.label), h("td", {}, fmt(p.v)))))));
    return h("div", { class: "card" }, svg, table);
  }

  // ---- pages -----------------------------------------------------------------------------------
  function authPage(mode) {
    const isLogin = mode === "login";
    const email = h("input", { id: "email", type: "email", autocomplete: "email", required: true });
    const password = h("input", { id: "password", type: "password", autocomplete: isLogin ? "current-password" : "new-password", required: true, minlength: isLogin ? null : 12 });
    const form = h("form", { class: "card auth", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      if (!isLogin) {
        await api("POST", "/api/v1/auth/register", { email: email.value, password: password.value });
      }
      const t = await api("POST", "/api/v1/auth/login", { email: email.value, password: password.value });
      sessionStorage.setItem(TOKEN, t.token);
      location.hash = "#/overview";
    }) },
      h("h1", {}, isLogin ? "Log in" : "Create your account"),
      h("div", { class: "field" }, h("label", { for: "email" }, "Email"), email),
      h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password,
        isLogin ? null : h("div", { class: "muted" }, "At least 12 characters.")),
      h("button", { type: "submit" }, isLogin ? "Log in" : "Sign up"),
      h("p", {}, isLogin ? h("a", { href: "#/signup" }, "No account yet? Sign up") : h("a", { href: "#/login" }, "Have an account? Log in")));
    main.replaceChildren(form);
    document.title = (isLogin ? "Log in" : "Sign up") + " · Sluice";
    email.focus();
  }

  async function keysPage() {
    const name = h("input", { id: "key-name", required: true, maxlength: 100, placeholder: "production" });
    const created = h("div");
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const load = guard(async () => {
      const keys = await api("GET", "/api/v1/keys");
      if (!keys.length) { list.replaceChildren(h("p", { class: "muted" }, "No keys yet: create one above.")); return; }
      list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "keys" },
        h("tr", {}, ["Name", "Prefix", "Created", "Last used", "Status", ""].map((t) => h("th", {}, t))),
        keys.map((k) => h("tr", { "data-key-id": k.id },
          h("td", {}, k.name), h("td", {}, h("code", {}, k.prefix + "…")), h("td", {}, when(k.createdAt)),
          h("td", {}, when(k.lastUsedAt)), h("td", {}, k.revokedAt ? "revoked " + when(k.revokedAt) : "active"),
          h("td", {}, k.revokedAt ? "" : h("button", { class: "danger", type: "button", onclick: guard(async () => {
            if (!confirm(`Revoke the key “${k.name}” (${k.prefix}…)? Clients using it are refused within a second.`)) return;
            await api("DELETE", "/api/v1/keys/" + k.id);
            await load();
            say("Key revoked.", true);
          }) }, "Revoke")))))));
    });
    const form = h("form", { class: "inline card", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const k = await api("POST", "/api/v1/keys", { name: name.value });
      name.value = "";
      const secret = h("div", { class: "secret", id: "new-key" }, k.key);
      created.replaceChildren(h("div", { class: "warning", role: "status" },
        h("strong", {}, "Copy this key now: it is shown only once."), " Sluice keeps only its hash.",
        secret,
        h("button", { type: "button", class: "secondary", id: "copy-key", onclick: guard(async () => {
          await navigator.clipboard.writeText(k.key);
          say("Key copied to the clipboard.", true);
        }) }, "Copy")));
      await load();
    }) }, h("div", {}, h("label", { for: "key-name" }, "New key name"), name), h("button", { type: "submit" }, "Create key"));
    render("API keys", form, created, list);
    await load();
  }

  // Sources: the SDKs Sluice speaks (Segment, RudderStack and PostHog's wire formats, routed by
  // nginx at this origin) and the account's signed webhook sources. A key is never shown here, only
  // its prefix; a webhook secret once, in the answer to its create or rotation.
  const SCHEMES = {
    "standard-webhooks": { label: "Standard Webhooks", eventIdFrom: "header", hint: "Svix and other Standard Webhooks senders. Leave the secret empty and Sluice makes one (whsec_…); paste it into the sender. If the sender issues its own secret, paste that instead." },
    stripe: { label: "Stripe", eventIdFrom: "/id", hint: "Stripe issues the signing secret: paste the endpoint's whsec_… from Stripe here (create the endpoint in Stripe, then point it at the delivery URL shown next), or add it later with “Set the sender's secret”." },
  };
  function sdkSnippets(key) {
    const o = location.origin;
    return [
      ["segment-node", "Segment — Node.js", "@segment/analytics-node",
        `const { Analytics } = require('@segment/analytics-node')\n\nconst analytics = new Analytics({ writeKey: '${key}', host: '${o}' })\n` +
        `analytics.track({ userId: 'user-1', event: 'Order Completed', properties: { revenue: 12.5 } })\nawait analytics.closeAndFlush()`],
      ["segment-python", "Segment — Python", "segment-analytics-python",
        `import segment.analytics as analytics\n\nanalytics.write_key = '${key}'\nanalytics.host = '${o}'\n` +
        `analytics.track(user_id='user-1', event='Order Completed', properties={'revenue': 12.5})\nanalytics.shutdown()  # sends what is queued`],
      ["rudderstack-python", "RudderStack — Python", "rudder-sdk-python",
        `import rudderstack.analytics as rudder_analytics\n\nrudder_analytics.write_key = '${key}'\nrudder_analytics.dataPlaneUrl = '${o}'\n` +
        `rudder_analytics.track(user_id='user-1', event='Order Completed', properties={'revenue': 12.5})\nrudder_analytics.shutdown()`],
      ["posthog-js", "PostHog — browser", "posthog-js",
        `import posthog from 'posthog-js'\n\nposthog.init('${key}', { api_host: '${o}' })\nposthog.capture('order completed', { revenue: 12.5 })`],
      ["posthog-python", "PostHog — Python", "posthog",
        `from posthog import Posthog\n\nposthog = Posthog('${key}', host='${o}')\n` +
        `posthog.capture('order completed', distinct_id='user-1', properties={'revenue': 12.5})\nposthog.shutdown()`],
      ["posthog-node", "PostHog — Node.js", "posthog-node",
        `const { PostHog } = require('posthog-node')\n\nconst posthog = new PostHog('${key}', { host: '${o}' })\n` +
        `posthog.capture({ distinctId: 'user-1', event: 'order completed', properties: { revenue: 12.5 } })\nawait posthog.shutdown()`],
    ].map(([id, title, pkg, code]) => h("section", { class: "card snippet", id: "snippet-" + id },
      h("h3", {}, title, " ", h("code", { class: "muted" }, pkg)), h("pre", {}, h("code", {}, code))));
  }

  async function sourcesPage() {
    // ---- the SDKs
    const keyPick = h("select", { id: "snippet-key", "aria-label": "Key shown in the snippets", hidden: true });
    const keyNote = h("p", { id: "snippet-key-note" });
    const snippets = h("div", { class: "snippets", id: "sdk-snippets" });
    let live = [];
    const showSnippets = () => {
      const k = live.find((x) => x.id === keyPick.value) || live[0];
      const key = k ? k.prefix + "…" : "<your API key>";
      keyNote.replaceChildren(...(k
        ? ["The snippets show your key “", k.name, "” as ", h("code", {}, key), ": put the whole key there, as it was shown when you created it (Sluice keeps only its hash). Lost it? ",
          h("a", { href: "#/keys" }, "Create a new key"), "."]
        : ["You have no active API key yet: ", h("a", { href: "#/keys" }, "create one"), ", then put it where the snippets say ", h("code", {}, key), "."]));
      snippets.replaceChildren(...sdkSnippets(key));
    };
    keyPick.addEventListener("change", showSnippets);
    const loadKeys = guard(async () => {
      live = (await api("GET", "/api/v1/keys")).filter((k) => !k.revokedAt);
      keyPick.replaceChildren(...live.map((k) => h("option", { value: k.id }, k.name + " (" + k.prefix + "…)")));
      keyPick.hidden = live.length < 2;
      showSnippets();
    });

    // ---- webhook sources
    const name = h("input", { id: "source-name", required: true, maxlength: 100, placeholder: "stripe production" });
    const scheme = h("select", { id: "source-scheme" }, Object.entries(SCHEMES).map(([v, s]) => h("option", { value: v }, s.label)));
    const eventType = h("input", { id: "source-event-type", required: true, maxlength: 200, placeholder: "webhook" });
    const eventIdFrom = h("input", { id: "source-event-id-from", maxlength: 256, "aria-describedby": "source-event-id-from-hint" });
    const userIdFrom = h("input", { id: "source-user-id-from", maxlength: 256, placeholder: "/data/object/customer", "aria-describedby": "source-user-id-from-hint" });
    const secretIn = h("input", { id: "source-secret", maxlength: 256, autocomplete: "off", spellcheck: "false", placeholder: "Sluice makes one", "aria-describedby": "source-scheme-hint" });
    const schemeHint = h("p", { class: "muted hint", id: "source-scheme-hint" });
    const onScheme = () => {
      const s = SCHEMES[scheme.value];
      schemeHint.textContent = s.hint;
      eventIdFrom.placeholder = s.eventIdFrom;
      secretIn.placeholder = scheme.value === "stripe" ? "whsec_… from Stripe" : "Sluice makes one";
      eventType.placeholder = scheme.value === "stripe" ? "stripe.event" : "webhook";
    };
    scheme.addEventListener("change", onScheme);
    onScheme();
    const shown = h("div", { id: "source-secret-box" });
    let shownFor = null;
    // The secret of a create or a rotation, once: it is gone when the page is left or re-rendered.
    // A secret the user pasted (the sender's own) is not echoed back.
    const showSecret = (s, rotated, pasted) => {
      shownFor = s.id;
      shown.replaceChildren(h("div", { class: pasted ? "card" : "warning", role: "status" },
        pasted ? ["“", s.name, "” verifies its deliveries with the secret you pasted."]
          : [h("strong", {}, "Copy this signing secret now: it will not be shown again."), " Configure it in the sender of “", s.name, "”.",
            h("div", { class: "secret", id: "new-secret" }, s.secret),
            h("button", { type: "button", class: "secondary", id: "copy-secret", onclick: guard(async () => {
              await navigator.clipboard.writeText(s.secret);
              say("Secret copied to the clipboard.", true);
            }) }, "Copy")],
        h("p", {}, "Delivery URL (the sender POSTs here, signed): ", h("code", { id: "new-source-url" }, location.origin + s.ingestPath)),
        rotated && s.previousSecretValidUntil ? h("p", {}, "The previous secret keeps verifying until ", when(s.previousSecretValidUntil), ".") : null));
      shown.scrollIntoView({ block: "nearest" });
    };
    const optional = (input) => (input.value.trim() ? input.value.trim() : undefined);
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const load = guard(async () => {
      const sources = await api("GET", "/api/v1/sources");
      if (!sources.length) { list.replaceChildren(h("p", { class: "muted", id: "sources-empty" }, "No webhook sources yet: create one above.")); return; }
      list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "sources" },
        h("tr", {}, ["Name", "Scheme", "Delivery URL", "Events", "Created", "Secret", ""].map((t) => h("th", {}, t))),
        sources.map((s) => {
          const row = h("tr", { "data-source-id": s.id });
          // The sender's own new secret (Stripe issues it; so may a Standard Webhooks sender).
          const own = h("input", { "aria-label": "The sender's new secret for " + s.name, required: true, minlength: 8, maxlength: 256, autocomplete: "off", spellcheck: "false", placeholder: "whsec_…" });
          const ownForm = h("form", { class: "inline own-secret", hidden: true, onsubmit: guard(async (ev) => {
            ev.preventDefault();
            const r = await api("POST", "/api/v1/sources/" + s.id + "/rotate", { secret: own.value.trim() });
            showSecret(r, true, true);
            await load();
          }) }, own, h("button", { type: "submit" }, "Set"), h("button", { type: "button", class: "secondary", onclick: () => { ownForm.hidden = true; } }, "Cancel"));
          row.append(
            h("td", {}, s.name), h("td", {}, SCHEMES[s.scheme] ? SCHEMES[s.scheme].label : s.scheme),
            h("td", {}, h("code", { class: "url" }, location.origin + s.ingestPath)),
            h("td", {}, h("div", {}, "eventType ", h("code", {}, s.eventType)), h("div", { class: "muted" }, "id from ", h("code", {}, s.eventIdFrom)),
              h("div", { class: "muted" }, "userId from ", s.userIdFrom ? h("code", {}, s.userIdFrom) : "webhook:<source id>")),
            h("td", {}, when(s.createdAt)),
            h("td", { class: "rotated" }, s.rotatedAt ? ["rotated " + when(s.rotatedAt), h("div", { class: "muted" }, "previous valid until " + when(s.previousSecretValidUntil))] : "—"),
            h("td", { class: "actions" },
              s.scheme === "standard-webhooks" ? h("button", { type: "button", class: "secondary rotate", onclick: guard(async () => {
                if (!confirm(`Rotate the signing secret of “${s.name}”? The current one keeps verifying for a grace period, so you can update the sender.`)) return;
                const r = await api("POST", "/api/v1/sources/" + s.id + "/rotate");
                showSecret(r, true);
                await load();
              }) }, "Rotate secret") : null,
              h("button", { type: "button", class: "secondary own", onclick: () => { ownForm.hidden = false; own.focus(); } }, "Set the sender's secret"),
              h("button", { type: "button", class: "danger", onclick: guard(async () => {
                if (!confirm(`Delete the webhook source “${s.name}”? Its deliveries are refused from then on.`)) return;
                await api("DELETE", "/api/v1/sources/" + s.id);
                if (shownFor === s.id) shown.replaceChildren();
                await load();
                say("Webhook source deleted.", true);
              }) }, "Delete"),
              ownForm));
          return row;
        }))));
    });
    const field = (label, input, hint, id) => h("div", {}, h("label", { for: input.id }, label), input, hint ? h("div", { class: "muted hint", id }, hint) : null);
    const form = h("form", { class: "card", id: "new-source", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const pasted = optional(secretIn);
      const s = await api("POST", "/api/v1/sources", {
        name: name.value, scheme: scheme.value, eventType: eventType.value,
        eventIdFrom: optional(eventIdFrom), userIdFrom: optional(userIdFrom), secret: pasted,
      });
      [name, eventType, eventIdFrom, userIdFrom, secretIn].forEach((i) => { i.value = ""; });
      showSecret(s, false, !!pasted);
      await load();
    }) },
      h("div", { class: "inline" },
        field("Name", name), field("Scheme", scheme), field("eventType of its events", eventType),
        field("Event id from (optional)", eventIdFrom, "header (webhook-id) or a JSON pointer", "source-event-id-from-hint"),
        field("userId from (optional)", userIdFrom, "a JSON pointer into the body", "source-user-id-from-hint"),
        field("Signing secret (optional)", secretIn)),
      schemeHint,
      h("button", { type: "submit" }, "Create source"));

    render("Sources",
      h("h2", {}, "Send from the SDK you already use"),
      h("p", {}, "Sluice speaks the Segment / RudderStack HTTP API and PostHog's capture API at this address: keep your SDK, set its host to ",
        h("code", { id: "sluice-origin" }, location.origin), " and use a Sluice API key as its write key or project key."),
      h("div", { class: "card" }, keyNote, keyPick),
      snippets,
      h("p", { class: "muted" }, "Server SDKs send in batches: flush or shut the client down before your process exits. " +
        "Leave POSTHOG_CAPTURE_MODE unset (its v1 mode posts where Sluice does not listen). A key in browser code is public: give the browser a key of its own, which you can revoke. " +
        "Segment's browser analytics.js is not supported: it reads its settings from Segment's CDN and posts to other paths."),
      h("h2", {}, "Webhook sources"),
      h("p", {}, "A provider delivers its webhooks to a source's URL, signed with the source's secret; each delivery becomes one event."),
      form, shown, list);
    await Promise.all([loadKeys(), load()]);
  }

  async function overviewPage() {
    let range = sessionStorage.getItem("sluice.range") || "1h";
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const buttons = ["15m", "1h", "24h", "7d"].map((r) => h("button", { type: "button", "aria-pressed": String(r === range), onclick: () => {
      range = r; sessionStorage.setItem("sluice.range", r);
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === r)));
      refresh();
    } }, r));
    const bucket = { "15m": "1m", "1h": "1m", "24h": "1h", "7d": "1d" };
    const refresh = guard(async () => {
      const [s, ts] = await Promise.all([
        api("GET", "/api/v1/analytics/summary?range=" + range),
        api("GET", `/api/v1/analytics/timeseries?range=${range}&bucket=${bucket[range]}`),
      ]);
      if (!s.totalEvents) {
        const keys = await api("GET", "/api/v1/keys").catch(() => []);
        const live = keys.find((k) => !k.revokedAt);
        const key = live ? live.prefix + "…(your key)" : "<create a key first>";
        body.replaceChildren(h("div", { class: "card", id: "empty" },
          h("h2", {}, "No events in this range yet"),
          h("p", {}, live ? "Send your first event with your key (" + live.prefix + "…):" : "Create an API key, then send your first event:"),
          h("pre", {}, `curl -X POST ${location.origin}/api/v1/events \\\n  -H 'content-type: application/json' -H 'x-api-key: ${key}' \\\n  -d '{"eventType":"signup","userId":"user-1"}'`),
          live ? null : h("a", { href: "#/keys" }, "Create a key")));
        return;
      }
      const stat = (label, value, id) => h("div", { class: "card stat" }, h("div", { class: "value", id }, value), h("div", { class: "label" }, label));
      const points = ts.points.map((p) => ({ label: new Date(p.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), v: p.count }));
      const maxType = Math.max(1, ...s.eventsByType.map((t) => t.count));
      body.replaceChildren(
        h("div", { class: "grid" },
          stat("events in " + range, fmt(s.totalEvents), "total-events"),
          stat("unique users (±1%)", fmt(s.uniqueUsers), "unique-users"),
          stat("events per second (average)", fmt(s.eventsPerSecond), "eps")),
        h("h2", {}, "Events per " + bucket[range]),
        chart(points, "events per " + bucket[range]),
        h("div", { class: "grid" },
          h("div", {}, h("h2", {}, "By type"), h("div", { class: "table-wrap" }, h("table", { id: "by-type" },
            h("tr", {}, h("th", {}, "type"), h("th", {}, "events"), h("th", {}, "share")),
            s.eventsByType.map((t) => h("tr", {}, h("td", {}, t.eventType), h("td", {}, fmt(t.count)),
              h("td", {}, h("progress", { max: maxType, value: t.count, "aria-hidden": "true" }), " ", (100 * t.share).toFixed(1) + "%")))))),
          h("div", {}, h("h2", {}, "Top users"), h("div", { class: "table-wrap" }, h("table", { id: "top-users" },
            h("tr", {}, h("th", {}, "user"), h("th", {}, "events")),
            s.topUsers.map((u) => h("tr", {}, h("td", {}, h("a", { href: "#/users/" + encodeURIComponent(u.userId) }, u.userId)), h("td", {}, fmt(u.count)))))))));
    });
    render("Overview", h("div", { class: "ranges", role: "group", "aria-label": "Time range" }, buttons), body);
    await refresh();
    timers.push(setInterval(refresh, 2000));
  }

  // What a tenant may see of the pipeline: their own figures and a coarse state of the shared
  // stream. Stream length, lag and consumer names are for operators (the services' /metrics).
  async function pipelinePage() {
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const states = {
      ok: "Events are being stored as they arrive.",
      degraded: "The pipeline is degraded: events are accepted but may be stored late. The operators are told by their monitoring.",
      backlogged: "The pipeline is backlogged: events are stored late, and new ones may be refused with 503 (clients retry).",
    };
    const refresh = guard(async () => {
      const p = await api("GET", "/api/v1/analytics/pipeline");
      const stat = (label, value, id) => h("div", { class: "card stat", id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
      const reasons = Object.entries(p.deadLetters.byReason);
      body.replaceChildren(
        h("div", { class: p.state === "ok" ? "card" : "warning", role: "status", id: "pipeline-state", "data-state": p.state },
          h("strong", {}, p.state), " — ", states[p.state] || ""),
        h("div", { class: "grid", id: "pipeline-stats" },
          stat("your events, last 5 minutes", fmt(p.ingest.last5m), "ingest-5m"),
          stat("your events, last hour", fmt(p.ingest.last1h), "ingest-1h"),
          stat("your events per second (5 min)", fmt(p.ingest.eventsPerSecond), "ingest-eps"),
          stat("your dead letters", fmt(p.deadLetters.total), "dead-letters-total"),
          stat("of them replayed", fmt(p.deadLetters.replayed), "dead-letters-replayed")),
        h("h2", {}, "Your dead letters by reason"),
        h("div", { class: "table-wrap" }, h("table", { id: "dead-letters-by-reason" }, h("tr", {}, h("th", {}, "reason"), h("th", {}, "dead letters")),
          reasons.map(([r, n]) => h("tr", {}, h("td", {}, h("a", { href: "#/dlq" }, r)), h("td", {}, fmt(n)))))));
    });
    render("Pipeline", body);
    await refresh();
    timers.push(setInterval(refresh, 2000));
  }

  async function dlqPage() {
    const reason = h("select", { id: "reason" }, ["", "invalid", "write_rejected", "poison"].map((r) => h("option", { value: r }, r || "all reasons")));
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const selected = new Set();
    const replay = async (id) => api("POST", "/api/v1/dlq/" + encodeURIComponent(id) + "/replay");
    const load = guard(async () => {
      const r = await api("GET", "/api/v1/dlq?limit=100" + (reason.value ? "&reason=" + reason.value : ""));
      selected.clear();
      if (!r.deadLetters.length) { list.replaceChildren(h("p", { class: "muted", id: "dlq-empty" }, "No dead letters. Events that cannot be stored land here, with the reason.")); return; }
      list.replaceChildren(
        h("button", { type: "button", id: "replay-selected", onclick: guard(async () => {
          let n = 0, before = 0;
          for (const id of selected) {
            // A letter is replayed once: one replayed before is skipped, not an error.
            try { await replay(id); n++; } catch (e) { if (e.code === "already_replayed") before++; else throw e; }
          }
          await load();
          say(`Replayed ${n} dead letter(s)` + (before ? `; ${before} had been replayed before.` : "."), true);
        }) }, "Replay selected"),
        h("div", { class: "table-wrap" }, h("table", { id: "dead-letters" },
          h("tr", {}, ["", "event", "reason", "error", "attempts", "failed", "replayed", ""].map((t) => h("th", {}, t))),
          r.deadLetters.map((d) => h("tr", { "data-id": d.id },
            h("td", {}, h("input", { type: "checkbox", "aria-label": "select " + (d.eventId || d.id), onchange: (e) => (e.target.checked ? selected.add(d.id) : selected.delete(d.id)) })),
            h("td", {}, h("code", {}, d.eventId || "—")), h("td", {}, d.reason), h("td", {}, d.error),
            h("td", {}, d.attempts), h("td", {}, when(d.failedAt)), h("td", { class: "replayed" }, d.replayedAt ? when(d.replayedAt) : "—"),
            h("td", {}, h("button", { type: "button", class: "secondary", disabled: !!d.replayedAt, title: d.replayedAt ? "A dead letter is replayed once" : undefined, onclick: guard(async () => {
              await replay(d.id);
              await load();
              say("Replayed: the event is back on the stream.", true);
            }) }, d.replayedAt ? "Replayed" : "Replay")))))));
    });
    reason.addEventListener("change", load);
    render("Dead letters", h("div", { class: "card" }, h("label", { for: "reason" }, "Reason"), reason), list);
    await load();
  }

  async function usersPage(initial) {
    const input = h("input", { id: "user-id", required: true, maxlength: 128, value: initial || "" });
    const list = h("div");
    let cursor = null;
    const rows = h("tbody");
    const more = h("button", { type: "button", class: "secondary", id: "more", hidden: true, onclick: guard(() => page(false)) }, "Load older events");
    const page = async (fresh) => {
      const q = `/api/v1/analytics/users/${encodeURIComponent(input.value)}/events?limit=25` + (!fresh && cursor ? "&before=" + encodeURIComponent(cursor) : "");
      if (fresh) rows.replaceChildren();
      try {
        const r = await api("GET", q);
        r.events.forEach((e) => rows.append(h("tr", {}, h("td", {}, when(e.timestamp)), h("td", {}, e.eventType), h("td", {}, h("code", {}, e.eventId)), h("td", {}, h("code", {}, JSON.stringify(e.properties || {}))))));
        cursor = r.nextBefore;
        more.hidden = !cursor;
        list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "user-events" }, h("thead", {}, h("tr", {}, ["time", "type", "eventId", "properties"].map((t) => h("th", {}, t)))), rows)), more);
      } catch (e) {
        list.replaceChildren(h("p", { class: "muted" }, e.message));
      }
    };
    const form = h("form", { class: "inline card", onsubmit: guard(async (ev) => { ev.preventDefault(); cursor = null; await page(true); }) },
      h("div", {}, h("label", { for: "user-id" }, "userId"), input), h("button", { type: "submit" }, "Show events"));
    render("User explorer", form, list);
    if (initial) await page(true);
  }

  // Tracking plan: the account's event types with their JSON Schemas of `properties` (a published
  // version never changes: a change is a new version), each type's mode and the account's default,
  // the types seen lately and whether a schema covers them, and a draft schema derived from a
  // sample event to edit before publishing.
  const MODES = {
    enforce: "refused (400), with every violation",
    quarantine: "taken in and held in Quarantine for review, not stored with your events",
    allow: "stored with your events, with the violations attached",
  };
  const modeOptions = (current) => Object.keys(MODES).map((m) => h("option", { value: m, selected: m === current }, m));
  const confirmEnforce = (what) => confirm(`Refuse ${what} that break their type's schema? Senders get a 400 with the violations; nothing of such an event is stored.`);

  // A draft JSON Schema of a sample's properties: each key with the JSON type of its value (objects
  // described the same way, every number as "number"), every key present required. A start, to edit.
  function draftSchema(value, depth = 0) {
    if (value === null) return { type: "null" };
    if (Array.isArray(value)) {
      const kinds = [...new Set(value.map((x) => draftSchema(x, depth + 1).type))];
      return kinds.length === 1 && kinds[0] !== "object" && kinds[0] !== "array" ? { type: "array", items: { type: kinds[0] } } : { type: "array" };
    }
    if (typeof value === "object") {
      const keys = Object.keys(value);
      if (depth >= 8) return { type: "object" };
      return { type: "object", properties: Object.fromEntries(keys.map((k) => [k, draftSchema(value[k], depth + 1)])), required: keys };
    }
    return { type: typeof value };
  }

  async function planPage() {
    let types = [], seen = null, samples = [];
    const known = h("datalist", { id: "known-types" });
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const viewer = h("div", { id: "schema-view-box" });
    const seenBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));

    // ---- the account's default mode
    const accountMode = h("select", { id: "account-mode" });
    const accountForm = h("form", { class: "inline card", id: "account-mode-form", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const m = accountMode.value;
      if (m === "enforce" && !confirmEnforce("events of every type without a mode of its own")) return;
      await api("PUT", "/api/v1/account/schema-mode", { mode: m });
      await loadPlan();
      say(`The account's default mode is now ${m}: an event of a type without a mode of its own that breaks its schema is ${MODES[m]}.`, true);
    }) },
      h("div", {}, h("label", { for: "account-mode" }, "Default mode (types without a mode of their own)"), accountMode),
      h("button", { type: "submit" }, "Set default"),
      h("p", { class: "muted hint" }, "An event that breaks its type's schema is, in enforce mode, ", MODES.enforce, "; in quarantine mode, ",
        MODES.quarantine, "; in allow mode, ", MODES.allow, ". Types without a schema are not judged."));

    // ---- the types in the plan
    const setMode = async (t, m) => {
      if (m === "enforce" && !confirmEnforce(`events of “${t}”`)) return;
      await api("PUT", "/api/v1/schemas/" + encodeURIComponent(t) + "/mode", { mode: m });
      await loadPlan();
      say(`“${t}” is in ${m} mode now: an event of it that breaks its schema is ${MODES[m]}.`, true);
    };
    const showVersion = async (t, v) => {
      const s = await api("GET", "/api/v1/schemas/" + encodeURIComponent(t) + "/" + encodeURIComponent(v));
      viewer.replaceChildren(h("section", { class: "card", id: "schema-view" },
        h("h2", {}, "“", s.eventType, "” version ", String(s.version)),
        h("p", { class: "muted" }, "Published ", when(s.createdAt), s.description ? ["; ", s.description] : null),
        h("pre", { id: "schema-view-json" }, jsonText(s.schema)),
        h("button", { type: "button", class: "secondary", id: "edit-version", onclick: () => {
          eventType.value = s.eventType;
          draft.value = jsonText(s.schema);
          nextVersion();
          draft.focus();
        } }, "Start a new version from this"),
        " ",
        h("button", { type: "button", class: "secondary", onclick: () => viewer.replaceChildren() }, "Close")));
      viewer.scrollIntoView({ block: "nearest" });
    };
    const loadPlan = async () => {
      const [plan, def] = await Promise.all([api("GET", "/api/v1/schemas"), api("GET", "/api/v1/account/schema-mode")]);
      types = plan;
      accountMode.replaceChildren(...modeOptions(def.mode));
      nextVersion();
      renderSeen();
      if (!types.length) {
        list.replaceChildren(h("p", { class: "muted", id: "schemas-empty" }, "No schemas yet: publish one below, or draft one from the events of a type seen lately."));
        return;
      }
      list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "schemas" },
        h("tr", {}, ["Event type", "Mode", "Versions (oldest first)", ""].map((t) => h("th", {}, t))),
        types.map((t) => {
          const pick = h("select", { class: "mode", "aria-label": "Mode of " + t.eventType }, modeOptions(t.mode));
          return h("tr", { "data-event-type": t.eventType },
            h("td", {}, h("code", {}, t.eventType)),
            h("td", { class: "actions" },
              h("form", { class: "inline", onsubmit: guard(async (ev) => { ev.preventDefault(); await setMode(t.eventType, pick.value); }) },
                pick, h("button", { type: "submit", class: "secondary set-mode" }, "Set")),
              h("div", { class: "muted mode-source" }, t.ownMode ? "its own mode" : "the account's default")),
            h("td", { class: "versions" }, t.versions.length
              ? t.versions.flatMap((v) => [h("button", { type: "button", class: "link version", "data-version": v.version,
                title: (v.description ? v.description + " — " : "") + "published " + when(v.createdAt),
                onclick: guard(() => showVersion(t.eventType, v.version)) }, "v" + v.version), " "])
              : h("span", { class: "muted" }, "no schema yet")),
            h("td", { class: "actions" },
              h("a", { href: "#/events/" + encodeURIComponent(t.eventType) }, "Events"), " · ",
              h("a", { href: "#/quarantine/" + encodeURIComponent(t.eventType) }, "Quarantine"),
              t.versions.length ? null : [" ", h("button", { type: "button", class: "secondary draft-from-events", onclick: guard(() => draftFrom(t.eventType)) }, "Draft a schema")]));
        }))));
    };

    // ---- the types seen in the last 24 hours (from the aggregates: quarantined events are not in them)
    const renderSeen = () => {
      const names = new Set([...types.map((t) => t.eventType), ...(seen || []).map((s) => s.eventType)]);
      known.replaceChildren(...[...names].map((n) => h("option", { value: n })));
      if (!seen) return;
      if (!seen.length) { seenBox.replaceChildren(h("p", { class: "muted", id: "seen-empty" }, "No events stored in the last 24 hours.")); return; }
      const planned = new Map(types.map((t) => [t.eventType, t]));
      seenBox.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "seen-types" },
        h("tr", {}, ["Event type", "Events (24 h)", "Share", "Schema", ""].map((t) => h("th", {}, t))),
        seen.map((s) => {
          const t = planned.get(s.eventType);
          const covered = t && t.latestVersion != null;
          return h("tr", { "data-event-type": s.eventType, "data-covered": String(!!covered) },
            h("td", {}, h("code", {}, s.eventType)), h("td", {}, fmt(s.count)), h("td", {}, (100 * s.share).toFixed(1) + "%"),
            h("td", { class: "coverage" }, covered ? ["v" + t.latestVersion + ", ", t.mode + " mode"] : h("strong", {}, "no schema")),
            h("td", {}, h("button", { type: "button", class: "secondary draft-from-events", onclick: guard(() => draftFrom(s.eventType)) },
              covered ? "New version from its events" : "Draft a schema from its events")));
        }))));
    };
    const loadSeen = async () => {
      try {
        seen = (await api("GET", "/api/v1/analytics/summary?range=24h")).eventsByType;
        renderSeen();
      } catch (e) {
        seenBox.replaceChildren(h("p", { class: "muted" }, "The types seen lately cannot be shown: " + e.message));
      }
    };

    // ---- publishing a version, from a sample
    const eventType = h("input", { id: "schema-event-type", required: true, maxlength: 200, list: "known-types", autocomplete: "off", placeholder: "purchase" });
    const nextNote = h("div", { class: "muted hint", id: "schema-next-version" });
    const nextVersion = () => {
      const t = types.find((x) => x.eventType === eventType.value);
      nextNote.textContent = !eventType.value ? "" : t && t.latestVersion != null
        ? `Publishes version ${t.latestVersion + 1}; events are judged by the latest version unless they name one (schemaVersion).`
        : "Publishes version 1 of this type.";
    };
    eventType.addEventListener("input", nextVersion);
    const sample = h("textarea", { id: "sample", rows: 8, spellcheck: "false", "aria-describedby": "sample-note", placeholder: '{"plan": "pro", "seats": 3}' });
    const samplePick = h("select", { id: "sample-event", hidden: true, "aria-label": "The recent event used as the sample" });
    const sampleNote = h("div", { class: "muted hint", id: "sample-note" }, "Paste an event's properties (a JSON object), or use a recent event of the type.");
    const draft = h("textarea", { id: "schema-json", rows: 14, spellcheck: "false", required: true, "aria-describedby": "schema-json-hint" });
    const description = h("input", { id: "schema-description", maxlength: 1000, placeholder: "optional" });
    const useSample = () => {
      const e = samples[Number(samplePick.value) || 0];
      sample.value = jsonText(e.properties || {});
      sampleNote.textContent = `The properties of event ${e.eventId} (${when(e.timestamp)}): derive the draft from them, or edit them first.`;
    };
    samplePick.addEventListener("change", useSample);
    const loadSamples = async () => {
      const t = eventType.value;
      if (!t) { eventType.focus(); throw new Error("Enter the event type first."); }
      samples = (await api("GET", query("/api/v1/events", { eventType: t, limit: 10 }))).events;
      samplePick.hidden = !samples.length;
      if (!samples.length) { sampleNote.textContent = `No stored events of “${t}” yet: paste a sample instead.`; return; }
      samplePick.replaceChildren(...samples.map((e, i) => h("option", { value: String(i) }, when(e.timestamp) + " · " + e.eventId)));
      useSample();
    };
    const draftFrom = async (t) => {
      eventType.value = t;
      nextVersion();
      form.scrollIntoView({ block: "start" });
      await loadSamples();
      sample.focus();
    };
    const derive = guard(async () => {
      const v = parseJson(sample.value, "The sample");
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("The sample must be a JSON object: an event's properties.");
      draft.value = jsonText(draftSchema(v));
      draft.focus();
    });
    const form = h("form", { class: "card", id: "new-schema", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const schema = parseJson(draft.value, "The schema");
      const s = await api("POST", "/api/v1/schemas", { eventType: eventType.value, schema, description: description.value.trim() || undefined });
      [sample, draft, description].forEach((i) => { i.value = ""; });
      samplePick.hidden = true;
      sampleNote.textContent = "";
      await loadPlan();
      const t = types.find((x) => x.eventType === s.eventType);
      say(`Published “${s.eventType}” version ${s.version}.` + (t ? ` Its events are judged by it within a second (${t.mode} mode).` : ""), true);
    }) },
      h("div", { class: "inline" },
        h("div", {}, h("label", { for: "schema-event-type" }, "Event type"), eventType, nextNote),
        h("button", { type: "button", class: "secondary", id: "load-samples", onclick: guard(loadSamples) }, "Use a recent event of this type"),
        samplePick),
      h("div", { class: "split" },
        h("div", {}, h("label", { for: "sample" }, "Sample event properties"), sample, sampleNote,
          h("button", { type: "button", class: "secondary", id: "derive", onclick: derive }, "Derive a draft schema")),
        h("div", {}, h("label", { for: "schema-json" }, "Schema (JSON Schema, draft 2020-12)"), draft,
          h("div", { class: "muted hint", id: "schema-json-hint" }, "The draft requires every key of the sample with the type it had; loosen it where your events vary (a type list such as [\"number\", \"null\"], fewer required keys). Published versions never change."))),
      h("div", { class: "inline" },
        h("div", {}, h("label", { for: "schema-description" }, "Description"), description),
        h("button", { type: "submit", id: "publish-schema" }, "Publish version")));

    render("Tracking plan",
      h("p", {}, "Each event type can have a JSON Schema of its properties; its mode says what happens to an event that breaks it. ",
        h("a", { href: "#/quarantine" }, "Quarantine"), " holds the events a type in quarantine mode kept back."),
      accountForm,
      h("h2", {}, "Event types in the plan"), list, viewer,
      h("h2", {}, "Seen in the last 24 hours ", h("button", { type: "button", class: "link", id: "seen-refresh", onclick: guard(loadSeen) }, "refresh")),
      seenBox,
      h("h2", {}, "Publish a schema version"), form, known);
    await Promise.all([guard(loadPlan)(), loadSeen()]);
  }

  // Quarantine: the events a type in quarantine mode held back, with their violations; a replay
  // judges them again by the current (latest) schema: those that pass go to your events.
  async function quarantinePage(initial) {
    const eventType = h("input", { id: "q-event-type", maxlength: 200, value: initial || "", placeholder: "every type" });
    const from = h("input", { id: "q-from", type: "datetime-local", step: 1 });
    const to = h("input", { id: "q-to", type: "datetime-local", step: 1 });
    const limit = h("select", { id: "q-limit" }, ["25", "50", "100"].map((n) => h("option", { value: n, selected: n === "50" }, n)));
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const result = h("div", { id: "replay-result-box" });
    const selected = new Set();
    let applied = {};
    const read = () => ({ eventType: eventType.value || undefined, from: instant(from, "From"), to: instant(to, "To"), limit: limit.value });
    const describe = (f) => (f.eventType || f.from || f.to
      ? "the quarantined events" + (f.eventType ? ` of “${f.eventType}”` : "") + (f.from ? " from " + when(f.from) : "") + (f.to ? " until " + when(f.to) : "")
      : "every quarantined event");
    const showResult = (r) => result.replaceChildren(h("div", { class: "card", role: "status", id: "replay-result" },
      h("strong", {}, fmt(r.replayed) + " replayed"), ": they pass the current schema and are on their way to your events. ",
      h("strong", {}, fmt(r.stillQuarantined) + " still quarantined"), ": they break it still and stay here, with their new violations.",
      r.more ? h("p", {}, "More events matched than one replay takes: replay again for the rest.") : null));
    const replaySelected = h("button", { type: "button", id: "replay-selected", disabled: true, onclick: guard(async () => {
      const r = await api("POST", "/api/v1/quarantine/replay", { ids: [...selected] });
      showResult(r);
      await pages.first();
    }) }, "Replay selected");
    const replayFilter = h("button", { type: "button", class: "secondary", id: "replay-filter", onclick: guard(async () => {
      if (!confirm(`Judge ${describe(applied)} again by the current schemas? Those that pass now go to your events; the rest stay here with their new violations.`)) return;
      const r = await api("POST", "/api/v1/quarantine/replay", { eventType: applied.eventType, from: applied.from, to: applied.to });
      showResult(r);
      await pages.first();
    }) }, "Replay all matching the filter");
    const pages = pager("q", async (before) => {
      const r = await api("GET", query("/api/v1/quarantine", { ...applied, before }));
      selected.clear();
      replaySelected.disabled = true;
      if (!r.events.length) {
        list.replaceChildren(h("p", { class: "muted", id: "quarantine-empty" }, before ? "No older quarantined events." :
          "No quarantined events match. An event of a type in quarantine mode that breaks its schema is held here."));
        return r;
      }
      const boxes = r.events.map((e) => h("input", { type: "checkbox", class: "pick", "aria-label": "select " + e.eventId, onchange: (ev) => {
        if (ev.target.checked) selected.add(e.eventId); else selected.delete(e.eventId);
        replaySelected.disabled = !selected.size;
      } }));
      const all = h("input", { type: "checkbox", "aria-label": "select every event on this page", onchange: (ev) => boxes.forEach((b) => {
        b.checked = ev.target.checked;
        b.dispatchEvent(new Event("change"));
      }) });
      list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "quarantine" },
        h("tr", {}, h("th", {}, all), ["time", "type", "user", "eventId", "schema", "violations", "properties", "quarantined"].map((t) => h("th", {}, t))),
        r.events.map((e, i) => h("tr", { "data-event-id": e.eventId },
          h("td", {}, boxes[i]), h("td", {}, when(e.timestamp)), h("td", {}, h("code", {}, e.eventType)), h("td", {}, e.userId),
          h("td", {}, h("code", {}, e.eventId)), h("td", {}, e.schemaVersion != null ? "v" + e.schemaVersion : "—"),
          h("td", { class: "violations-cell" }, violationList(e.schemaViolations)),
          h("td", {}, h("code", { class: "props" }, short(JSON.stringify(e.properties || {})))),
          h("td", {}, when(e.quarantinedAt)))))));
      return r;
    });
    const form = h("form", { class: "inline card", id: "quarantine-filter", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      applied = read();
      result.replaceChildren();
      await pages.first();
    }) },
      h("div", {}, h("label", { for: "q-event-type" }, "Event type"), eventType),
      h("div", {}, h("label", { for: "q-from" }, "From"), from),
      h("div", {}, h("label", { for: "q-to" }, "Until"), to),
      h("div", {}, h("label", { for: "q-limit" }, "Per page"), limit),
      h("button", { type: "submit" }, "Show"));
    render("Quarantine",
      h("p", {}, "Events of a type in quarantine mode that broke its schema, newest first. Publish a version that takes them in the ",
        h("a", { href: "#/plan" }, "tracking plan"), ", then replay them: each is judged again by the latest version."),
      form, h("div", { class: "inline replay" }, replaySelected, replayFilter), result, list, pages.controls);
    await guard(async () => { applied = read(); await pages.first(); })();
  }

  // Events: the account's stored events, newest first, by type, user, session and time; one shown
  // whole in the detail panel.
  async function eventsPage(initial) {
    const text = (id, label, max, value) => [h("input", { id, maxlength: max, value: value || "" }), label];
    const [eventType, userId, sessionId] = [text("e-event-type", "Event type", 200, initial), text("e-user-id", "userId", 128), text("e-session-id", "sessionId", 128)];
    const from = h("input", { id: "e-from", type: "datetime-local", step: 1 });
    const to = h("input", { id: "e-to", type: "datetime-local", step: 1 });
    const limit = h("input", { id: "e-limit", type: "number", min: 1, max: 1000, value: 50 });
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const detail = h("div", { id: "event-detail-box" });
    let applied = {};
    const read = () => ({ eventType: eventType[0].value, userId: userId[0].value, sessionId: sessionId[0].value,
      from: instant(from, "From"), to: instant(to, "Until"), limit: limit.value });
    const close = () => {
      detail.replaceChildren();
      list.querySelectorAll("tr[aria-selected]").forEach((r) => r.removeAttribute("aria-selected"));
    };
    // GET /api/v1/events/{eventId} takes the id as one raw path segment: an id with “/”, “+” or “%”,
    // a dot segment, or “batch” (the batch intake's path) cannot be asked for; the listing's copy is
    // the same event.
    const fetchable = (id) => id !== "batch" && id !== "." && id !== ".." && !/[/+%]/.test(id);
    const open = guard(async (e, row) => {
      const shown = fetchable(e.eventId) ? await api("GET", "/api/v1/events/" + encodeURIComponent(e.eventId)) : e;
      list.querySelectorAll("tr[aria-selected]").forEach((r) => r.removeAttribute("aria-selected"));
      row.setAttribute("aria-selected", "true");
      detail.replaceChildren(h("section", { class: "card", id: "event-detail", "aria-label": "The event" },
        h("h2", {}, "Event ", h("code", {}, shown.eventId)),
        shown === e ? h("p", { class: "muted" }, "As the listing gave it: this id cannot be asked for on its own.") : null,
        h("pre", { id: "event-json" }, jsonText(shown)),
        h("button", { type: "button", class: "secondary", id: "event-detail-close", onclick: close }, "Close")));
      detail.scrollIntoView({ block: "nearest" });
    });
    const pages = pager("e", async (before) => {
      const r = await api("GET", query("/api/v1/events", { ...applied, before }));
      close();
      if (!r.events.length) {
        list.replaceChildren(h("p", { class: "muted", id: "events-empty" }, before ? "No older events." : "No stored events match."));
        return r;
      }
      list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "events" },
        h("tr", {}, ["time", "type", "user", "session", "eventId", "properties", "schema"].map((t) => h("th", {}, t))),
        r.events.map((e) => h("tr", { class: "pick", "data-event-id": e.eventId, onclick: (ev) => open(e, ev.currentTarget) },
          h("td", {}, when(e.timestamp)), h("td", {}, h("code", {}, e.eventType)), h("td", {}, e.userId), h("td", {}, e.sessionId || "—"),
          h("td", {}, h("button", { type: "button", class: "link", title: "Show the whole event" }, e.eventId)),
          h("td", {}, h("code", { class: "props" }, short(JSON.stringify(e.properties || {})))),
          h("td", {}, e.schemaVersion != null ? ["v" + e.schemaVersion, e.schemaViolations ? violationList(e.schemaViolations) : null] : "—"))))));
      return r;
    });
    const field = ([input, label]) => h("div", {}, h("label", { for: input.id }, label), input);
    const form = h("form", { class: "inline card", id: "events-filter", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      applied = read();
      await pages.first();
    }) },
      field(eventType), field(userId), field(sessionId), field([from, "From"]), field([to, "Until"]), field([limit, "Per page"]),
      h("button", { type: "submit" }, "Show"));
    render("Events", h("p", { class: "muted" }, "Your stored events, newest first. Pick one to see all of it; quarantined events are in ",
      h("a", { href: "#/quarantine" }, "Quarantine"), "."), form, detail, list, pages.controls);
    await guard(async () => { applied = read(); await pages.first(); })();
  }

  // ---- rules, anomalies, live ------------------------------------------------------------------
  // Rules turn the account's events into anomalies: a count in a sliding window (threshold) or a
  // spike or drop against a baseline (z-score). Workers judge them once a batch is stored; the
  // anomalies are listed newest first and pushed to the Live page over a WebSocket.
  const SEVERITIES = ["critical", "warning", "info"];
  const OPERATORS = [">", ">=", "<", "<=", "==", "!="];
  const DIRECTIONS = { up: "a spike", down: "a drop", both: "a spike or a drop" };
  // A severity as a badge; its colour comes from the class, for the three severities there are.
  const severityBadge = (s) => h("span", { class: "sev sev-" + (SEVERITIES.includes(s) ? s : "other") }, s);
  const secs = (n) => (n == null ? "—" : n && n % 3600 === 0 ? fmt(n / 3600) + " h" : n % 60 === 0 && n >= 120 ? fmt(n / 60) + " min" : fmt(n) + " s");
  // A condition in words: “count of “checkout” events where plan = "pro" in 1 min >= 100”.
  function conditionText(c) {
    if (!c) return "—";
    const what = c.eventType ? `“${c.eventType}” events` : "events of every type";
    const where = Object.entries(c.where || {}).map(([k, v]) => `${k} = ${JSON.stringify(v)}`);
    const filter = where.length ? " where " + where.join(" and ") : "";
    if (c.type === "threshold") return `count of ${what}${filter} in ${secs(c.windowSeconds)} ${c.operator} ${fmt(c.value)}`;
    if (c.type === "zscore") {
      return `${what}${filter} per ${secs(c.bucketSeconds)}: ${DIRECTIONS[c.direction] || c.direction} of ${fmt(c.threshold)} σ or more ` +
        `against the ${fmt(c.baselineBuckets)} buckets before`;
    }
    return JSON.stringify(c);
  }
  // One anomaly of a timeline (the Anomalies and Live pages): severity, rule, message and figures.
  function anomalyItem(a) {
    const figures = ["observed " + fmt(a.observed), (a.kind === "zscore" ? "threshold " + fmt(a.threshold) + " σ" : "threshold " + fmt(a.threshold))];
    if (a.zscore != null) figures.push("z = " + fmt(a.zscore), "mean " + fmt(a.mean), "σ " + fmt(a.stddev));
    if (a.window) figures.push("window " + when(a.window.from) + " – " + when(a.window.to));
    return h("li", { class: "anomaly sev-" + (SEVERITIES.includes(a.severity) ? a.severity : "other"), "data-anomaly-id": a.id, "data-rule-id": a.ruleId, "data-severity": a.severity },
      h("div", { class: "anomaly-head" }, severityBadge(a.severity), " ", h("strong", { class: "rule-name" }, a.ruleName), " ",
        h("time", { class: "muted", datetime: a.detectedAt }, when(a.detectedAt))),
      h("div", { class: "anomaly-message" }, a.message),
      h("div", { class: "muted anomaly-figures" }, figures.join(" · ")),
      a.sampleEventIds && a.sampleEventIds.length
        ? h("div", { class: "muted anomaly-samples" }, "sample events: ", a.sampleEventIds.flatMap((id, i) => [i ? ", " : null, h("code", {}, id)]))
        : null);
  }

  async function rulesPage() {
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const load = async () => {
      const { rules } = await api("GET", "/api/v1/rules");
      if (!rules.length) {
        list.replaceChildren(h("p", { class: "muted", id: "rules-empty" }, "No rules yet: create one below."));
        return;
      }
      list.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "rules" },
        h("tr", {}, ["Name", "Condition", "Severity", "Cooldown", "Enabled", ""].map((t) => h("th", {}, t))),
        rules.map((r) => h("tr", { "data-rule-id": r.id, "data-enabled": String(r.enabled) },
          h("td", {}, h("div", { class: "rule-name" }, r.name), h("div", { class: "muted" }, "v" + r.version + " · updated " + when(r.updatedAt))),
          h("td", { class: "condition" }, conditionText(r.condition)),
          h("td", { class: "severity" }, severityBadge(r.severity)),
          h("td", { class: "cooldown" }, secs(r.cooldownSeconds)),
          h("td", { class: "enabled" }, h("label", { class: "toggle" },
            h("input", { type: "checkbox", class: "enabled", checked: !!r.enabled, "aria-label": "Enabled: " + r.name, onchange: guard(async (ev) => {
              const on = ev.target.checked;
              ev.target.disabled = true;
              try {
                await api("PATCH", "/api/v1/rules/" + encodeURIComponent(r.id), { enabled: on });
                say(`“${r.name}” is ${on ? "enabled: workers judge it again" : "disabled: workers stop judging it"} within a second.`, true);
              } finally {
                // The list as stored, also when the change was refused (a 409 when it changed meanwhile).
                await load();
              }
            }) }),
            h("span", { class: "state" }, r.enabled ? "on" : "off"))),
          h("td", { class: "actions" },
            h("a", { href: "#/anomalies/" + encodeURIComponent(r.id) }, "Anomalies"), " ",
            h("button", { type: "button", class: "danger delete", onclick: guard(async () => {
              if (!confirm(`Delete the rule “${r.name}”? Workers stop judging it within a second; the anomalies it raised stay listed.`)) return;
              await api("DELETE", "/api/v1/rules/" + encodeURIComponent(r.id));
              await load();
              say(`Rule “${r.name}” deleted.`, true);
            }) }, "Delete")))))));
    };

    // ---- a new rule
    const num = (id, attrs) => h("input", { id, type: "number", required: true, ...attrs });
    const options = (values, current, label) => values.map((v) => h("option", { value: v, selected: v === current }, label ? label(v) : v));
    const name = h("input", { id: "rule-name", required: true, maxlength: 100, placeholder: "checkout spike" });
    const severity = h("select", { id: "rule-severity" }, options(SEVERITIES, "warning"));
    const kind = h("select", { id: "rule-type" },
      h("option", { value: "threshold" }, "threshold: a count in a window"),
      h("option", { value: "zscore" }, "z-score: a spike or drop against a baseline"));
    const eventType = h("input", { id: "rule-event-type", maxlength: 200, placeholder: "every type", "aria-describedby": "rule-event-type-hint" });
    const windowSeconds = num("rule-window", { min: 1, max: 86400, value: 60 });
    const operator = h("select", { id: "rule-operator" }, options(OPERATORS, ">="));
    const value = num("rule-value", { min: 0, max: 1000000000, step: "any", value: 100 });
    const bucketSeconds = num("rule-bucket", { min: 1, max: 86400, value: 60 });
    const baselineBuckets = num("rule-baseline", { min: 2, max: 100, value: 10 });
    const zThreshold = num("rule-threshold", { min: 0, max: 100, step: "any", value: 3, "aria-describedby": "rule-threshold-hint" });
    const direction = h("select", { id: "rule-direction" }, options(Object.keys(DIRECTIONS), "up", (d) => d + " (" + DIRECTIONS[d] + ")"));
    const cooldown = num("rule-cooldown", { min: 0, max: 604800, value: 300, "aria-describedby": "rule-cooldown-hint" });
    const enabled = h("input", { id: "rule-enabled", type: "checkbox", checked: true });
    const field = (label, input, hint, id) => h("div", {}, h("label", { for: input.id }, label), input, hint ? h("div", { class: "muted hint", id }, hint) : null);
    // The fields of the other condition type are hidden and disabled (so never checked by the browser).
    const thresholdFields = h("fieldset", { id: "threshold-fields" }, h("legend", {}, "Threshold"),
      h("div", { class: "inline" }, field("Window (seconds, 1–86,400)", windowSeconds), field("Operator", operator), field("Value (0–10⁹)", value)),
      h("p", { class: "muted hint" }, "Fires when the count of matching events in the sliding window starts to satisfy the operator; again only once it stopped and the cooldown passed."));
    const zFields = h("fieldset", { id: "zscore-fields" }, h("legend", {}, "Z-score"),
      h("div", { class: "inline" }, field("Bucket (seconds, 1–86,400)", bucketSeconds), field("Baseline buckets (2–100)", baselineBuckets),
        field("Threshold (σ, above 0, at most 100)", zThreshold), field("Direction", direction)),
      h("p", { class: "muted hint", id: "rule-threshold-hint" }, "A bucket's count is judged against the mean and standard deviation of the buckets before it. A new rule first sees a whole baseline."));
    const onKind = () => {
      thresholdFields.hidden = thresholdFields.disabled = kind.value !== "threshold";
      zFields.hidden = zFields.disabled = kind.value !== "zscore";
    };
    kind.addEventListener("change", onKind);
    onKind();
    const read = () => {
      const n = (input) => Number(input.value);
      const condition = kind.value === "threshold"
        ? { type: "threshold", eventType: eventType.value || undefined, windowSeconds: n(windowSeconds), operator: operator.value, value: n(value) }
        : { type: "zscore", eventType: eventType.value || undefined, bucketSeconds: n(bucketSeconds), baselineBuckets: n(baselineBuckets),
          threshold: n(zThreshold), direction: direction.value };
      return { name: name.value, enabled: enabled.checked, severity: severity.value, cooldownSeconds: n(cooldown), condition };
    };
    const form = h("form", { class: "card", id: "new-rule", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const r = await api("POST", "/api/v1/rules", read());
      name.value = "";
      await load();
      say(`Rule “${r.name}” created` + (r.enabled ? ": workers judge it within a second." : ", disabled."), true);
    }) },
      h("div", { class: "inline" },
        field("Name", name), field("Severity", severity), field("Condition", kind),
        field("Event type (optional)", eventType, "matched verbatim; every type when empty", "rule-event-type-hint")),
      thresholdFields, zFields,
      h("div", { class: "inline" },
        field("Cooldown (seconds, 0–604,800)", cooldown, "how long it stays quiet after it fired", "rule-cooldown-hint"),
        h("div", {}, h("label", { class: "check" }, enabled, " Enabled")),
        h("button", { type: "submit", id: "create-rule" }, "Create rule")));

    render("Rules",
      h("p", {}, "A rule raises an anomaly when the account's events meet its condition; workers judge it as events are stored. Raised anomalies are in ",
        h("a", { href: "#/anomalies" }, "Anomalies"), " and arrive on the ", h("a", { href: "#/live" }, "Live"), " page as they happen."),
      list, h("h2", {}, "Create a rule"), form);
    await guard(load)();
  }

  // Anomalies: what the rules raised, newest first, by severity (and rule, from the Rules page).
  async function anomaliesPage(ruleId) {
    const severity = h("select", { id: "a-severity" }, ["", ...SEVERITIES].map((s) => h("option", { value: s }, s || "every severity")));
    const limit = h("input", { id: "a-limit", type: "number", min: 1, max: 500, value: 50 });
    const items = h("ol", { class: "timeline", id: "anomalies" });
    const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    let cursor, applied = {}, asked = 0;
    const more = h("button", { type: "button", class: "secondary", id: "anomalies-more", hidden: true, onclick: guard(() => page(false)) }, "Load older anomalies");
    const read = () => ({ severity: severity.value, ruleId, limit: limit.value });
    const page = async (fresh) => {
      // Only the answer to the latest question is shown (a filter changed while one was on its way).
      const mine = ++asked;
      const r = await api("GET", query("/api/v1/anomalies", { ...applied, before: fresh ? undefined : cursor }));
      if (mine !== asked) return;
      if (fresh) items.replaceChildren();
      r.anomalies.forEach((a) => items.append(anomalyItem(a)));
      cursor = r.nextBefore;
      more.hidden = !cursor;
      list.replaceChildren(items.children.length ? items : h("p", { class: "muted", id: "anomalies-empty" },
        applied.severity || ruleId ? "No anomalies match." : "No anomalies yet: a rule raises one when its condition starts to hold."));
    };
    const form = h("form", { class: "inline card", id: "anomalies-filter", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      applied = read();
      await page(true);
    }) },
      h("div", {}, h("label", { for: "a-severity" }, "Severity"), severity),
      h("div", {}, h("label", { for: "a-limit" }, "Per page"), limit),
      h("button", { type: "submit" }, "Show"));
    severity.addEventListener("change", () => form.requestSubmit());
    render("Anomalies",
      h("p", { class: "muted" }, "What your ", h("a", { href: "#/rules" }, "rules"), " raised, newest first. The ",
        h("a", { href: "#/live" }, "Live"), " page shows them as they happen."),
      ...(ruleId ? [h("p", { id: "anomalies-rule" }, "Only the anomalies of one rule. ", h("a", { href: "#/anomalies" }, "Show every rule's"))] : []),
      form, list, more);
    await guard(async () => { applied = read(); await page(true); })();
  }

  // Live: a WebSocket to /api/v1/live (the token in its subprotocols, never in the URL) with the
  // anomalies as they are raised and, when asked, a sampled tail of the stored events. It
  // reconnects by itself with a growing delay; leaving the page closes it. Nothing is polled.
  async function livePage() {
    const MAX_SHOWN = 200;
    let ws = null, left = false, attempt = 0, retry = null, countdown = null, downSince = null, skipped = 0;
    const stateText = h("span", { id: "live-state-text" }, "Connecting…");
    const reconnectNow = h("button", { type: "button", class: "secondary", id: "live-reconnect", hidden: true, onclick: () => { stop(); connect(); } }, "Reconnect now");
    const state = h("div", { class: "card conn", id: "live-state", role: "status", "data-state": "connecting" },
      h("span", { class: "dot", "aria-hidden": "true" }), " ", stateText, " ", reconnectNow);
    const setState = (s, text) => {
      state.dataset.state = s;
      stateText.textContent = text;
      reconnectNow.hidden = s !== "disconnected";
    };
    const feed = h("ol", { class: "timeline", id: "live-anomalies", "aria-live": "polite", "aria-relevant": "additions" });
    const feedEmpty = h("p", { class: "muted", id: "live-anomalies-empty" }, "No anomaly since this page was opened. Earlier ones are in ",
      h("a", { href: "#/anomalies" }, "Anomalies"), ".");
    const shown = new Set();
    const addAnomaly = (a) => {
      if (!a || shown.has(a.id)) return;
      shown.add(a.id);
      const t = Date.parse(a.detectedAt) || 0;
      const li = anomalyItem(a);
      li.dataset.t = String(t);
      // Newest first: a live one goes on top; one fetched after a reconnect, in its place.
      feed.insertBefore(li, [...feed.children].find((c) => Number(c.dataset.t) < t) || null);
      while (feed.children.length > MAX_SHOWN) {
        shown.delete(feed.lastElementChild.dataset.anomalyId);
        feed.lastElementChild.remove();
      }
      feedEmpty.hidden = true;
    };

    // ---- the event tail
    const tailOn = h("input", { type: "checkbox", id: "live-tail" });
    const tailType = h("input", { id: "live-tail-type", maxlength: 200, placeholder: "every type" });
    const tailState = h("span", { class: "muted", id: "live-tail-state" }, "Not tailing.");
    const skippedOut = h("span", { id: "live-skipped" }, "0");
    const tailRows = h("tbody");
    const tailBox = h("div", { id: "live-tail-box", hidden: true },
      h("p", { class: "muted" }, "Sampled: at most 20 events a second are shown; ", h("strong", {}, skippedOut), " more were skipped."),
      h("div", { class: "table-wrap" }, h("table", { id: "live-events" },
        h("thead", {}, h("tr", {}, ["time", "type", "user", "eventId"].map((t) => h("th", {}, t)))), tailRows)));
    const open = () => ws && ws.readyState === WebSocket.OPEN;
    const subscribe = () => {
      if (!open()) return;
      const m = { subscribe: "events" };
      if (tailType.value) m.eventType = tailType.value;
      tailRows.replaceChildren();
      skipped = 0;
      skippedOut.textContent = "0";
      tailState.textContent = "Subscribing…";
      ws.send(JSON.stringify(m));
    };
    const unsubscribe = () => {
      tailState.textContent = "Not tailing.";
      if (open()) ws.send(JSON.stringify({ unsubscribe: "events" }));
    };
    tailOn.addEventListener("change", () => {
      tailBox.hidden = !tailOn.checked;
      if (tailOn.checked) subscribe(); else unsubscribe();
    });
    const tailForm = h("form", { class: "inline card", id: "live-tail-form", onsubmit: (ev) => {
      ev.preventDefault();
      if (!tailOn.checked) { tailOn.checked = true; tailBox.hidden = false; }
      subscribe();
    } },
      h("div", {}, h("label", { class: "check" }, tailOn, " Show the event tail")),
      h("div", {}, h("label", { for: "live-tail-type" }, "Event type"), tailType),
      h("button", { type: "submit", class: "secondary" }, "Apply"),
      tailState);
    const addEvent = (e) => {
      if (!e) return;
      tailRows.prepend(h("tr", { "data-event-id": e.eventId },
        h("td", {}, when(e.timestamp)), h("td", {}, h("code", {}, e.eventType)), h("td", {}, e.userId), h("td", {}, h("code", {}, e.eventId))));
      while (tailRows.children.length > MAX_SHOWN) tailRows.lastElementChild.remove();
    };

    // ---- the socket
    const handle = (data) => {
      let m;
      try { m = JSON.parse(data); } catch (e) { return; }
      if (!m || typeof m !== "object") return;
      if (m.type === "anomaly") addAnomaly(m.anomaly);
      else if (m.type === "event") addEvent(m.event);
      else if (m.type === "skipped") { skipped += Number(m.count) || 0; skippedOut.textContent = fmt(skipped); }
      else if (m.type === "subscribed") tailState.textContent = "Tailing " + (m.eventType ? `“${m.eventType}” events.` : "events of every type.");
      else if (m.type === "unsubscribed") tailState.textContent = "Not tailing.";
      else if (m.type === "error") say("The live feed: " + m.message);
    };
    // Anomalies raised while the socket was down (after a reconnect): asked for once, not polled.
    const catchUp = async (since) => {
      try {
        const r = await api("GET", query("/api/v1/anomalies", { since: new Date(since.getTime() - 60_000).toISOString(), limit: 100 }));
        if (!left) r.anomalies.forEach(addAnomaly);
      } catch (e) { say("Anomalies raised while disconnected cannot be shown: " + e.message); }
    };
    const stop = () => {
      clearTimeout(retry);
      clearInterval(countdown);
      retry = countdown = null;
    };
    const schedule = (why) => {
      // 1, 2, 4, … 30 s, each ±25 %, so many dashboards do not come back at the same moment.
      const delay = Math.min(30, 2 ** Math.min(attempt, 5)) * (0.75 + Math.random() * 0.5);
      attempt++;
      let secsLeft = Math.ceil(delay);
      const show = () => setState("disconnected", `Disconnected${why ? " (" + why + ")" : ""}: reconnecting in ${secsLeft} s.`);
      show();
      countdown = setInterval(() => { secsLeft = Math.max(0, secsLeft - 1); show(); }, 1000);
      retry = setTimeout(() => { stop(); connect(); }, delay * 1000);
    };
    function connect() {
      if (left) return;
      const token = sessionStorage.getItem(TOKEN);
      if (!token) { location.hash = "#/login"; return; }
      setState("connecting", attempt ? "Reconnecting…" : "Connecting…");
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/live";
      let sock, opened = false;
      try {
        sock = new WebSocket(url, ["sluice.live", "bearer." + token]);
      } catch (e) {
        schedule(e.message);
        return;
      }
      ws = sock;
      sock.addEventListener("open", () => {
        if (sock !== ws) return;
        opened = true;
        attempt = 0;
        setState("connected", "Connected: anomalies appear here as they are raised.");
        if (tailOn.checked) subscribe();
        if (downSince) { const since = downSince; downSince = null; catchUp(since); }
      });
      sock.addEventListener("message", (ev) => { if (sock === ws) handle(ev.data); });
      sock.addEventListener("close", (ev) => {
        if (sock !== ws) return;
        ws = null;
        if (left) return;
        if (tailOn.checked) tailState.textContent = "Tailing again once reconnected.";
        if (opened && !downSince) downSince = new Date();
        // A handshake refused from the start may be an ended session: asking the api shows the
        // login page then (a 401); any other answer leaves the reconnects to go on.
        if (!opened) api("GET", "/api/v1/auth/me").catch(() => {});
        schedule(ev.reason || (opened ? "" : "cannot connect"));
      });
    }
    cleanups.push(() => {
      left = true;
      stop();
      if (ws) { const s = ws; ws = null; s.close(1000, "left the page"); }
    });

    render("Live",
      h("p", { class: "muted" }, "Anomalies of your ", h("a", { href: "#/rules" }, "rules"), " as they are raised, and on request the events as they are stored."),
      state,
      h("h2", {}, "Anomalies"), feedEmpty, feed,
      h("h2", {}, "Event tail"), tailForm, tailBox);
    connect();
  }

  // ---- privacy ---------------------------------------------------------------------------------
  // Privacy (docs/PRIVACY.md): how long each store keeps the account's data (retention), the
  // regulations that suppress, delete or unsuppress users by userId (workers carry them out in the
  // background), and the users suppressed now. While a regulation shown is pending or running it
  // is asked for again every 2 s; leaving the page stops that.
  const RETENTION = [
    ["eventsDays", "ret-events", "Events"],
    ["deadLettersDays", "ret-dead-letters", "Dead letters"],
    ["quarantineDays", "ret-quarantine", "Quarantine"],
    ["anomaliesDays", "ret-anomalies", "Anomalies"],
  ];
  const REGULATIONS = {
    suppress: "Their new events are dropped from now on; what is stored of them stays.",
    suppress_with_delete: "Their new events are dropped from now on, and what is stored of them is deleted.",
    delete_only: "What is stored of them is deleted; their new events are still taken in.",
    unsuppress: "Their new events are taken in again (it ends a suppression).",
  };
  const DELETES = ["suppress_with_delete", "delete_only"];
  const STATUSES = ["pending", "running", "finished", "failed"];
  const statusBadge = (s) => h("span", { class: "reg-status reg-status-" + (STATUSES.includes(s) ? s : "other") }, s);
  const usersText = (n) => (n === 1 ? "1 user" : fmt(n) + " users");

  async function privacyPage() {
    let left = false;
    const field = (label, input, hint, id) => h("div", {}, h("label", { for: input.id }, label), input, hint ? h("div", { class: "muted hint", id }, hint) : null);

    // ---- retention
    const days = Object.fromEntries(RETENTION.map(([k, id]) => [k, h("input", { id, type: "number", min: 1, max: 3650, step: 1, required: true })]));
    const retentionState = h("p", { class: "muted", id: "retention-state", role: "status" }, "Loading…");
    const daysText = (r) => RETENTION.map(([k, , label]) => label.toLowerCase() + " " + fmt(r[k]) + " days").join(", ");
    const showRetention = (r) => {
      RETENTION.forEach(([k]) => { days[k].value = r[k] != null ? String(r[k]) : ""; });
      retentionState.textContent = "In effect: " + daysText(r) + ".";
    };
    const loadRetention = async () => {
      try {
        const r = await api("GET", "/api/v1/account/retention");
        if (!left) showRetention(r);
      } catch (e) {
        retentionState.textContent = "The retention in effect cannot be shown: " + e.message;
      }
    };
    const retentionForm = h("form", { class: "card", id: "retention-form", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const r = await api("PUT", "/api/v1/account/retention", Object.fromEntries(RETENTION.map(([k]) => [k, Number(days[k].value)])));
      showRetention(r);
      say("Retention saved: " + daysText(r) + ".", true);
    }) },
      h("div", { class: "inline" }, RETENTION.map(([k, , label]) => field(label + " (days)", days[k])),
        h("button", { type: "submit", id: "save-retention" }, "Save")),
      h("p", { class: "muted hint" }, "How many days each store keeps the account's data (1–3,650); older data is deleted."),
      retentionState);

    // ---- regulations
    const type = h("select", { id: "regulation-type", "aria-describedby": "regulation-type-hint" }, Object.keys(REGULATIONS).map((t) => h("option", { value: t }, t)));
    const typeHint = h("div", { class: "muted hint", id: "regulation-type-hint" });
    const onType = () => { typeHint.textContent = REGULATIONS[type.value]; };
    type.addEventListener("change", onType);
    onType();
    const userIds = h("textarea", { id: "regulation-user-ids", rows: 5, required: true, spellcheck: "false", placeholder: "user-1\nuser-2",
      "aria-describedby": "regulation-user-ids-hint" });
    // One userId a line, or separated by commas; blanks dropped, each once.
    const parseIds = (text) => [...new Set(text.split(/[\r\n,]+/).map((s) => s.trim()).filter(Boolean))];
    const regStatus = h("select", { id: "reg-status" }, ["", ...STATUSES].map((s) => h("option", { value: s }, s || "every status")));
    const regUser = h("input", { id: "reg-user-id", maxlength: 128, placeholder: "every user" });
    const regList = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    let regs = [], regCursor, regApplied = {}, regAsked = 0, poll = null, polling = false;
    const regMore = h("button", { type: "button", class: "secondary", id: "regulations-more", hidden: true, onclick: guard(() => loadRegs(false)) }, "Load older regulations");
    const regRow = (r) => {
      const ids = r.userIds || [];
      const counts = Object.entries(r.counts || {});
      return h("tr", { "data-regulation-id": r.id, "data-status": r.status },
        h("td", { class: "type" }, h("code", {}, r.type)),
        h("td", { class: "users" }, usersText(ids.length), ids.length ? ": " : null,
          ids.slice(0, 3).flatMap((id, i) => [i ? ", " : null, h("code", {}, id)]), ids.length > 3 ? ` and ${fmt(ids.length - 3)} more` : null),
        h("td", { class: "status" }, statusBadge(r.status), r.error ? h("div", { class: "reg-error" }, r.error) : null),
        h("td", { class: "created" }, when(r.createdAt)),
        h("td", { class: "finished" }, r.finishedAt ? when(r.finishedAt) : r.startedAt ? h("span", { class: "muted" }, "started " + when(r.startedAt)) : "—"),
        h("td", { class: "counts" }, counts.length
          ? counts.flatMap(([k, n], i) => [i ? " · " : null, h("span", { class: "count", "data-key": k }, k + ": " + fmt(n))])
          : "—"));
    };
    const renderRegs = () => {
      if (!regs.length) {
        regList.replaceChildren(h("p", { class: "muted", id: "regulations-empty" },
          regApplied.status || regApplied.userId ? "No regulations match." : "No regulations yet: submit one above."));
        return;
      }
      regList.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "regulations" },
        h("tr", {}, ["Type", "Users", "Status", "Created", "Finished", "Counts"].map((t) => h("th", {}, t))),
        regs.map(regRow))));
    };
    const active = (r) => r.status === "pending" || r.status === "running";
    // The 2 s refresh runs while a regulation shown is pending or running, and only then.
    const watch = () => {
      const busy = !left && regs.some(active);
      if (busy && !poll) {
        poll = setInterval(tick, 2000);
        timers.push(poll);
      } else if (!busy && poll) {
        clearInterval(poll);
        timers = timers.filter((t) => t !== poll);
        poll = null;
      }
    };
    const loadRegs = async (fresh) => {
      // Only the answer to the latest question is shown (a filter changed while one was on its way).
      const mine = ++regAsked;
      const r = await api("GET", query("/api/v1/regulations", { ...regApplied, limit: 20, before: fresh ? undefined : regCursor }));
      if (mine !== regAsked || left) return;
      regs = fresh ? r.regulations : regs.concat(r.regulations);
      regCursor = r.nextBefore;
      regMore.hidden = !regCursor;
      renderRegs();
      watch();
    };
    // Each pending or running regulation shown, asked for again; a change of status may change who
    // is suppressed. Not through guard: it would clear the message of a submit every 2 s.
    async function tick() {
      if (polling || left) return;
      polling = true;
      try {
        const asked = regAsked;
        const was = new Map(regs.map((r) => [r.id, r.status]));
        const now = await Promise.all(regs.filter(active).map((r) => api("GET", "/api/v1/regulations/" + encodeURIComponent(r.id))));
        if (left || asked !== regAsked) return; // the list was shown again meanwhile
        const byId = new Map(now.map((r) => [r.id, r]));
        regs = regs.map((r) => byId.get(r.id) || r);
        renderRegs();
        if (now.some((r) => was.get(r.id) !== r.status)) await loadSuppressions();
      } catch (e) {
        if (!left) say("The regulations cannot be refreshed: " + e.message);
      } finally {
        polling = false;
        watch();
      }
    }
    const regForm = h("form", { class: "card", id: "new-regulation", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      const ids = parseIds(userIds.value);
      if (!ids.length) { userIds.focus(); throw new Error("Enter at least one userId."); }
      if (ids.length > 5000) throw new Error(`A regulation takes at most 5,000 userIds; these are ${fmt(ids.length)}.`);
      const t = type.value;
      if (DELETES.includes(t) && !confirm(`Delete what is stored of ${ids.length === 1 ? "“" + ids[0] + "”" : fmt(ids.length) + " users"}` +
        " (events, quarantined events, dead letters, anomaly samples, identity links)? It cannot be undone.")) return;
      const r = await api("POST", "/api/v1/regulations", { type: t, userIds: ids });
      userIds.value = "";
      // The new regulation is on top of the unfiltered list.
      regStatus.value = "";
      regUser.value = "";
      regApplied = {};
      await loadRegs(true);
      // One carried out already is in the list shown; one still pending is followed by the 2 s refresh.
      await loadSuppressions().catch(() => {});
      say(`Regulation ${r.type} of ${usersText((r.userIds || ids).length)} submitted: workers carry it out in the background, and its status below follows it.`, true);
    }) },
      h("div", { class: "inline" },
        field("Type", type, null),
        field("userIds (one a line, or separated by commas; at most 5,000)", userIds)),
      typeHint,
      h("div", { class: "muted hint", id: "regulation-user-ids-hint" },
        "Anonymous ids linked to a userId (by identify or alias) are regulated with it."),
      h("button", { type: "submit", id: "submit-regulation" }, "Submit regulation"));
    const regFilter = h("form", { class: "inline card", id: "regulations-filter", onsubmit: guard(async (ev) => {
      ev.preventDefault();
      regApplied = { status: regStatus.value, userId: regUser.value.trim() };
      await loadRegs(true);
    }) },
      field("Status", regStatus), field("userId", regUser),
      h("button", { type: "submit" }, "Show"));
    regStatus.addEventListener("change", () => regFilter.requestSubmit());

    // ---- suppressed users
    const supList = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const supPages = pager("sup", async (before) => {
      const r = await api("GET", query("/api/v1/suppressions", { limit: 50, before }));
      if (left) return r;
      if (!r.suppressions.length) {
        supList.replaceChildren(h("p", { class: "muted", id: "suppressions-empty" }, before ? "No older suppressions." :
          "No user is suppressed. A suppress or suppress_with_delete regulation adds its users here once carried out."));
        return r;
      }
      supList.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "suppressions" },
        h("tr", {}, ["userId", "Via (the regulated userId)", "Regulation", "Since"].map((t) => h("th", {}, t))),
        r.suppressions.map((s) => h("tr", { "data-user-id": s.userId, "data-regulation-id": s.regulationId },
          h("td", { class: "user-id" }, h("code", {}, s.userId)),
          h("td", { class: "via" }, s.via == null || s.via === s.userId ? h("span", { class: "muted" }, "itself") : ["linked to ", h("code", {}, s.via)]),
          h("td", { class: "regulation" }, h("code", {}, s.regulationId)),
          h("td", { class: "since" }, when(s.since)))))));
      return r;
    });
    const loadSuppressions = () => supPages.first();

    cleanups.push(() => { left = true; });
    render("Privacy",
      h("p", {}, "How long the account's data is kept, and regulations by userId: suppress a person's new events, delete what is stored of them, or both. ",
        "A person's copy of their data is an export: ", h("code", {}, "GET /api/v1/users/{userId}/export"), "."),
      h("h2", {}, "Retention"), retentionForm,
      h("h2", {}, "Regulations"), regForm, regFilter, regList, regMore,
      h("h2", {}, "Suppressed users ", h("button", { type: "button", class: "link", id: "suppressions-refresh", onclick: guard(loadSuppressions) }, "refresh")),
      h("p", { class: "muted" }, "Their events are dropped as they arrive, until an unsuppress regulation ends it."),
      supList, supPages.controls);
    await Promise.all([loadRetention(), guard(() => loadRegs(true))(), guard(loadSuppressions)()]);
  }

  // ---- routing ---------------------------------------------------------------------------------
  const routes = { "/overview": overviewPage, "/keys": keysPage, "/sources": sourcesPage, "/plan": planPage, "/quarantine": quarantinePage,
    "/events": eventsPage, "/pipeline": pipelinePage, "/dlq": dlqPage, "/users": usersPage,
    "/rules": rulesPage, "/anomalies": anomaliesPage, "/live": livePage, "/privacy": privacyPage };
  async function route() {
    timers.forEach(clearInterval);
    timers = [];
    cleanups.splice(0).forEach((f) => { try { f(); } catch (e) { /* the page is gone either way */ } });
    const hash = location.hash.replace(/^#/, "") || "/overview";
    const loggedIn = !!sessionStorage.getItem(TOKEN);
    nav.hidden = !loggedIn;
    if (hash === "/login" || hash === "/signup" || !loggedIn) {
      if (loggedIn && (hash === "/login" || hash === "/signup")) { location.hash = "#/overview"; return; }
      return authPage(hash === "/signup" ? "signup" : "login");
    }
    const [, base, arg] = hash.match(/^(\/[a-z]+)(?:\/(.*))?$/) || [];
    nav.querySelectorAll("a").forEach((a) => a.setAttribute("aria-current", a.getAttribute("href") === "#" + base ? "page" : "false"));
    const page = routes[base] || overviewPage;
    await page(arg ? decodeURIComponent(arg) : undefined);
    main.focus({ preventScroll: true });
  }
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN);
    say("");
    location.hash = "#/login";
  });
  window.addEventListener("hashchange", route);
  route();
})();
