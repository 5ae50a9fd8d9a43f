// obscore dashboard: plain JavaScript, no dependencies, no build step.
// Pages are hash routes; every page reads the JSON API.  While the server
// runs, the status is polled every few seconds and the page re-renders as
// soon as new samples, anomalies, incidents or alerts arrive.  The same code
// renders a static report: the page then carries the API answers it needs
// in a <script id="report-data"> and never touches the network.
"use strict";

const POLL_MS = 3000;        // how often the status is polled for changes
const REFRESH_MS = 60000;    // re-render at least this often
const REGION_COLOURS = ["#2f6fde", "#8e44ad", "#16a085", "#d35400", "#7f8c8d", "#c0392b"];
const SVG_NS = "http://www.w3.org/2000/svg";

const ui = {
  status: null,          // /api/v1/obscore/status
  step: "1m",            // resolution of the service charts
  timer: null,
  rendering: 0,
  busy: false,           // a render is in flight
  seen: "",              // what the shown page was rendered from (see statusKey)
  renderedAt: 0,
  report: null,          // the embedded answers of a static report, else null
};

// --- small helpers ------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function pad(n) { return String(n).padStart(2, "0"); }

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
  if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
  if (a >= 1e4) return (v / 1e3).toPrecision(3) + "k";
  if (a === 0) return "0";
  return v.toPrecision(3).replace(/\.?0+$/, "");
}

function rfc3339(ms) { return new Date(ms).toISOString(); }

function parseTime(text) { return Date.parse(text); }

function token() { return document.getElementById("token").value.trim(); }

// The key of an API answer inside a static report (written by obscore.report).
function reportKey(path, params) {
  const pairs = Object.entries(params || {}).map(([k, v]) => [k, String(v)]);
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return JSON.stringify([path, pairs]);
}

async function api(path, params) {
  if (ui.report) {
    const key = reportKey(path, params);
    if (!(key in ui.report.answers)) throw new Error(`not in this report: ${path}`);
    return ui.report.answers[key];
  }
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, v);
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = body && (body.error || (typeof body === "string" ? body : null));
    throw new Error(`${res.status}: ${msg || res.statusText}`);
  }
  return body;
}

async function write(path, method, body) {
  if (ui.report) throw new Error("a static report cannot change anything");
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const out = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = out && (out.error || (typeof out === "string" ? out : null));
    throw new Error(`${res.status}: ${msg || res.statusText}`);
  }
  return out;
}

// The selected time range, relative to the newest stored sample.
function timeRange() {
  if (ui.report) return { start: ui.report.start_ms, end: ui.report.end_ms };
  const choice = document.getElementById("range").value;
  const end = (ui.status && ui.status.data_end_ms) || Date.now();
  if (choice === "custom") {
    const s = Date.parse(document.getElementById("range-start").value + "Z");
    const e = Date.parse(document.getElementById("range-end").value + "Z");
    if (Number.isFinite(s) && Number.isFinite(e) && e > s) return { start: s, end: e };
  }
  const span = Number(choice) || 21600000;
  return { start: end - span, end };
}

function rangeParams() {
  const r = timeRange();
  return { start: (r.start / 1000).toFixed(3), end: (r.end / 1000).toFixed(3) };
}

function stepMs(text) {
  return { "1m": 60000, "5m": 300000, "1h": 3600000 }[text] || 60000;
}

function problem(err) {
  return el("p", { class: "error" }, String(err.message || err));
}

// --- pages ----------------------------------------------------------------------

