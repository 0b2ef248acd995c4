// The Trellis console's page: renders the snapshots the server streams, and sends actions
// (with the session's CSRF token) when the console may act. Data is only ever set as text.
"use strict";

const state = { snapshot: null, csrf: null, actions: false, selectedApp: null, diffVersion: null };

const $ = (selector) => document.querySelector(selector);

/** An element with attributes (`class`, `data-*`, ...) and children (nodes or text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(text, error = false) {
  const message = $("#message");
  message.textContent = text;
  message.className = error ? "error" : "";
}

function ago(ms) {
  if (ms < 1000) return `${ms} ms ago`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

function time(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function rate(x) {
  return x >= 10 ? x.toFixed(0) : x.toFixed(1);
}

// --- the lattice map ---

/** The label hosts are grouped by: zone, else region. */
function zoneOf(host) {
  const labels = host.labels || {};
  if (labels.zone) return `zone ${labels.zone}`;
  if (labels.region) return `region ${labels.region}`;
  return "no zone or region label";
}

function traceLink(component) {
  const template = state.snapshot.trace_url;
  if (!template) return null;
  const href = template.replaceAll("{component}", encodeURIComponent(component));
  return el("a", { href, target: "_blank", rel: "noopener noreferrer" }, "traces");
}

function hostCard(host) {
  const inventory = host.inventory || { components: [], providers: [] };
  const labels = Object.entries(host.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  const components = inventory.components.map((c) =>
    el("li", { class: "component", "data-id": c.id },
      el("span", {}, c.id),
      el("span", { class: "figures" },
        `${rate(c.calls_per_s || 0)} calls/s · ${rate(c.errors_per_s || 0)} errors/s · ${c.invocations} calls `,
        traceLink(c.id))));
  const providers = inventory.providers.map((p) => {
    const health = !p.running ? "restarting" : p.problem ? `unhealthy: ${p.problem}` : "running";
    return el("li", { class: "provider", "data-id": p.id },
      el("span", {}, `${p.id} (${p.kind})`),
      el("span", { class: "figures" }, `${health}${p.builtin ? ", builtin" : ""}, ${p.restarts} restarts`));
  });
  return el("article", { class: `host ${host.state}`, "data-host-id": host.id, "data-name": host.name },
    el("header", {},
      el("span", { class: "name" }, host.name),
      el("span", { class: `state ${host.state}` }, host.state)),
    el("div", { class: "meta" },
      `${host.id.slice(0, 12)}… · ${labels || "no labels"} · heartbeat ${ago(host.heartbeat_age_ms)} · up ${host.uptime_s} s`),
    el("div", { class: "meta resources" },
      `RSS ${host.rss_bytes ? (host.rss_bytes / 1048576).toFixed(1) + " MiB" : "?"} · CPU ${host.cpu_percent === null || host.cpu_percent === undefined ? "?" : host.cpu_percent.toFixed(1) + " %"}`),
    el("ul", {}, components, providers,
      components.length + providers.length === 0 ? el("li", { class: "muted" }, "runs nothing") : null));
}

function renderMap(snapshot) {
  const zones = new Map();
  for (const host of snapshot.hosts) {
    const zone = zoneOf(host);
    if (!zones.has(zone)) zones.set(zone, []);
    zones.get(zone).push(host);
  }
  const sections = [...zones.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([zone, hosts]) =>
    el("div", { class: "zone", "data-zone": zone },
      el("h3", {}, `${zone} · ${hosts.length} host${hosts.length === 1 ? "" : "s"}`),
      el("div", { class: "hosts" }, hosts.map(hostCard))));
  $("#zones").replaceChildren(...(sections.length ? sections : [el("p", { class: "muted" }, "No host has been seen yet.")]));
  $("#links tbody").replaceChildren(...snapshot.links.map((link) =>
    el("tr", { "data-source": link.source, "data-target": link.target },
      el("td", {}, link.source),
      el("td", {}, link.interface),
      el("td", {}, link.name),
      el("td", {}, link.target),
      el("td", {}, Object.entries(link.config).map(([k, v]) => `${k}=${v}`).join(", ")))));
}

// --- components across hosts ---

/** The smallest bucket bound at or under which a fraction `q` of the calls finished. */
function quantile(bounds, counts, q) {
  const total = counts[counts.length - 1] || 0;
  if (!total) return null;
  const index = counts.findIndex((c) => c >= q * total);
  return index < bounds.length ? bounds[index] : Infinity;
}

function micros(us) {
  if (us === null) return "—";
  if (us === Infinity) return "> 30 s";
  return us >= 1000 ? `≤ ${us / 1000} ms` : `≤ ${us} µs`;
}

function renderComponents(snapshot) {
  const byId = new Map();
  for (const host of snapshot.hosts) {
    if (host.state === "lost" || host.state === "stopped" || !host.inventory) continue;
    for (const c of host.inventory.components) {
      if (!byId.has(c.id)) byId.set(c.id, []);
      byId.get(c.id).push({ host, c });
    }
  }
  const rows = [...byId.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, replicas]) => {
    const sum = (f) => replicas.reduce((n, r) => n + (f(r.c) || 0), 0);
    const calls = sum((c) => c.calls_per_s), errors = sum((c) => c.errors_per_s);
    const kinds = {};
    for (const { c } of replicas) for (const [k, n] of Object.entries(c.errors_by_kind || {})) kinds[k] = (kinds[k] || 0) + n;
    const bounds = replicas[0].c.duration_bounds_us || [];
    const counts = bounds.length ? bounds.map((_, i) => sum((c) => (c.duration_counts || [])[i])).concat([sum((c) => (c.duration_counts || [])[bounds.length])]) : [];
    const claims = replicas[0].c.claims;
    const claimsText = claims
      ? `${claims.name} rev ${claims.rev} by ${claims.issuer.slice(0, 10)}…` +
        (claims.expires_s ? `, expires ${time(claims.expires_s * 1000)}` : "") +
        (claims.allow.length ? `, may import ${claims.allow.join(" ")}` : "") +
        (claims.callers.length ? `, callers ${claims.callers.join(" ")}` : "")
      : "unsigned";
    return el("tr", { "data-component": id },
      el("td", {}, id),
      el("td", {}, `${replicas.length}: ${replicas.map((r) => r.host.name).join(", ")}`),
      el("td", {}, rate(calls)),
      el("td", {}, calls > 0 ? `${(100 * errors / calls).toFixed(1)} %` : "—"),
      el("td", {}, Object.entries(kinds).map(([k, n]) => `${k} ${n}`).join(", ") || "none"),
      el("td", {}, micros(quantile(bounds, counts, 0.5))),
      el("td", {}, micros(quantile(bounds, counts, 0.99))),
      el("td", { class: "claims" }, claimsText),
      el("td", {}, traceLink(id)));
  });
  $("#component-table tbody").replaceChildren(...rows);
}

