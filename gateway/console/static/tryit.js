// Try it: a prediction form from the model's signature, pre-filled with rows from the package's
// samples; it shows the answer, the version that answered, the request id and the latency, and
// sends a reward for that request. Only the public API is used, so a predict-only key works too.

import { $, ApiError, api, say } from "./lib.js";

const SAMPLE_ROWS = 3;
const MAX_ANSWER_CHARS = 20000; // a large answer is cut here: the page stays responsive

// The model the section is built for; answers that arrive after it changed are dropped.
let current = null;
let listening = false;

const path = (name) => `/v1/models/${encodeURIComponent(name)}`;

/** Fills #try-section for one model; `context` is { name, admin, serving, refresh }. */
export async function showTryIt(context) {
  $("try-section").hidden = false;
  listen();
  // After an action on this page (the same `refresh`): keep what the user typed and the last
  // answer. A new visit, another model or another key starts afresh.
  const fresh = current?.name !== context.name || current.refresh !== context.refresh;
  const state = fresh ? { name: context.name, refresh: context.refresh, requestId: null, prefilled: null } : current;
  current = state;
  if (fresh) reset(context.name);
  try {
    const model = await api(`/v2/models/${encodeURIComponent(context.name)}`);
    if (current !== state) return;
    versionChoices(model, context.serving ?? model.serving);
    $("try-signature").textContent = signatureText(model);
    say($("try-load-status"), "");
    if (fresh) await prefill(state, model);
  } catch (error) {
    if (current !== state) return;
    say($("try-load-status"), `Could not load the model for Try it: ${error.message}`, true);
  }
}

function reset(name) {
  $("try-model-name").textContent = name;
  $("try-body").value = "";
  $("try-body").removeAttribute("aria-invalid");
  $("try-version").replaceChildren();
  $("try-signature").textContent = "";
  $("try-result").hidden = true;
  say($("try-error"), "");
  say($("feedback-status"), "");
  say($("try-load-status"), "Loading the signature and samples…");
}

// The handlers are set once: the elements stay, only the model they act on changes.
function listen() {
  if (listening) return;
  listening = true;
  $("try-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("try-body").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      send();
    }
  });
  $("try-body").addEventListener("input", () => $("try-body").removeAttribute("aria-invalid"));
  $("try-version").addEventListener("change", () => {
    // A body still as pre-filled follows the version; one the user edited stays.
    if (current && $("try-body").value === current.prefilled) prefill(current);
  });
  $("try-reload").addEventListener("click", () => current && prefill(current));
  $("feedback-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendFeedback();
  });
}

