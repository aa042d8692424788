// The mdeploy console: a client of the gateway's JSON API, nothing more. The API key lives in
// sessionStorage (this tab only, gone when it closes) and travels only as a Bearer header; DOM
// updates use textContent, never HTML strings, so the strict CSP has nothing inline to allow.

import uPlot from "./vendor/uPlot.esm.js";

const KEY_ITEM = "mdeploy.apiKey";
const POLL_MS = 5000;
const PAGES = ["sign-in-page", "models-page", "model-page"];

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const $ = (id) => document.getElementById(id);

async function api(path, { key = sessionStorage.getItem(KEY_ITEM), method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const payload = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    throw new ApiError(answer.status, payload.error || `the gateway answered ${answer.status}`);
  }
  return payload;
}

function show(page, title) {
  if (page !== "model-page") stopPolling();
  for (const id of PAGES) $(id).hidden = id !== page;
  $("session").hidden = page === "sign-in-page";
  document.title = `${title ?? (page === "sign-in-page" ? "Sign in" : "Models")} · mdeploy console`;
}

function showSignIn(message = "", isError = true) {
  show("sign-in-page");
  $("sign-in-error").className = isError ? "error" : "";
  $("sign-in-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

// The API is the only judge of what a key may do: ask it. A key without the admin scope
// gets 403 here, so it is shown no admin actions (and the API would refuse them anyway).
async function isAdmin() {
  try {
    await api("/v1/admin/models");
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}

function cell(row, label, ...children) {
  const td = document.createElement("td");
  td.dataset.label = label;
  td.append(...children);
  row.append(td);
  return td;
}

function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value;
  if (className) element.className = className;
  return element;
}

function actionButton(label, accessibleName, onClick) {
  const button = text("button", label, "secondary");
  button.type = "button";
  button.setAttribute("aria-label", accessibleName);
  button.addEventListener("click", onClick);
  return button;
}

async function act(path, body, done) {
  const status = $("action-status");
  status.className = "";
  try {
    const answer = await api(path, { method: "POST", body });
    status.textContent = `${answer.model ?? ""} now serves: ${answer.serving?.summary ?? "updated"}`;
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
  await done();
}

function renderModels(models, admin, reload) {
  const body = $("models-table").querySelector("tbody");
  body.replaceChildren();
  for (const th of document.querySelectorAll(".admin-column")) th.hidden = !admin;
  for (const model of models) {
    const row = document.createElement("tr");
    const link = text("a", model.name);
    link.href = `#/models/${encodeURIComponent(model.name)}`;
    const strong = document.createElement("strong");
    strong.append(link);
    const name = cell(row, "Model", strong);
    for (const match of model.matches ?? []) {
      name.append(text("div", `v${match.version} (${match.role}): ${match.summary ?? ""}`, "description"));
    }
    cell(row, "Serving", model.serving.summary);
    cell(row, "Staged", model.serving.staged.length ? model.serving.staged.join(", ") : "none");
    cell(row, "Versions", model.versions.join(", "));
    if (admin) {
      const actions = document.createElement("div");
      actions.className = "actions";
      const base = `/v1/admin/deployments/${encodeURIComponent(model.name)}`;
      for (const version of model.serving.staged) {
        actions.append(
          actionButton(`Promote ${version}`, `Promote ${model.name} version ${version}`, () =>
            act(`${base}/promote`, { version, reason: "console" }, reload),
          ),
        );
      }
      actions.append(
        actionButton("Roll back", `Roll back ${model.name}`, () => act(`${base}/rollback`, { reason: "console" }, reload)),
      );
      cell(row, "Actions", actions);
    }
    body.append(row);
  }
}

async function showModels() {
  show("models-page");
  const status = $("models-status");
  const admin = await isAdmin();
  $("key-kind").textContent = admin ? "Signed in: admin key" : "Signed in: key without admin scope";
  $("admin-note").hidden = !admin;
  const load = async () => {
    const query = $("search").value.trim();
    status.className = "";
    status.textContent = "Loading…";
    try {
      const answer = await api(query ? `/v1/models?q=${encodeURIComponent(query)}` : "/v1/models");
      renderModels(answer.models, admin, load);
      const count = answer.models.length;
      const found = query ? ` matching “${query}”` : "";
      status.textContent = `${count} model${count === 1 ? "" : "s"}${found}`;
    } catch (error) {
      status.className = "error";
      status.textContent = error.message;
    }
  };
  $("search-form").onsubmit = (event) => {
    event.preventDefault();
    $("action-status").textContent = "";
    load();
  };
  await load();
  $("models-title").focus();
}

// ---- the model detail page: #/models/<name> ----

let poller = null;

function stopPolling() {
  if (poller) {
    clearInterval(poller.timer);
    document.removeEventListener("visibilitychange", poller.onVisibility);
    for (const chart of poller.charts.values()) chart.plot?.destroy();
    poller = null;
  }
}

function list(items) {
  const ul = document.createElement("ul");
  for (const item of items) ul.append(text("li", item));
  return ul;
}

function tensors(signature) {
  const line = (kind, t) => `${kind} ${t.name}: ${t.datatype} [${t.shape.join(", ")}]`;
  return list([
    ...signature.inputs.map((t) => line("in", t)),
    ...signature.outputs.map((t) => line("out", t)),
  ]);
}

function number(value, digits = 4) {
  return value === null || value === undefined ? "n/a" : Number(value.toPrecision(digits)).toString();
}

function bytes(size) {
  return size >= 1048576 ? `${(size / 1048576).toFixed(1)} MiB` : `${(size / 1024).toFixed(1)} KiB`;
}

function verdict(passed, yes = "passed", no = "failed") {
  return text("span", passed ? yes : no, passed ? "passed" : "failed");
}

function versionRow(body, report, signature) {
  const row = document.createElement("tr");
  const head = cell(row, "Version", text("strong", `v${report.version}`));
  head.append(text("div", [report.role ?? report.state, report.package_version ? `package ${report.package_version}` : ""].filter(Boolean).join(", "), "description"));
  const manifest = report.manifest;
  if (!manifest) {
    cell(row, "Digest and size", text("span", "needs an admin key", "description"));
    cell(row, "Signature", tensors(signature));
    for (const label of ["Provenance", "Parity", "Metrics and gates"]) {
      cell(row, label, text("span", "needs an admin key", "description"));
    }
    body.append(row);
    return;
  }
  const digest = cell(row, "Digest and size", text("code", `sha256:${report.digest}`, "digest"));
  digest.append(text("div", `${bytes(report.size)} (${report.size} bytes)`, "description"));
  cell(row, "Signature", tensors(manifest.signature));
  const provenance = manifest.provenance;
  const commit = provenance.code_commit ? `${provenance.code_commit}${provenance.code_dirty ? " (dirty)" : ""}` : "not recorded";
  const data = (provenance.data ?? []).map((d) => `data ${d.path} sha256:${d.sha256}`);
  cell(row, "Provenance", list([
    `commit ${commit}`,
    `parent ${provenance.parent_digest ? `sha256:${provenance.parent_digest}` : "none"}`,
    ...(data.length ? data : ["no data hashes recorded"]),
    `made ${provenance.created_at ?? "?"} by ${provenance.created_by ?? "?"}`,
  ]));
  const parity = manifest.parity;
  const parityCell = cell(row, "Parity", verdict(parity.passed));
  parityCell.append(list([
    `${parity.rows} rows, tolerance ${number(parity.tolerance)}`,
    `max abs error ${number(parity.max_abs_error)}`,
    `max rel error ${number(parity.max_rel_error)}`,
  ]));
  const metrics = Object.entries(manifest.metrics ?? {}).map(([k, v]) => `${k} ${number(v)} (packaged)`);
  const latest = report.evaluations?.[0];
  if (latest) {
    for (const [k, v] of Object.entries(latest.metrics)) metrics.push(`${k} ${number(v)} (evaluated, ${latest.rows} rows)`);
    for (const gate of latest.gates) {
      metrics.push(`gate ${gate.gate}: ${gate.passed ? "passed" : "failed"}${gate.reason ? ` (${gate.reason})` : ""}`);
    }
  } else {
    metrics.push("no evaluation yet");
  }
  cell(row, "Metrics and gates", list(metrics));
  body.append(row);
}

async function loadVersions(name, admin) {
  const body = $("versions-table").querySelector("tbody");
  body.replaceChildren();
  $("versions-note").hidden = admin;
  if (!admin) {
    const model = await api(`/v2/models/${encodeURIComponent(name)}`);
    for (const version of model.versions) {
      const arm = model.serving?.arms?.find((a) => a.version === version);
      const role = arm ? arm.role : model.serving?.staged?.includes(version) ? "staged" : null;
      versionRow(body, { version, role, state: "" }, model);
    }
    return model.serving;
  }
  const model = await api(`/v1/admin/models/${encodeURIComponent(name)}`);
  const reports = await Promise.all(
    model.versions.map((v) =>
      api(`/v1/admin/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(v.version)}`).catch(() => v),
    ),
  );
  for (const report of reports) versionRow(body, report, { inputs: [], outputs: [] });
  return model.serving;
}

async function loadAudit(name, admin) {
  const body = $("audit-table").querySelector("tbody");
  body.replaceChildren();
  $("audit-note").hidden = admin;
  $("audit-table").hidden = !admin;
  if (!admin) return;
  const answer = await api(`/v1/admin/audit?model=${encodeURIComponent(name)}&limit=50`);
  for (const event of answer.events) {
    const row = document.createElement("tr");
    cell(row, "When", event.at ? new Date(event.at).toLocaleString() : "");
    cell(row, "Action", text("strong", event.action));
    cell(row, "Version", event.version ?? "");
    cell(row, "Change", [event.from, event.to].filter((v) => v).join(" → "));
    cell(row, "Actor", event.actor);
    cell(row, "Reason", event.reason);
    body.append(row);
  }
  if (!answer.events.length) {
    const row = document.createElement("tr");
    cell(row, "When", "No changes recorded.");
    body.append(row);
  }
}

const PALETTE = ["#0a5bd3", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#57606a"];

// Each chart: a title, which fields of a version's series it draws, the unit, and how its text
// summary reads a version's recent buckets.
const CHARTS = [
  { id: "requests", title: "Requests per second (traffic share)", fields: [["requests_per_s", ""]], unit: "req/s" },
  { id: "latency", title: "Latency p50 / p99 (ms)", fields: [["p50_ms", " p50"], ["p99_ms", " p99"]], unit: "ms" },
  { id: "errors", title: "Errors per second (5xx)", fields: [["errors_per_s", ""]], unit: "err/s" },
  { id: "reward", title: "Mean feedback reward", fields: [["reward_mean", ""]], unit: "" },
];

// The mean over the last minute's buckets (the last one still fills), nulls left out.
function recent(values, buckets = 6) {
  const seen = values.slice(-buckets).filter((v) => v !== null && v !== undefined);
  return seen.length ? seen.reduce((a, b) => a + b, 0) / seen.length : null;
}

function summarise(spec, answer) {
  const total = answer.versions.reduce((sum, v) => sum + (recent(v.requests_per_s) ?? 0), 0);
  const parts = answer.versions.map((v) => {
    const values = spec.fields.map(([field, suffix]) => `${suffix ? `${suffix.trim()} ` : ""}${number(recent(v[field]), 3)}`);
    let line = `v${v.version}: ${values.join(", ")}${spec.unit ? ` ${spec.unit}` : ""}`;
    if (spec.id === "requests" && total > 0) line += ` (${Math.round((100 * (recent(v.requests_per_s) ?? 0)) / total)}% of traffic)`;
    return line;
  });
  return `Last minute: ${parts.length ? parts.join("; ") : "no versions loaded"}.`;
}

function chartData(spec, answer) {
  const data = [answer.starts];
  const series = [{}];
  answer.versions.forEach((v, i) => {
    spec.fields.forEach(([field, suffix], j) => {
      data.push(v[field]);
      series.push({
        label: `v${v.version}${suffix}`,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        dash: j ? [6, 4] : undefined,
        spanGaps: false,
        // Latency and reward have gaps (buckets without requests or feedback): dots show lone values.
        points: spec.id === "latency" || spec.id === "reward" ? { show: true, size: 5 } : {},
      });
    });
  });
  return { data, series };
}

function chartFigure(spec) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.id = `chart-${spec.id}`;
  const caption = text("figcaption", spec.title);
  caption.id = `chart-${spec.id}-title`;
  const summary = text("p", "Loading…", "summary");
  summary.id = `chart-${spec.id}-summary`;
  const plot = document.createElement("div");
  plot.className = "plot";
  // The drawing is for sighted users; the summary above says the same in words.
  plot.setAttribute("aria-hidden", "true");
  figure.setAttribute("aria-labelledby", caption.id);
  figure.setAttribute("aria-describedby", summary.id);
  figure.append(caption, summary, plot);
  return { figure, summary, plot };
}

function drawCharts(charts, answer) {
  for (const spec of CHARTS) {
    const chart = charts.get(spec.id);
    chart.summary.textContent = summarise(spec, answer);
    const { data, series } = chartData(spec, answer);
    const key = series.map((s) => s.label).join("|");
    const width = Math.max(chart.plotElement.clientWidth, 200);
    if (chart.plot_key !== key || !chart.plot) {
      chart.plot?.destroy();
      chart.plot = new uPlot(
        {
          width,
          height: 200,
          series,
          scales: { x: { time: true } },
          axes: [{}, { size: 55 }],
          legend: { show: true },
        },
        data,
        chart.plotElement,
      );
      chart.plot_key = key;
    } else {
      if (Math.abs(chart.plot.width - width) > 2) chart.plot.setSize({ width, height: 200 });
      chart.plot.setData(data);
    }
  }
}

function fitCharts() {
  for (const chart of poller?.charts.values() ?? []) {
    if (chart.plot) chart.plot.setSize({ width: Math.max(chart.plotElement.clientWidth, 200), height: 200 });
  }
}

function startPolling(name) {
  stopPolling();
  const container = $("charts");
  container.replaceChildren();
  const charts = new Map();
  for (const spec of CHARTS) {
    const { figure, summary, plot } = chartFigure(spec);
    container.append(figure);
    charts.set(spec.id, { summary, plotElement: plot, plot: null, plot_key: null });
  }
  const state = { charts, timer: null, onVisibility: null };
  const status = $("charts-status");
  const poll = async () => {
    try {
      const answer = await api(`/v1/models/${encodeURIComponent(name)}/series?window=1h`);
      if (poller !== state) return; // the page was left while the answer travelled
      status.className = "";
      status.textContent = "";
      drawCharts(charts, answer);
    } catch (error) {
      if (poller !== state) return;
      status.className = "error";
      status.textContent = `Could not load the series: ${error.message}`;
    }
  };
  const run = () => {
    clearInterval(state.timer);
    state.timer = null;
    if (document.visibilityState === "visible") {
      poll();
      state.timer = setInterval(poll, POLL_MS);
    }
  };
  state.onVisibility = run;
  document.addEventListener("visibilitychange", run);
  poller = state;
  run();
}

async function showModel(name) {
  show("model-page", name);
  $("model-title").textContent = name;
  const status = $("model-status");
  status.className = "";
  status.textContent = "Loading…";
  $("model-serving").textContent = "";
  $("versions-table").querySelector("tbody").replaceChildren();
  $("audit-table").querySelector("tbody").replaceChildren();
  const admin = await isAdmin();
  $("key-kind").textContent = admin ? "Signed in: admin key" : "Signed in: key without admin scope";
  startPolling(name);
  try {
    const serving = await loadVersions(name, admin);
    $("model-serving").textContent = `Serving: ${serving?.summary ?? "no version loaded"}; staged: ${serving?.staged?.length ? serving.staged.join(", ") : "none"}`;
    await loadAudit(name, admin);
    status.textContent = "";
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
  $("model-title").focus();
}

async function route() {
  const detail = location.hash.match(/^#\/models\/(.+)$/);
  if (detail) await showModel(decodeURIComponent(detail[1]));
  else await showModels();
}

async function enter() {
  try {
    await route();
  } catch (error) {
    sessionStorage.removeItem(KEY_ITEM);
    showSignIn(`Please sign in again: ${error.message}`);
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  try {
    await api("/v1/models", { key });
  } catch (error) {
    const refused = error instanceof ApiError && error.status === 401;
    showSignIn(refused ? `The gateway refused this key: ${error.message}` : `Sign-in failed: ${error.message}`);
    return;
  }
  sessionStorage.setItem(KEY_ITEM, key);
  await enter();
}

function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
  stopPolling();
  $("search").value = "";
  $("models-table").querySelector("tbody").replaceChildren();
  showSignIn("Signed out.", false);
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  // Only the console's own routes (#/...) change the page: the skip link's #main does not.
  window.addEventListener("resize", fitCharts);
  window.addEventListener("hashchange", () => {
    if (location.hash.startsWith("#/") && sessionStorage.getItem(KEY_ITEM)) enter();
  });
  if (sessionStorage.getItem(KEY_ITEM)) await enter();
  else showSignIn();
}

start();
