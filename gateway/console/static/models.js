// The models page: every model this key may call, a search box, and (admin keys) promote and
// roll back.

import { $, actionButton, api, cell, confirmedCall, keyKind, number, pollWhileVisible, show, text } from "./lib.js";

// Every change is confirmed first; the table is reloaded after any call.
async function act(path, body, done, [title, message, confirmLabel]) {
  const { confirmed } = await confirmedCall($("action-status"), { title, message, confirmLabel }, path, {
    body,
    said: (answer) => `${answer.model ?? ""} now serves: ${answer.serving?.summary ?? "updated"}`,
  });
  if (confirmed) await done();
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
    glanceCells(row, model.name);
    if (admin) {
      const actions = document.createElement("div");
      actions.className = "actions";
      const base = `/v1/admin/deployments/${encodeURIComponent(model.name)}`;
      for (const version of model.serving.staged) {
        actions.append(
          actionButton(`Promote ${version}`, `Promote ${model.name} version ${version}`, () =>
            act(`${base}/promote`, { version, reason: "console" }, reload, [
              `Promote ${model.name} v${version}`,
              `Make v${version} live: every request to ${model.name} that names no version goes to it.`,
              "Promote",
            ]),
          ),
        );
      }
      actions.append(
        actionButton("Roll back", `Roll back ${model.name}`, () =>
          act(`${base}/rollback`, { reason: "console" }, reload, [
            `Roll back ${model.name}`,
            `Return ${model.name} to what served before its last change? All its traffic moves at once.`,
            "Roll back",
          ]),
        ),
      );
      cell(row, "Actions", actions);
    }
    body.append(row);
  }
}

export async function showModels() {
  show("models-page");
  startGlance();
  const status = $("models-status");
  const admin = await keyKind();
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

// At a glance: every model's request rate, p99 and error rate over the last 5 minutes, from one
// cheap read for all models (GET /v1/series/summary), refreshed every 10 s while this page is
// shown and the tab visible; stopped when the page is left.
const GLANCE_MS = 10000;
const GLANCE_COLUMNS = [
  ["Requests/s (5 min)", "requests_per_s", (value) => number(value, 3)],
  ["p99 latency (5 min)", "p99_ms", (value) => (value === null ? "n/a" : `${number(value, 3)} ms`)],
  ["Error rate (5 min)", "error_rate", (value) => (value === null ? "n/a" : `${number(value * 100, 3)}%`)],
];
let glance = new Map();

function glanceCells(row, name) {
  row.dataset.model = name;
  for (const [label, key] of GLANCE_COLUMNS) cell(row, label).dataset.glance = key;
  paintGlance(row);
}

function paintGlance(row) {
  const found = glance.get(row.dataset.model);
  for (const [, key, format] of GLANCE_COLUMNS) {
    const td = row.querySelector(`td[data-glance="${key}"]`);
    if (!found) {
      td.replaceChildren(text("span", "…", "glance-value"));
      continue;
    }
    const value = text("span", format(found[key]), "glance-value");
    if (key === "error_rate" && found[key] > 0) value.classList.add("failed");
    td.replaceChildren(value);
    if (found.versions.length > 1) {
      for (const arm of found.versions) td.append(text("div", `v${arm.version}: ${format(arm[key])}`, "description"));
    }
  }
}

function startGlance() {
  glance = new Map();
  const table = $("models-table");
  let stopped = false;
  const refresh = async () => {
    try {
      const answer = await api("/v1/series/summary?window=5m");
      if (stopped) return; // the page was left while the answer travelled
      glance = new Map(answer.models.map((model) => [model.model, model]));
      for (const row of table.querySelectorAll("tbody tr[data-model]")) paintGlance(row);
      table.dataset.glanceRefreshes = String(Number(table.dataset.glanceRefreshes ?? 0) + 1);
    } catch {
      // A refusal or a gateway restart: the table keeps the last numbers, the next refresh retries.
    }
  };
  pollWhileVisible(refresh, GLANCE_MS, () => {
    stopped = true;
  });
}