// --- applications ---

function appState(app) {
  if (!app.current) return "undeployed";
  if (!app.status || app.status.version !== app.current) return "pending";
  return app.status.state;
}

function renderApps(snapshot) {
  $("#apps tbody").replaceChildren(...snapshot.apps.map((app) => {
    const current = app.current || "";
    const reason = app.status && app.status.version === app.current ? app.status.reason || "" : "";
    const row = el("tr", {
      "data-app": app.name,
      class: state.selectedApp === app.name ? "selected" : null,
      onclick: () => { state.selectedApp = app.name; state.diffVersion = null; render(); },
    },
      el("td", {}, app.name),
      el("td", {}, current || "—"),
      el("td", {}, el("span", { class: `state app-state ${appState(app)}` }, appState(app))),
      el("td", {}, reason),
      el("td", {}, app.versions.length));
    return row;
  }));
  const app = snapshot.apps.find((a) => a.name === state.selectedApp);
  $("#app-detail").replaceChildren(...(app ? appDetail(app) : []));
  $("#deploy-button").disabled = !state.csrf;
}

function appDetail(app) {
  const status = app.status && app.status.version === app.current ? app.status : null;
  const workloads = status ? status.workloads.map((w) =>
    el("tr", { "data-workload": w.name },
      el("td", {}, w.name), el("td", {}, w.kind), el("td", {}, w.desired),
      el("td", {}, w.hosts.length), el("td", {}, el("span", { class: `state ${w.state}` }, w.state)),
      el("td", {}, w.reason || w.hosts.join(", ")))) : [];
  const versions = app.versions.map((v) =>
    el("tr", { "data-version": v.version },
      el("td", {}, v.version, v.version === app.current ? " (current)" : "", v.version === app.stable ? " (stable)" : ""),
      el("td", {},
        el("button", { type: "button", class: "diff", onclick: () => { state.diffVersion = v.version; render(); } }, "diff with current"),
        " ",
        el("button", {
          type: "button", class: "act rollback", "data-version": v.version,
          disabled: !state.csrf || v.version === app.current,
          onclick: async () => {
            const done = await act(`/api/apps/${encodeURIComponent(app.name)}/rollback`,
              { version: v.version }, `rolling ${app.name} back to ${v.version}`);
            if (done) { state.diffVersion = null; render(); }
          },
        }, "roll back to this"))));
  const history = [...app.history].reverse().map((c) =>
    el("tr", {}, el("td", {}, time(c.time_ms)), el("td", {}, c.action), el("td", {}, c.version), el("td", {}, c.reason || "")));
  const parts = [
    el("h3", {}, `${app.name} `, el("span", { class: `state app-state ${appState(app)}` }, appState(app))),
    el("table", { id: "workloads" },
      el("thead", {}, el("tr", {}, ["Name", "Kind", "Desired", "Running", "State", "Hosts / reason"].map((h) => el("th", {}, h)))),
      el("tbody", {}, workloads)),
    el("h3", {}, "Versions"),
    el("table", { id: "versions" }, el("tbody", {}, versions)),
  ];
  if (state.diffVersion) {
    const from = app.versions.find((v) => v.version === app.current);
    const to = app.versions.find((v) => v.version === state.diffVersion);
    if (to) parts.push(el("h4", {}, `${app.current || "nothing"} → ${to.version}`), diffView(from ? from.manifest : {}, to.manifest));
  }
  parts.push(
    el("h3", {}, "History"),
    el("table", { id: "history" }, el("tbody", {}, history)),
    el("p", {}, el("button", {
      type: "button", id: "undeploy-button", class: "act danger", disabled: !state.csrf || !app.current,
      onclick: () => act(`/api/apps/${encodeURIComponent(app.name)}/undeploy`, {}, `undeploying ${app.name}`),
    }, "Undeploy")));
  return parts;
}

