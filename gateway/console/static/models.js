// The models page: every model this key may call, a search box, and (admin keys) promote and
// roll back.

import { $, actionButton, api, cell, keyKind, say, show, text } from "./lib.js";

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

export async function showModels() {
  show("models-page");
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
