// The drift table with reference-versus-live histograms, and the reward interval.
//
// Drift describes other clients' inputs, so its route needs the admin scope: a key without it
// gets a note and no calls (the browser would log each refusal). The reward interval comes from
// the deployment status (admin too); the reward chart above shows the mean to every key.

import uPlot from "./vendor/uPlot.esm.js";
import { $, api, cell, number, pollWhileVisible, text } from "./lib.js";

const DRIFT_MS = 30000;
const TOP = 8;
const HIST = { width: 240, height: 64 };
const COLOURS = { reference: "#57606a", live: "#d1242f" };

let poller = null;

function stopPolling() {
  poller?.stop();
}

const percent = (share) => `${Math.round(share * 100)}%`;

/** What bin `i` of a feature holds, in words, from the report's cut points. */
function binLabel(edges, i, bins) {
  if (edges.length !== bins - 1) return `bin ${i + 1}`;
  if (bins === 1) return "all values";
  if (i === 0) return `below ${number(edges[0], 3)}`;
  if (i === bins - 1) return `${number(edges[bins - 2], 3)} and above`;
  return `${number(edges[i - 1], 3)} to ${number(edges[i], 3)}`;
}

/** The histogram's text alternative: the bins live traffic gained and lost most against the reference. */
export function describeShift(feature) {
  const bins = feature.reference_shares.length;
  const moves = feature.live_shares.map((live, i) => ({ i, live, reference: feature.reference_shares[i] ?? 0 }));
  moves.sort((a, b) => b.live - b.reference - (a.live - a.reference));
  const gained = moves[0];
  const lost = moves[moves.length - 1];
  const phrase = (m) => `${binLabel(feature.edges ?? [], m.i, bins)} (live ${percent(m.live)}, reference ${percent(m.reference)})`;
  if (!gained || Math.abs(gained.live - gained.reference) < 0.01 && Math.abs(lost.live - lost.reference) < 0.01) {
    return `Live values fall in the same ${bins} bins as the reference's, within a percentage point.`;
  }
  return `Live values gained most in ${phrase(gained)} and lost most in ${phrase(lost)}.`;
}

function histogram(container, feature, plots) {
  const bins = feature.reference_shares.length;
  const x = Array.from({ length: bins }, (_, i) => i);
  const top = Math.max(...feature.reference_shares, ...feature.live_shares, 0.01);
  // Side by side in each bin: the reference's bar on the left, live traffic's on the right.
  const bar = (align) => uPlot.paths.bars({ size: [0.42, Infinity], align, gap: 0 });
  const plot = new uPlot(
    {
      ...HIST,
      legend: { show: false },
      cursor: { show: false },
      select: { show: false },
      padding: [4, 4, 0, 4],
      scales: { x: { time: false, range: [-0.5, bins - 0.5] }, y: { range: [0, top * 1.1] } },
      axes: [{ show: false }, { show: false }],
      series: [
        {},
        { label: "reference", fill: COLOURS.reference, stroke: COLOURS.reference, paths: bar(-1), points: { show: false } },
        { label: "live", fill: COLOURS.live, stroke: COLOURS.live, paths: bar(1), points: { show: false } },
      ],
    },
    [x, feature.reference_shares, feature.live_shares],
    container,
  );
  plots.push(plot);
}

function featureRow(body, feature, plots) {
  const row = document.createElement("tr");
  const name = cell(row, "Feature", text("code", feature.name));
  name.append(text("div", feature.side, "description"));
  cell(row, "PSI", number(feature.psi, 3));
  cell(row, "KS", number(feature.ks, 3));
  cell(row, "Drifted", feature.drifted ? text("span", "drifted", "failed") : text("span", "no", "passed"));
  const figure = document.createElement("figure");
  figure.className = "histogram";
  const drawing = document.createElement("div");
  drawing.className = "plot";
  // The bars are for sighted users; the sentence under them says what they show.
  drawing.setAttribute("aria-hidden", "true");
  const words = text("p", describeShift(feature), "description");
  figure.append(drawing, words);
  cell(row, "Reference vs live", figure);
  body.append(row);
  histogram(drawing, feature, plots);
}

const STATUS = {
  "no reference": "No reference: this version's package has no reference profile (packages made before " +
    "profiles, or built without reference rows), so there is nothing to compare its traffic with.",
  "no traffic": "No traffic: no sampled requests reached this version in this window yet, so there is " +
    "nothing to compare with its reference.",
};

function statusLine(report) {
  if (STATUS[report.status]) return STATUS[report.status];
  const drifted = report.features.filter((f) => f.drifted).length;
  const verdict = report.status === "drift" ? `${drifted} of ${report.features.length} features drifted` : "no feature drifted";
  const classes = report.classes_js === null ? "" : `; predicted classes' JS distance ${number(report.classes_js, 3)}`;
  return `${verdict} (mean PSI ${number(report.score, 3)}${classes}), over ${report.rows} sampled live rows against ${report.reference_rows} reference rows.`;
}

