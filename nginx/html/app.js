// The Sluice dashboard: a small single-page app with no dependencies and nothing loaded from other
// hosts. The JWT lives in sessionStorage (never in a cookie); a 401 from any call returns to login.
(function () {
  "use strict";
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const flash = document.getElementById("flash");
  const TOKEN = "sluice.token";
  let timers = [];

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
      if (err && err.details && err.details.length) msg += ": " + err.details.map((d) => (d.path || "") + " " + d.message).join("; ");
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

  // ---- routing ---------------------------------------------------------------------------------
  const routes = { "/overview": overviewPage, "/keys": keysPage, "/pipeline": pipelinePage, "/dlq": dlqPage, "/users": usersPage };
  async function route() {
    timers.forEach(clearInterval);
    timers = [];
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