async function renderOverview(view) {
  const [ov, incidents] = await Promise.all([
    api("/api/v1/obscore/overview", rangeParams()),
    api("/api/v1/obscore/incidents", rangeParams()),
  ]);
  view.append(el("h1", {}, "Services by region"));
  view.append(el("p", { class: "legend muted" },
    el("span", {}, el("i", { class: "swatch ok" }), "healthy"),
    el("span", {}, el("i", { class: "swatch warning" }), "anomalies or resolved alerts in the range"),
    el("span", {}, el("i", { class: "swatch critical" }), "firing alerts"),
  ));
  const grid = el("div", { class: "grid panel", id: "health-grid" });
  grid.style.gridTemplateColumns = `140px repeat(${ov.regions.length}, 1fr)`;
  grid.append(el("div", { class: "head" }, "service"));
  for (const r of ov.regions) grid.append(el("div", { class: "head" }, r));
  const byKey = new Map(ov.cells.map((c) => [`${c.service}\u0000${c.region}`, c]));
  for (const s of ov.services) {
    grid.append(el("a", { href: `#/service/${encodeURIComponent(s)}` }, s));
    for (const r of ov.regions) {
      const c = byKey.get(`${s}\u0000${r}`);
      grid.append(el("a", {
        class: `cell ${c.health}`, href: `#/service/${encodeURIComponent(s)}`,
        "data-service": s, "data-region": r, "data-health": c.health,
        title: `${s} in ${r}: ${c.health}`,
      },
      el("strong", {}, c.health),
      el("small", {}, `${c.firing} firing, ${c.alerts} alerts, ${c.anomalies} anomalies`)));
    }
  }
  view.append(grid);
  view.append(el("h2", {}, "Incidents in the range"));
  view.append(incidentTable(incidents.slice(0, 10)));
}