function versionBlock(container, arm, report, plots) {
  const block = document.createElement("section");
  block.className = "drift-version";
  const title = text("h4", `v${arm.version} (${arm.role})`);
  title.id = `drift-v${arm.version}-title`;
  block.setAttribute("aria-labelledby", title.id);
  block.append(title, text("p", statusLine(report), report.status === "drift" ? "drift-status failed" : "drift-status"));
  container.append(block);
  if (!report.features.length) return;
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  const table = document.createElement("table");
  table.className = "drift-table";
  const caption = text("caption", `v${arm.version}: the ${Math.min(TOP, report.features.length)} features that moved most, by PSI`);
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  for (const label of ["Feature", "PSI", "KS", "Drifted", "Reference vs live"]) {
    const th = text("th", label);
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = document.createElement("tbody");
  table.append(caption, head, body);
  wrap.append(table);
  block.append(wrap);
  for (const feature of report.features.slice(0, TOP)) featureRow(body, feature, plots);
}

function windowChoice(windows, chosen, onChange) {
  const select = $("drift-window");
  if (windows.length && [...select.options].map((o) => o.value).join() !== windows.join()) {
    select.replaceChildren(...windows.map((w) => text("option", w)));
    for (const option of select.options) option.value = option.textContent;
  }
  if (chosen) select.value = chosen;
  select.onchange = onChange;
}

async function pollDrift(context, state) {
  const status = $("drift-status");
  const window = $("drift-window").value;
  const arms = context.serving?.arms ?? [];
  try {
    const reports = await Promise.all(
      arms.map((arm) => {
        const query = new URLSearchParams({ version: arm.version });
        if (window) query.set("window", window);
        return api(`/v1/models/${encodeURIComponent(context.name)}/drift?${query}`);
      }),
    );
    if (poller !== state) return; // the page was left while the answers travelled
    for (const plot of state.plots.splice(0)) plot.destroy();
    const container = $("drift-versions");
    container.replaceChildren();
    arms.forEach((arm, i) => versionBlock(container, arm, reports[i], state.plots));
    if (reports.length) windowChoice(reports[0].windows ?? [], reports[0].window, () => pollDrift(context, state));
    status.className = "";
    status.textContent = arms.length ? `Window ${reports[0].window}, read ${new Date().toLocaleTimeString()}.` : "No version is serving.";
  } catch (error) {
    if (poller !== state) return;
    status.className = "error";
    status.textContent = `Could not load drift: ${error.message}`;
  }
}

function interval(arm) {
  if (!arm.rewards) return `v${arm.version}: no feedback yet`;
  const [low, high] = arm.reward_ci95 ?? [null, null];
  const range = arm.rewards < 2 ? "interval needs 2 rewards" : `95% interval ${number(low, 3)} to ${number(high, 3)}`;
  return `v${arm.version}: mean ${number(arm.mean_reward, 3)}, ${range} (n = ${arm.rewards})`;
}

async function pollReward(context, state) {
  const line = $("reward-interval");
  try {
    const status = await api(`/v1/admin/deployments/${encodeURIComponent(context.name)}`);
    if (poller !== state) return;
    line.className = "";
    line.textContent = `Reward since the current rollout began: ${status.arms.map(interval).join("; ")}.`;
  } catch (error) {
    if (poller !== state) return;
    line.className = "error";
    line.textContent = `Could not load the reward interval: ${error.message}`;
  }
}

function build(section) {
  if ($("drift-versions")) return;
  const hint = text(
    "p",
    "Each serving version's live inputs and outputs against the reference profile packaged with it: " +
      `the ${TOP} features that moved most by PSI (population stability index; above 0.2 is a large move), ` +
      "KS distance, and a histogram of the reference's share (grey, left bar) and live traffic's share " +
      "(red, right bar) in each bin. Refreshed every 30 s while this page is open.",
    "hint",
  );
  const note = text("p", "", "admin");
  note.id = "drift-admin-note";
  note.append(
    "Drift describes other clients' inputs, so it needs a key with the ",
    text("code", "admin"),
    " scope; so does the reward's interval. This key sees the reward chart above.",
  );
  const form = document.createElement("div");
  form.className = "drift-controls";
  const label = text("label", "Window");
  label.htmlFor = "drift-window";
  const select = document.createElement("select");
  select.id = "drift-window";
  form.append(label, select);
  const status = text("p", "");
  status.id = "drift-status";
  status.setAttribute("role", "status");
  const versions = document.createElement("div");
  versions.id = "drift-versions";
  section.append(hint, note, form, status, versions);
}

/** Fills #drift-section for one model; `context` is { name, admin, serving, refresh }. */
export async function showDrift(context) {
  stopPolling();
  const section = $("drift-section");
  build(section);
  section.hidden = false;
  $("drift-admin-note").hidden = context.admin;
  for (const id of ["drift-versions", "drift-status"]) $(id).replaceChildren();
  $("drift-window").parentElement.hidden = !context.admin;
  const reward = $("reward-interval");
  reward.className = "";
  if (!context.admin) {
    reward.textContent = "The reward's 95% interval per version comes from the deployment status, which needs an admin key.";
    return;
  }
  reward.textContent = "Loading the reward interval…";
  const state = { stop: null, plots: [] };
  const poll = () => Promise.all([pollDrift(context, state), pollReward(context, state)]);
  poller = state;
  state.stop = pollWhileVisible(poll, DRIFT_MS, () => {
    for (const plot of state.plots.splice(0)) plot.destroy();
    if (poller === state) poller = null;
  });
}
