// GET /dashboard: one self-contained page (no CDN, no build step) that shows GET /stats live,
// from the event stream GET /stats/stream (one event a second). Plain HTML, CSS and JavaScript,
// kept here as strings; every URL is relative, so the page works behind `kubectl port-forward`
// and behind a proxy that serves the admin port under a path. Data is written with textContent,
// never as HTML. The Content-Security-Policy allows exactly this script and style (by hash).
import { createHash } from 'node:crypto'

const STYLE = `
:root { --green: #1b7f3b; --amber: #b86e00; --red: #c62828; --grey: #5f6368; --line: #dadce0; --bg: #f8f9fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #202124; background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: center; padding: 12px 20px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 18px; }
main { padding: 16px 20px; display: grid; gap: 16px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; overflow-x: auto; }
section h2 { margin: 0 0 8px; font-size: 15px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid #f1f3f4; vertical-align: top; white-space: nowrap; }
th { font-weight: 600; color: var(--grey); font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; min-width: 56px; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; text-align: center; }
.green { background: var(--green); } .amber { background: var(--amber); } .red { background: var(--red); } .grey { background: var(--grey); }
.chip { display: inline-block; margin: 0 4px 2px 0; padding: 0 6px; border-radius: 4px; font-size: 12px; border: 1px solid var(--line); }
.chip.green { background: #e6f4ea; color: var(--green); border-color: #b7dfc2; }
.chip.amber { background: #fef3e0; color: var(--amber); border-color: #f6d7a7; }
.chip.red { background: #fce8e6; color: var(--red); border-color: #f5b7b1; }
.why { color: var(--grey); font-size: 12px; white-space: normal; min-width: 240px; }
td.chips { white-space: normal; min-width: 260px; }
#summary { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: center; }
.meta { color: var(--grey); }
.meta b { color: #202124; font-weight: 600; }
#connection.live::before { content: "\\25cf "; color: var(--green); }
#connection.down::before { content: "\\25cf "; color: var(--red); }
.empty { color: var(--grey); font-style: italic; }
`