/** A line diff of two manifests (longest common subsequence of their JSON lines). */
function diffView(a, b) {
  const left = JSON.stringify(a, null, 2).split("\n");
  const right = JSON.stringify(b, null, 2).split("\n");
  const n = left.length, m = right.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = left[i] === right[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && left[i] === right[j]) { lines.push(el("span", {}, `  ${left[i]}\n`)); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { lines.push(el("span", { class: "add" }, `+ ${right[j]}\n`)); j++; }
    else { lines.push(el("span", { class: "del" }, `- ${left[i]}\n`)); i++; }
  }
  return el("pre", { class: "diff" }, lines);
}

// --- events and security ---

function eventSubject(event) {
  const body = event.body || {};
  return body.component_id || body.provider_id || body.link_key || body.subject || body.name || "";
}

function eventText(event) {
  const body = event.body || {};
  const detail = body.reason || body.operator || "";
  return `${time(event.time_ms)} ${event.kind.padEnd(20)} ${eventSubject(event)} ${detail}`;
}

function hostName(snapshot, id) {
  const host = snapshot.hosts.find((h) => h.id === id);
  return host ? host.name : id.slice(0, 12);
}

function renderEvents(snapshot) {
  const kinds = [...new Set(snapshot.events.map((e) => e.kind))].sort();
  const select = $("#filter-kind");
  const known = [...select.options].map((o) => o.value);
  for (const kind of kinds) if (!known.includes(kind)) select.append(el("option", { value: kind }, kind));
  const kind = select.value;
  const host = $("#filter-host").value.trim();
  const workload = $("#filter-component").value.trim();
  const shown = snapshot.events.filter((e) =>
    (!kind || e.kind === kind) &&
    (!host || e.host_id.includes(host) || hostName(snapshot, e.host_id).includes(host)) &&
    (!workload || eventSubject(e).includes(workload)));
  $("#event-list").replaceChildren(...shown.slice(-200).reverse().map((e) =>
    el("li", { "data-kind": e.kind }, `${eventText(e)} · ${hostName(snapshot, e.host_id)}`)));
}

