// What every page of the console shares: the API client, page switching, and small DOM builders.
// DOM updates use textContent, never HTML strings, so the strict CSP has nothing inline to allow.

export const KEY_ITEM = "mdeploy.apiKey";
export const POLL_MS = 5000;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const $ = (id) => document.getElementById(id);

/** Calls the gateway's JSON API with this tab's key as a Bearer header; refusals throw ApiError
 * with the API's own message. `raw` returns the fetch Response (headers, timing) as well. */
export async function api(path, { key = sessionStorage.getItem(KEY_ITEM), method = "GET", body, raw = false } = {}) {
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
  return raw ? { payload, response: answer } : payload;
}

// Work a page leaves running (polling timers): stopped whenever another page is shown.
const onLeave = [];

export function whenLeaving(stop) {
  onLeave.push(stop);
}

export function leave() {
  for (const stop of onLeave.splice(0)) stop();
}

/** Calls `poll` now and every `everyMs` while the tab is visible (not while it is hidden; at once
 * when it shows again) until the page is left, or until the returned `stop` is called; then
 * `cleanUp` runs. */
export function pollWhileVisible(poll, everyMs, cleanUp = () => {}) {
  let timer = null;
  let running = true;
  const run = () => {
    clearInterval(timer);
    timer = null;
    if (running && document.visibilityState === "visible") {
      poll();
      timer = setInterval(poll, everyMs);
    }
  };
  const stop = () => {
    if (!running) return;
    running = false;
    clearInterval(timer);
    document.removeEventListener("visibilitychange", run);
    cleanUp();
  };
  document.addEventListener("visibilitychange", run);
  whenLeaving(stop);
  run();
  return stop;
}

/** Shows one page (a `main > section`), hides the others, and stops what the last one ran. */
export function show(page, title) {
  leave();
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== page;
  $("session").hidden = page === "sign-in-page";
  for (const link of document.querySelectorAll("#site-nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${title ?? (page === "sign-in-page" ? "Sign in" : "Models")} · mdeploy console`;
}

// The API is the only judge of what a key may do: ask it. A key without the admin scope
// gets 403 here, so it is shown no admin actions (and the API would refuse them anyway).
export async function isAdmin() {
  try {
    await api("/v1/admin/models");
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}

export async function keyKind() {
  const admin = await isAdmin();
  $("key-kind").textContent = admin ? "Signed in: admin key" : "Signed in: key without admin scope";
  for (const link of document.querySelectorAll("#site-nav .admin-only")) link.hidden = !admin;
  return admin;
}

export function cell(row, label, ...children) {
  const td = document.createElement("td");
  td.dataset.label = label;
  td.append(...children);
  row.append(td);
  return td;
}

export function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value;
  if (className) element.className = className;
  return element;
}

export function actionButton(label, accessibleName, onClick) {
  const button = text("button", label, "secondary");
  button.type = "button";
  button.setAttribute("aria-label", accessibleName);
  button.addEventListener("click", onClick);
  return button;
}

export function list(items) {
  const ul = document.createElement("ul");
  for (const item of items) ul.append(text("li", item));
  return ul;
}

export function number(value, digits = 4) {
  return value === null || value === undefined ? "n/a" : Number(value.toPrecision(digits)).toString();
}

export function bytes(size) {
  return size >= 1048576 ? `${(size / 1048576).toFixed(1)} MiB` : `${(size / 1024).toFixed(1)} KiB`;
}

export function verdict(passed, yes = "passed", no = "failed") {
  return text("span", passed ? yes : no, passed ? "passed" : "failed");
}

/** Shows a message in a live region: `error` paints it as a refusal. */
export function say(element, message, error = false) {
  element.className = error ? "error" : "";
  element.textContent = message;
}

/** Asks before a change: a modal <dialog> (focus stays inside, Escape cancels) that resolves to
 * true only when the user presses the confirm button. Cancel has the focus first, so an Enter
 * pressed by habit changes nothing. */
export function confirmAction(title, message, confirmLabel) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = message;
  $("confirm-ok").textContent = confirmLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

/** A change the user asked for: confirm first, then call the API and say in `status` what
 * `said(answer)` returns, or the API's refusal. Resolves to `{ confirmed, answer }`: `answer` is
 * null when the user cancelled (then `status` says `cancelled`) or the API refused. */
export async function confirmedCall(status, ask, path, { method = "POST", body, said }) {
  if (!(await confirmAction(ask.title, ask.message, ask.confirmLabel))) {
    say(status, ask.cancelled ?? "Cancelled: nothing was changed.");
    return { confirmed: false, answer: null };
  }
  say(status, "Working…");
  try {
    const answer = await api(path, { method, body });
    say(status, said(answer));
    return { confirmed: true, answer };
  } catch (error) {
    say(status, error instanceof ApiError ? `Refused: ${error.message}` : error.message, true);
    return { confirmed: true, answer: null };
  }
}
