// The mdeploy console: a client of the gateway's JSON API, nothing more. The API key lives in
// sessionStorage (this tab only, gone when it closes) and travels only as a Bearer header; DOM
// updates use textContent, never HTML strings, so the strict CSP has nothing inline to allow.

const KEY_ITEM = "mdeploy.apiKey";

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

function show(page) {
  for (const id of ["sign-in-page", "models-page"]) $(id).hidden = id !== page;
  $("session").hidden = page === "sign-in-page";
  document.title = `${page === "sign-in-page" ? "Sign in" : "Models"} · mdeploy console`;
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
    const name = cell(row, "Model", text("strong", model.name));
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

async function enter() {
  try {
    await showModels();
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
  $("search").value = "";
  $("models-table").querySelector("tbody").replaceChildren();
  showSignIn("Signed out.", false);
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  if (sessionStorage.getItem(KEY_ITEM)) await enter();
  else showSignIn();
}

start();