const SCRIPT = `
"use strict";
var $ = function (id) { return document.getElementById(id); };
function el(tag, className, text) {
  var node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function cell(row, text, className) { var td = el("td", className, text); row.appendChild(td); return td; }
function badge(health) { return el("span", "badge " + health, health); }
function fixed(value, digits, suffix) { return value === null || value === undefined ? "\\u2013" : Number(value).toFixed(digits) + (suffix || ""); }
function percent(ratio) { return ratio === null || ratio === undefined ? "\\u2013" : (ratio * 100).toFixed(ratio < 0.01 && ratio > 0 ? 2 : 1) + "%"; }
function duration(seconds) {
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}
function meta(parent, label, value) {
  var span = el("span", "meta", label + " ");
  span.appendChild(el("b", "", value));
  parent.appendChild(span);
  return span;
}
function fill(body, rows, columns, render) {
  body.textContent = "";
  if (rows.length === 0) {
    var tr = el("tr"); var td = el("td", "empty", "none"); td.colSpan = columns; tr.appendChild(td); body.appendChild(tr);
    return;
  }
  rows.forEach(function (row) { body.appendChild(render(row)); });
}

function render(stats) {
  document.title = "Waypost \\u2013 " + stats.health;
  var summary = $("summary");
  summary.textContent = "";
  summary.appendChild(badge(stats.health));
  meta(summary, "state", stats.gateway.state + (stats.gateway.ready ? "" : " (not ready: " + stats.gateway.readyReason + ")"));
  meta(summary, "config", "v" + stats.config.version + " " + stats.config.hash.slice(0, 12) + " (" + stats.config.source + ")");
  var reload = stats.config.lastReload;
  var last = meta(summary, "last reload", (reload.ok ? "applied" : "REJECTED") + " at " + new Date(reload.at).toLocaleTimeString() + " (" + reload.source + ")");
  last.id = "last-reload";
  last.className = "meta " + (reload.ok ? "" : "chip red");
  if (!reload.ok && reload.errors) last.title = reload.errors.join("\\n");
  meta(summary, "up", duration(stats.gateway.uptimeSeconds));
  meta(summary, "log", stats.gateway.logLevel);
  meta(summary, "waypost", stats.gateway.version);
  $("window").textContent = "rates over the last " + stats.windowSeconds + " s";

  fill($("routes"), stats.routes, 11, function (route) {
    var tr = el("tr");
    tr.dataset.route = route.name;
    tr.dataset.health = route.health;
    cell(tr, route.name);
    cell(tr, route.upstream);
    cell(tr, "").appendChild(badge(route.health));
    cell(tr, fixed(route.rate, 1), "num");
    cell(tr, percent(route.errorRatio), "num");
    cell(tr, fixed(route.p50Ms, 1), "num");
    cell(tr, fixed(route.p95Ms, 1), "num");
    cell(tr, fixed(route.p99Ms, 1), "num");
    cell(tr, route.inFlight, "num");
    var policies = cell(tr, "", "chips");
    route.policies.forEach(function (report) {
      var chip = el("span", "chip " + report.health, report.policy + ": " + report.summary);
      chip.dataset.policy = report.policy;
      policies.appendChild(chip);
    });
    cell(tr, route.why.join("; "), "why");
    return tr;
  });

  fill($("upstreams"), stats.upstreams, 8, function (upstream) {
    var tr = el("tr");
    tr.dataset.upstream = upstream.name;
    tr.dataset.health = upstream.health;
    cell(tr, upstream.name);
    cell(tr, "").appendChild(badge(upstream.health));
    cell(tr, upstream.available + " / " + upstream.total, "num");
    cell(tr, upstream.inFlight, "num");
    cell(tr, fixed(upstream.rate, 1), "num");
    cell(tr, percent(upstream.failureRatio), "num");
    var endpoints = cell(tr, "", "chips");
    upstream.endpoints.forEach(function (endpoint) {
      var health = !endpoint.healthy ? "red" : endpoint.ejected ? "amber" : "green";
      var text = endpoint.address + (endpoint.healthy ? "" : " unhealthy") + (endpoint.ejected ? " ejected until " + new Date(endpoint.ejectedUntil).toLocaleTimeString() : "") + " \\u00b7 " + endpoint.inFlight + " in flight";
      endpoints.appendChild(el("span", "chip " + health, text));
    });
    cell(tr, upstream.why.join("; "), "why");
    return tr;
  });

  var reports = [];
  stats.routes.forEach(function (route) { route.policies.forEach(function (report) { reports.push({ route: route.name, report: report }); }); });
  fill($("policies"), reports, 4, function (entry) {
    var tr = el("tr");
    tr.dataset.route = entry.route;
    tr.dataset.policy = entry.report.policy;
    tr.dataset.health = entry.report.health;
    cell(tr, entry.route);
    cell(tr, entry.report.policy);
    cell(tr, "").appendChild(badge(entry.report.health));
    cell(tr, entry.report.summary, "why");
    return tr;
  });
  $("updated").textContent = "updated " + new Date(stats.at).toLocaleTimeString();
}

function connect() {
  var source = new EventSource("stats/stream");
  var connection = $("connection");
  source.addEventListener("stats", function (event) {
    connection.textContent = "live";
    connection.className = "live";
    render(JSON.parse(event.data));
  });
  source.onerror = function () {
    connection.textContent = "reconnecting\\u2026";
    connection.className = "down";
  };
}
connect();
`

const BODY = `<header>
<h1>Waypost</h1>
<span id="summary"></span>
<span class="meta" id="window"></span>
<span class="meta" id="updated"></span>
<span id="connection" class="down">connecting\u2026</span>
</header>
<main>
<section><h2>Routes</h2><table>
<thead><tr><th>route</th><th>upstream</th><th>health</th><th class="num">req/s</th><th class="num">5xx</th><th class="num">p50 ms</th><th class="num">p95 ms</th><th class="num">p99 ms</th><th class="num">in flight</th><th>policies</th><th>why</th></tr></thead>
<tbody id="routes"></tbody></table></section>
<section><h2>Upstreams</h2><table>
<thead><tr><th>upstream</th><th>health</th><th class="num">available</th><th class="num">in flight</th><th class="num">attempts/s</th><th class="num">failed</th><th>endpoints</th><th>why</th></tr></thead>
<tbody id="upstreams"></tbody></table></section>
<section><h2>Policies (breakers, limits, caches)</h2><table>
<thead><tr><th>route</th><th>policy</th><th>health</th><th>state</th></tr></thead>
<tbody id="policies"></tbody></table></section>
</main>`

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text).digest('base64')}'`
}

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Waypost</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`

/** Only this page's own script and style, and connections back to where it came from. */
export const DASHBOARD_CSP = `default-src 'none'; script-src ${sha256(SCRIPT)}; style-src ${sha256(STYLE)}; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`