function versionChoices(model, serving) {
  const select = $("try-version");
  const chosen = select.value;
  const routed = new Option(`As routed (${serving?.summary ?? "the default version"})`, "");
  const named = model.versions.map((version) => {
    const arm = serving?.arms?.find((a) => a.version === version);
    const role = arm ? arm.role : serving?.staged?.includes(version) ? "staged" : null;
    return new Option(role ? `v${version} (${role})` : `v${version}`, version);
  });
  select.replaceChildren(routed, ...named);
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function signatureText(model) {
  const line = (t) => `${t.name} ${t.datatype} [${t.shape.join(", ")}]`;
  return `Inputs: ${model.inputs.map(line).join("; ")}. Outputs: ${model.outputs.map(line).join("; ")}.`;
}

async function prefill(state, model) {
  const version = $("try-version").value;
  const query = new URLSearchParams({ rows: String(SAMPLE_ROWS) });
  if (version) query.set("version", version);
  try {
    const samples = await api(`${path(state.name)}/samples?${query}`);
    if (current !== state) return;
    const body = samples.instances ? { instances: samples.instances } : { inputs: samples.inputs };
    state.prefilled = bodyText(body);
    $("try-body-hint").textContent =
      `Pre-filled with ${samples.rows} row${samples.rows === 1 ? "" : "s"} of version ${samples.version}'s ` +
      "package samples. Ctrl+Enter sends.";
  } catch (error) {
    if (current !== state) return;
    if (!model) {
      say($("try-load-status"), `Could not load the samples: ${error.message}`, true);
      return;
    }
    // No samples to show: a template from the signature, one row of zeros.
    state.prefilled = bodyText({ instances: [templateRow(model.inputs)] });
    $("try-body-hint").textContent = `The samples could not be loaded (${error.message}): a template from the signature.`;
  }
  $("try-body").value = state.prefilled;
  $("try-body").removeAttribute("aria-invalid");
}

function templateRow(inputs) {
  const zeros = (shape, datatype) =>
    shape.length ? Array.from({ length: Math.max(shape[0], 1) }, () => zeros(shape.slice(1), datatype)) : datatype === "BYTES" ? "" : 0;
  if (inputs.length === 1) return zeros(inputs[0].shape.slice(1), inputs[0].datatype);
  return Object.fromEntries(inputs.map((t) => [t.name, zeros(t.shape.slice(1), t.datatype)]));
}

// One row a line: the editor stays short and each example is easy to find.
function bodyText(body) {
  const [[field, value]] = Object.entries(body);
  if (!Array.isArray(value)) return JSON.stringify(body, null, 2);
  return `{\n  "${field}": [\n${value.map((row) => `    ${JSON.stringify(row)}`).join(",\n")}\n  ]\n}`;
}

// Pretty JSON with arrays of plain values kept on one line (probabilities, pixel rows).
function pretty(value, indent = "") {
  const plain = (v) => v === null || typeof v !== "object";
  if (plain(value)) return JSON.stringify(value);
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.every(plain)) return `[${value.map((v) => JSON.stringify(v)).join(", ")}]`;
    return `[\n${value.map((v) => inner + pretty(v, inner)).join(",\n")}\n${indent}]`;
  }
  const entries = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pretty(v, inner)}`);
  return entries.length ? `{\n${entries.join(",\n")}\n${indent}}` : "{}";
}

function bounded(textValue) {
  if (textValue.length <= MAX_ANSWER_CHARS) return textValue;
  return `${textValue.slice(0, MAX_ANSWER_CHARS)}\n… (${textValue.length - MAX_ANSWER_CHARS} more characters not shown)`;
}

async function send() {
  const state = current;
  if (!state) return;
  const editor = $("try-body");
  const error = $("try-error");
  let body;
  try {
    body = JSON.parse(editor.value);
  } catch (problem) {
    editor.setAttribute("aria-invalid", "true");
    say(error, `The request body is not valid JSON, so nothing was sent: ${problem.message}`, true);
    editor.focus();
    return;
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    editor.setAttribute("aria-invalid", "true");
    say(error, 'The request body must be a JSON object, such as {"instances": [...]}; nothing was sent.', true);
    editor.focus();
    return;
  }
  editor.removeAttribute("aria-invalid");
  say(error, "");
  const version = $("try-version").value;
  const target = version
    ? `${path(state.name)}/versions/${encodeURIComponent(version)}:predict`
    : `${path(state.name)}:predict`;
  const button = $("try-send");
  button.disabled = true;
  const started = performance.now();
  try {
    const { payload, response } = await api(target, { method: "POST", body, raw: true });
    const elapsed = performance.now() - started;
    if (current !== state) return;
    showAnswer(state, payload, response, elapsed);
  } catch (problem) {
    if (current !== state) return;
    const refused = problem instanceof ApiError;
    say(error, refused ? `The gateway refused the prediction (${problem.status}): ${problem.message}` : `The prediction failed: ${problem.message}`, true);
  } finally {
    button.disabled = false;
  }
}

function showAnswer(state, payload, response, elapsed) {
  const answeredBy = response.headers.get("x-model-version") ?? payload.model_version ?? "unknown";
  state.requestId = response.headers.get("x-request-id");
  $("try-answered-version").textContent = `v${answeredBy}`;
  $("try-request-id").textContent = state.requestId ?? "none given";
  $("try-latency").textContent = `${Math.round(elapsed)} ms`;
  // Server-Timing, where the gateway (or a proxy in front) sends one: its own share of the time.
  const timing = response.headers.get("server-timing");
  $("try-server-time-item").hidden = !timing;
  $("try-server-time").textContent = timing ?? "";
  $("try-answer").textContent = bounded(pretty(payload));
  say($("try-summary"), `Answered by version ${answeredBy} in ${Math.round(elapsed)} ms.`);
  say($("feedback-status"), "");
  $("feedback-send").disabled = !state.requestId;
  $("try-result").hidden = false;
}

async function sendFeedback() {
  const state = current;
  const status = $("feedback-status");
  if (!state?.requestId) {
    say(status, "Send a prediction first: feedback is for a request id.", true);
    return;
  }
  const field = $("try-reward");
  const reward = field.valueAsNumber;
  if (field.value.trim() === "" || !Number.isFinite(reward)) {
    say(status, "The reward must be a number, such as 1 for a right answer and 0 for a wrong one.", true);
    field.focus();
    return;
  }
  const requestId = state.requestId;
  const button = $("feedback-send");
  button.disabled = true;
  try {
    const receipt = await api(`${path(state.name)}/feedback`, { method: "POST", body: { request_id: requestId, reward } });
    if (current !== state) return;
    say(
      status,
      receipt.counted
        ? `Feedback counted: reward ${reward} for version ${receipt.version} (request ${requestId}).`
        : `Feedback not counted for request ${requestId}.`,
      !receipt.counted,
    );
  } catch (problem) {
    if (current !== state) return;
    const refused = problem instanceof ApiError;
    say(status, refused ? `Feedback not counted (${problem.status}): ${problem.message}` : `Feedback failed: ${problem.message}`, true);
  } finally {
    button.disabled = false;
  }
}