const DENIALS = ["invocation_denied", "request_denied", "record_denied"];

function renderSecurity(snapshot) {
  const short = (entry) => {
    const [key, role] = entry.split(":");
    return role ? `${key.slice(0, 10)}…:${role}` : `${key.slice(0, 10)}…`;
  };
  const keys = (list) => (list && list.length ? list.map(short).join(", ") : "none");
  $("#posture tbody").replaceChildren(...snapshot.hosts.map((h) => {
    const posture = (h.inventory && h.inventory.posture) || null;
    const mode = !posture ? "?" : posture.development ? "development" : "strict";
    return el("tr", { "data-host-id": h.id },
      el("td", {}, h.name),
      el("td", {}, el("span", { class: `mode ${mode}` }, mode)),
      el("td", {}, posture ? keys(posture.trusted_issuers) : "?"),
      el("td", {}, posture ? keys(posture.trusted_operators) : "?"),
      el("td", {}, h.invocations_denied),
      el("td", {}, h.requests_denied));
  }));
  const denials = snapshot.events.filter((e) => DENIALS.includes(e.kind));
  $("#denials").replaceChildren(...(denials.length
    ? denials.slice(-100).reverse().map((e) => el("li", {}, `${eventText(e)} · ${hostName(snapshot, e.host_id)}`))
    : [el("li", { class: "muted" }, "Nothing refused recently.")]));
}

// --- the whole page ---

function render() {
  const snapshot = state.snapshot;
  if (!snapshot) return;
  $("#lattice").textContent = `lattice ${snapshot.lattice}`;
  renderMap(snapshot);
  renderComponents(snapshot);
  renderApps(snapshot);
  renderEvents(snapshot);
  renderSecurity(snapshot);
}

async function act(url, body, doing) {
  say(`${doing}…`);
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": state.csrf || "" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
    say(`${doing}: accepted`);
    return answer;
  } catch (e) {
    say(`${doing}: ${e.message}`, true);
    return null;
  }
}

async function loadSession() {
  const response = await fetch("/api/session");
  const session = await response.json();
  state.actions = session.actions;
  state.csrf = session.csrf || null;
  $("#mode").textContent = !session.actions ? "read-only" : state.csrf ? "signed in" : "signed out";
  $("#signin").hidden = !session.actions || Boolean(state.csrf);
  render();
}

function follow() {
  const stream = new EventSource("/api/stream");
  stream.addEventListener("snapshot", (event) => {
    state.snapshot = JSON.parse(event.data);
    $("#live").textContent = "live";
    render();
  });
  stream.addEventListener("error", () => { $("#live").textContent = "reconnecting…"; });
}

function start() {
  $("#signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#signin-token").value;
    const response = await fetch("/api/session", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) { say(answer.error || "sign-in failed", true); return; }
    $("#signin-token").value = "";
    say("signed in");
    await loadSession();
  });
  $("#deploy").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await act("/api/apps", { manifest: $("#deploy-manifest").value }, "deploying");
    if (answer) { state.selectedApp = answer.name; render(); }
  });
  $("#deploy-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("#deploy-manifest").value = await file.text();
  });
  for (const id of ["#filter-kind", "#filter-host", "#filter-component"]) {
    $(id).addEventListener("input", render);
  }
  follow();
  loadSession();
}

start();