function incidentTable(items) {
  if (!items.length) return el("p", { class: "muted" }, "No incidents in the range.");
  const rows = items.map((i) => el("tr", {},
    el("td", {}, el("a", { href: `#/incident/${i.id}` }, `#${i.id}`)),
    el("td", {}, fmtTime(i.start_ms)),
    el("td", {}, fmtTime(i.end_ms)),
    el("td", {}, i.services.join(", ") || "–"),
    el("td", {}, i.anomalies),
    el("td", {}, el("code", {}, i.first_signal)),
  ));
  return el("table", { id: "incidents" },
    el("thead", {}, el("tr", {}, ["incident", "start", "end", "services", "anomalies", "first signal"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

async function renderIncidents(view) {
  const items = await api("/api/v1/obscore/incidents", rangeParams());
  view.append(el("h1", {}, "Incidents"), incidentTable(items));
}

async function renderService(view, name) {
  const r = timeRange();
  const step = stepMs(ui.step);
  const info = await api(`/api/v1/obscore/services/${encodeURIComponent(name)}`, {
    ...rangeParams(), step: `${step / 1000}s`,
  });
  const seg = el("span", { class: "seg" }, ["1m", "5m", "1h"].map((s) => el("button", {
    type: "button", class: s === ui.step ? "on" : "", "data-step": s,
    onclick: () => { ui.step = s; render(); },
  }, s)));
  view.append(el("h1", {}, `Service ${name}`));
  view.append(el("div", { class: "toolbar" }, el("span", { class: "muted" }, "resolution"), seg,
    el("span", { class: "muted" }, `${fmtTime(r.start)} – ${fmtTime(r.end)}; red bands: anomalies, top strip: alerts`)));
  const box = el("div", { class: "charts" });
  view.append(box);
  const charts = await Promise.all(info.charts.map(async (c) => {
    try {
      const res = await api("/api/v1/query_range", {
        query: c.query, start: (r.start / 1000).toFixed(3), end: (r.end / 1000).toFixed(3), step: `${step / 1000}s`,
      });
      return chart(c, res.data.result, info, r);
    } catch (err) {
      return el("div", { class: "panel chart" }, el("h3", {}, c.title), problem(err));
    }
  }));
  box.append(...charts);
}

// One colour per region (or series label) on every chart of the session.
const seenColours = new Map();
function colourOf(label) {
  if (!seenColours.has(label)) seenColours.set(label, REGION_COLOURS[seenColours.size % REGION_COLOURS.length]);
  return seenColours.get(label);
}

function chart(spec, result, info, r) {
  const W = 640, H = 220, L = 56, R = 10, T = 16, B = 26;
  const series = result.map((s) => ({
    label: s.metric.region || JSON.stringify(s.metric),
    points: s.values.map(([t, v]) => [t * 1000, Number(v)]).filter(([, v]) => Number.isFinite(v)),
  }));
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const [, v] of s.points) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi === lo) { hi = lo + 1; }
  lo = Math.min(lo, 0 <= lo && lo < (hi - lo) ? 0 : lo);
  const x = (t) => L + ((t - r.start) / Math.max(r.end - r.start, 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title, "data-metric": spec.metric });
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const f of [0, 0.5, 1]) {
    const v = lo + f * (hi - lo);
    root.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmtNum(v)));
    root.append(svg("line", { class: "axis", x1: L, y1: y(v), x2: W - R, y2: y(v), "stroke-dasharray": "2 3" }));
  }
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const t = r.start + f * (r.end - r.start);
    root.append(svg("text", { x: x(t), y: H - 8, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" }, fmtClock(t)));
  }
  // anomalies of this metric (and service, on an incident's evidence charts)
  const ofService = (labels) => !spec.service || !labels || (labels.service || "") === spec.service;
  for (const a of info.anomalies.filter((a) => a.metric === spec.metric && ofService(a.labels))) {
    const x0 = Math.max(x(a.start_ms), L), x1 = Math.min(x(a.end_ms), W - R);
    const rect = svg("rect", {
      class: "anomaly-mark", x: x0, y: T, width: Math.max(x1 - x0, 3), height: H - T - B,
      "data-start-ms": a.start_ms, "data-end-ms": a.end_ms, "data-signal": a.signal,
    }, svg("title", {}, `anomaly ${a.signal}\n${fmtTime(a.start_ms)} – ${fmtTime(a.end_ms)}, z=${fmtNum(a.peak_z)}`));
    root.append(rect);
  }
  // alert spans of this metric, as a strip along the top
  for (const al of info.alerts.filter((al) => al.labels.alertname === `${spec.metric}_anomaly` && ofService(al.labels))) {
    const s = parseTime(al.startsAt), e = parseTime(al.endsAt);
    const x0 = Math.max(x(s), L), x1 = Math.min(x(Math.min(e, r.end)), W - R);
    if (x1 < L || x0 > W - R) continue;
    root.append(svg("rect", {
      class: `alert-span ${al.status.state === "active" ? "firing" : ""}`, x: x0, y: 2,
      width: Math.max(x1 - x0, 3), height: 8, "data-fingerprint": al.fingerprint,
    }, svg("title", {}, `alert ${al.labels.alertname} (${al.status.state})\n${al.annotations.summary || ""}`)));
  }
  series.forEach((s) => {
    if (!s.points.length) return;
    const d = s.points.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    root.append(svg("path", { d, fill: "none", stroke: colourOf(s.label), "stroke-width": 1.4 },
      svg("title", {}, s.label)));
  });
  if (!series.length) {
    root.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data in the range"));
  }
  const legend = el("div", { class: "legend muted" }, series.map((s) => {
    const sw = el("i", { class: "swatch" });
    sw.style.background = colourOf(s.label);
    return el("span", {}, sw, s.label);
  }));
  return el("div", { class: "panel chart", "data-metric": spec.metric, "data-service": spec.service || null },
    el("h3", {}, spec.title), root, legend, el("code", { class: "muted" }, spec.query));
}

async function renderAlerts(view) {
  const [alerts, groups, silences] = await Promise.all([
    api("/api/v2/alerts", { resolved: "true" }),
    api("/api/v2/alerts/groups"),
    api("/api/v2/silences"),
  ]);
  const groupOf = new Map();
  for (const g of groups) {
    const name = Object.entries(g.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "(all)";
    for (const a of g.alerts) groupOf.set(a.fingerprint, name);
  }
  const r = timeRange();
  const shown = alerts.filter((a) => parseTime(a.endsAt) >= r.start && parseTime(a.startsAt) <= r.end);
  const order = { active: 0, suppressed: 1, resolved: 2 };
  shown.sort((a, b) => order[a.status.state] - order[b.status.state] || parseTime(b.startsAt) - parseTime(a.startsAt));
  view.append(el("h1", {}, `Alerts (${shown.length} in the range)`));
  const msg = el("p", { id: "alert-message", class: "muted" });
  view.append(msg);
  const rows = shown.map((a) => {
    const sev = Number(a.annotations.severity || 0);
    const bar = el("span", { class: "sev" }, el("i", {}));
    bar.firstChild.style.width = `${Math.round(sev * 100)}%`;
    const ack = a.annotations.acknowledged_by ? `acked by ${a.annotations.acknowledged_by}` : "";
    return el("tr", { "data-fingerprint": a.fingerprint, "data-state": a.status.state },
      el("td", {}, el("span", { class: `state ${a.status.state}` }, a.status.state)),
      el("td", { class: "nowrap" }, bar, sev.toFixed(2)),
      el("td", {}, a.labels.alertname, el("br"), el("small", { class: "muted" }, a.annotations.summary || "")),
      el("td", {}, a.labels.service || "–"),
      el("td", { class: "nowrap" }, a.labels.region || "–"),
      el("td", {}, groupOf.get(a.fingerprint) || "–"),
      el("td", { class: "nowrap" }, fmtTime(parseTime(a.startsAt))),
      el("td", { class: "nowrap" }, a.status.state === "resolved" ? fmtTime(parseTime(a.endsAt)) : "firing"),
      el("td", {}, a.annotations.incident_id ? el("a", { href: `#/incident/${a.annotations.incident_id}` }, `#${a.annotations.incident_id}`) : "–"),
      el("td", { class: "nowrap" },
        ui.report || a.status.state === "resolved" ? null : [
          el("button", { type: "button", class: "silence", onclick: () => silence(a, msg) }, "silence 1h"), " ",
          el("button", { type: "button", class: "ack", onclick: () => acknowledge(a, msg) }, "ack")],
        ack ? el("div", { class: "muted" }, ack) : null),
    );
  });
  view.append(el("table", { id: "alerts" },
    el("thead", {}, el("tr", {}, ["state", "severity", "alert", "service", "region", "group", "started", "ended", "incident", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
  view.append(el("h2", {}, "Silences"));
  if (!silences.length) {
    view.append(el("p", { class: "muted" }, "No silences."));
    return;
  }
  view.append(el("table", { id: "silences" },
    el("thead", {}, el("tr", {}, ["state", "matchers", "until", "by", "comment", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, silences.map((s) => el("tr", { "data-silence": s.id },
      el("td", {}, s.status.state),
      el("td", {}, el("code", {}, s.matchers.map((m) => `${m.name}${m.isEqual ? "" : "!"}${m.isRegex ? "~" : "="}"${m.value}"`).join(", "))),
      el("td", {}, fmtTime(parseTime(s.endsAt))),
      el("td", {}, s.createdBy),
      el("td", {}, s.comment),
      el("td", {}, s.status.state === "expired" || ui.report ? "" : el("button", {
        type: "button", onclick: async () => {
          try { await write(`/api/v2/silence/${encodeURIComponent(s.id)}`, "DELETE"); render(); } catch (err) { msg.textContent = err.message; }
        },
      }, "expire")),
    )))));
}

async function silence(alert, msg) {
  const matchers = Object.entries(alert.labels).map(([name, value]) => ({ name, value, isRegex: false, isEqual: true }));
  try {
    const out = await write("/api/v2/silences", "POST", {
      matchers, endsAt: rfc3339(Date.now() + 3600000), createdBy: "dashboard",
      comment: `silenced from the dashboard: ${alert.labels.alertname}`,
    });
    msg.textContent = `silence ${out.silenceID} created`;
    await render();
  } catch (err) {
    msg.textContent = `could not silence: ${err.message}`;
    msg.className = "error";
  }
}

async function acknowledge(alert, msg) {
  try {
    await write(`/api/v1/obscore/alerts/${encodeURIComponent(alert.fingerprint)}/ack`, "POST", { by: "dashboard" });
    await render();
  } catch (err) {
    msg.textContent = `could not acknowledge: ${err.message}`;
    msg.className = "error";
  }
}

async function renderIncident(view, id) {
  const inc = await api(`/api/v1/obscore/incidents/${encodeURIComponent(id)}`);
  view.append(el("h1", {}, `Incident #${inc.id}`));
  view.append(el("p", {}, `${fmtTime(inc.start_ms)} – ${fmtTime(inc.end_ms)} UTC; services: `,
    inc.services.length ? inc.services.flatMap((s, i) => [i ? ", " : "", el("a", { href: `#/service/${encodeURIComponent(s)}` }, s)]) : "none",
  ));
  if (inc.reasons.length) view.append(el("ul", { class: "muted" }, inc.reasons.map((r) => el("li", {}, r))));
  const cands = inc.diagnosis.candidates;
  view.append(el("h2", {}, "Diagnosis: candidate causes"));
  view.append(el("table", { id: "candidates" },
    el("thead", {}, el("tr", {}, ["rank", "service", "metric", "confidence", "pattern", "evidence"].map((h) => el("th", {}, h)))),
    el("tbody", {}, cands.slice(0, 8).map((c, i) => {
      const bar = el("span", { class: "bar" }, el("i", {}));
      bar.firstChild.style.width = `${Math.round((c.confidence || 0) * 100)}%`;
      return el("tr", { "data-rank": i + 1 },
        el("td", {}, i + 1),
        el("td", {}, c.service),
        el("td", {}, c.metric),
        el("td", {}, bar, (c.confidence || 0).toFixed(2)),
        el("td", {}, c.pattern ? `${c.pattern} (similarity ${(c.similarity || 0).toFixed(2)})` : "–"),
        el("td", { class: "chips" }, Object.entries(c.evidence).map(([k, v]) => el("span", {}, `${k} ${fmtNum(v)}`))),
      );
    }))));
  view.append(el("h2", {}, "Evidence"));
  const ev = inc.evidence || { charts: [] };
  if (!ev.charts.length) {
    view.append(el("p", { class: "muted" }, "No chart for the signals of this incident."));
  } else {
    const w = { start: ev.start_ms, end: ev.end_ms };
    view.append(el("p", { class: "muted" },
      `${fmtTime(w.start)} – ${fmtTime(w.end)} at ${ev.step_ms / 1000}s steps; red bands: this incident's anomalies, top strip: its alerts`));
    const box = el("div", { class: "charts", id: "evidence" });
    view.append(box);
    const info = { anomalies: inc.anomalies, alerts: inc.alerts || [] };
    const charts = await Promise.all(ev.charts.map(async (c) => {
      const spec = { ...c, title: `${c.service || "(no service)"}: ${c.title}` };
      try {
        const res = await api("/api/v1/query_range", {
          query: c.query, start: (w.start / 1000).toFixed(3), end: (w.end / 1000).toFixed(3), step: `${ev.step_ms / 1000}s`,
        });
        return chart(spec, res.data.result, info, w);
      } catch (err) {
        return el("div", { class: "panel chart" }, el("h3", {}, spec.title), problem(err));
      }
    }));
    box.append(...charts);
  }
  view.append(el("h2", {}, "Runbook"));
  const top = cands.find((c) => c.steps.length) || null;
  if (inc.runbook) {
    view.append(el("div", { class: "panel markdown", id: "runbook" }, markdown(inc.runbook)));
  } else if (top) {
    view.append(el("div", { class: "panel", id: "runbook" },
      el("p", {}, `Pattern `, el("strong", {}, top.pattern), ` for ${top.service} / ${top.metric}:`),
      el("ol", { class: "steps" }, top.steps.map((s) => el("li", {}, s)))));
  } else {
    view.append(el("p", { class: "muted", id: "runbook" }, "No known pattern matched this incident."));
  }
  view.append(el("h2", {}, "Anomalies"));
  view.append(el("table", { id: "incident-anomalies" },
    el("thead", {}, el("tr", {}, ["signal", "start", "end", "peak z"].map((h) => el("th", {}, h)))),
    el("tbody", {}, inc.anomalies.map((a) => el("tr", {},
      el("td", {}, a.labels.service ? el("a", { href: `#/service/${encodeURIComponent(a.labels.service)}` }, a.signal) : a.signal),
      el("td", {}, fmtTime(a.start_ms)), el("td", {}, fmtTime(a.end_ms)), el("td", {}, fmtNum(a.peak_z)),
    )))));
}

// The Markdown of a runbook as DOM nodes: headings, lists, tables, paragraphs,
// `code` and **bold**; the text is never parsed as HTML.
function inline(text) {
  const out = [];
  const re = /`([^`]+)`|\*\*([^*]+)\*\*/g;
  let last = 0, m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(m[1] !== undefined ? el("code", {}, m[1]) : el("strong", {}, m[2]));
    last = re.lastIndex;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function markdown(text) {
  const nodes = [];
  let list = null, table = null;
  const close = () => { list = null; table = null; };
  for (const line of text.split("\n")) {
    const h = /^(#{1,4})\s+(.*)$/.exec(line);
    const ul = /^\s*[-*]\s+(.*)$/.exec(line);
    const ol = /^\s*\d+\.\s+(.*)$/.exec(line);
    if (h) {
      close();
      nodes.push(el(`h${Math.min(h[1].length + 2, 6)}`, {}, inline(h[2])));
    } else if (ul || ol) {
      const tag = ul ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        table = null;
        list = el(tag, { class: ol ? "steps" : null });
        nodes.push(list);
      }
      list.append(el("li", {}, inline((ul || ol)[1])));
    } else if (line.trim().startsWith("|")) {
      const cells = line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      if (cells.every((c) => /^:?-+:?$/.test(c))) continue;  // the header rule
      list = null;
      if (!table) {
        table = el("table", {}, el("thead", {}, el("tr", {}, cells.map((c) => el("th", {}, inline(c))))), el("tbody"));
        nodes.push(table);
      } else {
        table.lastChild.append(el("tr", {}, cells.map((c) => el("td", {}, inline(c)))));
      }
    } else if (line.trim()) {
      close();
      nodes.push(el("p", {}, inline(line)));
    } else {
      close();
    }
  }
  return nodes;
}

// --- routing and refresh ------------------------------------------------------

// What a page depends on: it is re-rendered when any of these change.
function statusKey(st) {
  if (!st) return "";
  const p = st.pipeline || {};
  return [st.ready, st.data_end_ms, st.samples, st.series, p.ran_ms, p.cursor_ms, p.anomalies,
    p.incidents, st.alerts].join("|");
}

async function render() {
  const ticket = ++ui.rendering;
  ui.busy = true;
  const view = document.getElementById("view");
  const page = document.createElement("div");
  const hash = window.location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active",
    a.dataset.nav === (parts[0] || "overview")));
  try {
    ui.status = await api("/api/v1/obscore/status");
    ui.seen = statusKey(ui.status);
    document.getElementById("status").textContent = !ui.status.ready
      ? "loading…"
      : ui.report
        ? `report: ${ui.status.series} series, ${fmtTime(ui.report.start_ms)} – ${fmtTime(ui.report.end_ms)} UTC`
        : `${ui.status.series} series, data to ${fmtTime(ui.status.data_end_ms)}` +
          (ui.status.pipeline && ui.status.pipeline.live ? ", pipeline live" : "");
    if (parts[0] === "service" && parts[1]) await renderService(page, parts[1]);
    else if (parts[0] === "alerts") await renderAlerts(page);
    else if (parts[0] === "incidents") await renderIncidents(page);
    else if (parts[0] === "incident" && parts[1]) await renderIncident(page, parts[1]);
    else await renderOverview(page);
  } catch (err) {
    page.append(problem(err));
  }
  if (ticket !== ui.rendering) return;  // a newer render started meanwhile
  ui.busy = false;
  ui.renderedAt = Date.now();
  view.replaceChildren(page);
  view.dataset.page = parts[0] || "overview";
  view.dataset.loaded = String(ui.renderedAt);
  view.dataset.dataEndMs = String((ui.status && ui.status.data_end_ms) || "");
  document.getElementById("updated").textContent = ui.report
    ? `Written ${ui.report.written}.`
    : `Updated ${new Date().toISOString().slice(11, 19)} UTC.`;
}

// Poll the status; re-render when the data or the pipeline moved on.
async function poll() {
  if (ui.busy || document.hidden) return;
  try {
    const st = await api("/api/v1/obscore/status");
    if (statusKey(st) !== ui.seen || Date.now() - ui.renderedAt >= REFRESH_MS) await render();
  } catch (err) {
    document.getElementById("status").textContent = `server unreachable: ${err.message}`;
  }
}

function schedule() {
  clearInterval(ui.timer);
  ui.timer = setInterval(poll, POLL_MS);
}

function setup() {
  const data = document.getElementById("report-data");
  if (data) {
    ui.report = JSON.parse(data.textContent);
    document.querySelectorAll(".live-only").forEach((n) => { n.hidden = true; });
    window.addEventListener("hashchange", render);
    render();
    return;
  }
  const tokenBox = document.getElementById("token");
  tokenBox.value = sessionStorage.getItem("obscore-token") || "";
  tokenBox.addEventListener("change", () => sessionStorage.setItem("obscore-token", tokenBox.value));
  const range = document.getElementById("range");
  range.addEventListener("change", () => {
    const custom = range.value === "custom";
    document.getElementById("custom-range").hidden = !custom;
    if (custom && ui.status && ui.status.data_end_ms) {
      const iso = (ms) => new Date(ms).toISOString().slice(0, 16);
      document.getElementById("range-end").value = iso(ui.status.data_end_ms);
      document.getElementById("range-start").value = iso(ui.status.data_end_ms - 21600000);
    }
    render();
  });
  document.getElementById("range-apply").addEventListener("click", render);
  window.addEventListener("hashchange", render);
  render();
  schedule();
}

document.addEventListener("DOMContentLoaded", setup);
