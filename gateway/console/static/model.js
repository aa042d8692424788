// The model detail page (#/models/<name>): versions with provenance, parity, metrics and gates;
// live charts per version from the series route; the model's audit log.

import uPlot from "./vendor/uPlot.esm.js";
import { showDrift } from "./drift.js";
import { showRollout } from "./rollout.js";
import { showTryIt } from "./tryit.js";
import { $, POLL_MS, api, bytes, cell, keyKind, list, number, pollWhileVisible, show, text, verdict } from "./lib.js";

let poller = null;

function stopPolling() {
  poller?.stop();
}

function tensors(signature) {
  const line = (kind, t) => `${kind} ${t.name}: ${t.datatype} [${t.shape.join(", ")}]`;
  return list([
    ...signature.inputs.map((t) => line("in", t)),
    ...signature.outputs.map((t) => line("out", t)),
  ]);
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

// The traffic share reads the last 30 s only, so that it follows a rollout's new weights quickly.
const SHARE_BUCKETS = 3;

function summarise(spec, answer) {
  const share = (v) => recent(v.requests_per_s, SHARE_BUCKETS) ?? 0;
  const total = answer.versions.reduce((sum, v) => sum + share(v), 0);
  const parts = answer.versions.map((v) => {
    const values = spec.fields.map(([field, suffix]) => `${suffix ? `${suffix.trim()} ` : ""}${number(recent(v[field]), 3)}`);
    let line = `v${v.version}: ${values.join(", ")}${spec.unit ? ` ${spec.unit}` : ""}`;
    if (spec.id === "requests" && total > 0) line += ` (${Math.round((100 * share(v)) / total)}% of traffic in the last 30 s)`;
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

// uPlot draws at a fixed width: follow the window.
window.addEventListener("resize", fitCharts);

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
  const state = { charts, stop: null };
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
  poller = state;
  state.stop = pollWhileVisible(poll, POLL_MS, () => {
    for (const chart of charts.values()) chart.plot?.destroy();
    if (poller === state) poller = null;
  });
}

// The sections other modules fill (rollout actions, Try it, drift): each gets the context and
// shows its own errors, so one failing section leaves the rest of the page working.
const SECTIONS = [showRollout, showTryIt, showDrift];

async function loadModel(name, admin) {
  const serving = await loadVersions(name, admin);
  $("model-serving").textContent = `Serving: ${serving?.summary ?? "no version loaded"}; staged: ${serving?.staged?.length ? serving.staged.join(", ") : "none"}`;
  await loadAudit(name, admin);
  return serving;
}

export async function showModel(name) {
  show("model-page", name);
  $("model-title").textContent = name;
  const status = $("model-status");
  status.className = "";
  status.textContent = "Loading…";
  $("model-serving").textContent = "";
  $("versions-table").querySelector("tbody").replaceChildren();
  $("audit-table").querySelector("tbody").replaceChildren();
  const admin = await keyKind();
  startPolling(name);
  try {
    const serving = await loadModel(name, admin);
    status.textContent = "";
    // After an action: serving, versions and the audit log again (the new entry shows).
    const refresh = async () => {
      const now = await loadModel(name, admin);
      await Promise.all(SECTIONS.map((section) => section({ name, admin, serving: now, refresh })));
    };
    await Promise.all(SECTIONS.map((section) => section({ name, admin, serving, refresh })));
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
  $("model-title").focus();
}
