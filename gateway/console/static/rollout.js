// Rollout actions for admin keys: canary, bandit, shadow, promote, roll back, delete a staged version.
// Every action is a call to the admin API, asked for with a confirmation first; its answer (or the
// API's refusal) goes to a live region, then the page reloads and the audit entry it made is shown.

import { $, actionButton, api, cell, confirmedCall, number, say, text, whenLeaving } from "./lib.js";

const BANDITS = [
  ["thompson", "Thompson sampling"],
  ["ucb1", "UCB1"],
  ["epsilon-greedy", "Epsilon-greedy (10% uniform)"],
];

// The model whose messages the live region holds: another model's page starts with it empty.
let shownFor = null;

// The section's parts: what serves and the action buttons (rebuilt on each refresh), the live region
// with the last action's outcome (kept across the refresh that action causes), the rollout form.
function parts() {
  let body = $("rollout-body");
  if (!body) {
    body = document.createElement("div");
    body.id = "rollout-body";
    const formBox = document.createElement("div");
    formBox.id = "rollout-form-box";
    $("rollout-title").after(body);
    $("rollout-section").append(formBox);
  }
  return { body, formBox: $("rollout-form-box") };
}

function outcome() {
  let box = $("rollout-outcome");
  if (!box) {
    box = document.createElement("div");
    box.id = "rollout-outcome";
    box.setAttribute("aria-live", "polite");
    const status = text("p", "");
    status.id = "rollout-status";
    status.tabIndex = -1;
    const audit = text("p", "", "rollout-audit");
    audit.id = "rollout-audit";
    box.append(status, audit);
    parts().body.after(box);
  }
  return { status: $("rollout-status"), audit: $("rollout-audit") };
}

function byNumber(versions) {
  return [...versions].sort((a, b) => Number(a) - Number(b));
}

function describeEvent(event) {
  const change = [event.from, event.to].filter((v) => v).join(" → ");
  const when = event.at ? new Date(event.at).toLocaleString() : "";
  return [
    `${event.action}${event.version ? ` v${event.version}` : ""}`,
    change,
    `by ${event.actor}${when ? ` at ${when}` : ""}`,
    event.reason ? `reason: ${event.reason}` : "",
  ]
    .filter(Boolean)
    .join(", ");
}

async function newestAuditId(name) {
  const answer = await api(`/v1/admin/audit?model=${encodeURIComponent(name)}&limit=1`);
  return answer.events[0]?.id ?? 0;
}

/** Asks, calls the API, says what it answered, reloads the page's data, and shows the audit entries
 * the call made. Cancelling changes nothing and says so. */
async function act(context, { title, message, confirmLabel, path, method, body, done }) {
  const { status, audit } = outcome();
  audit.textContent = "";
  // The newest audit entry before the call: the ones after it are what the call made.
  const before = await newestAuditId(context.name).catch(() => 0);
  const { confirmed, answer } = await confirmedCall(status, { title, message, confirmLabel }, path, {
    method,
    body,
    said: done,
  });
  if (!confirmed) {
    status.focus();
    return;
  }
  try {
    await context.refresh();
    if (answer) {
      const log = await api(`/v1/admin/audit?model=${encodeURIComponent(context.name)}&limit=10`);
      const made = log.events.filter((event) => event.id > before).reverse();
      audit.textContent = made.length
        ? `Recorded in the audit log: ${made.map(describeEvent).join("; ")}.`
        : "No audit entry was recorded for this change.";
    }
  } catch (error) {
    audit.className = "error";
    audit.textContent = `Could not reload the page: ${error.message}`;
    return;
  }
  audit.className = "rollout-audit";
  outcome().status.focus();
}

function armsTable(deployment) {
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  const table = document.createElement("table");
  table.id = "rollout-arms";
  const caption = text("caption", "Arms of the current deployment", "visually-hidden");
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  const columns = ["Version", "Role", "Configured share", "Traffic since the rollout", "Mean reward"];
  for (const column of columns) {
    const th = text("th", column);
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = document.createElement("tbody");
  for (const arm of deployment.arms) {
    const row = document.createElement("tr");
    row.dataset.version = arm.version;
    cell(row, "Version", text("strong", `v${arm.version}`));
    cell(row, "Role", `${arm.role}${arm.stable && arm.role !== "stable" ? " (stable)" : ""}`);
    cell(row, "Configured share", arm.weight === null ? "learned" : `${Math.round(arm.weight * 100)}%`);
    const share = arm.traffic_share === null ? "none" : `${Math.round(arm.traffic_share * 100)}%`;
    cell(row, "Traffic since the rollout", `${share} (${arm.pulls} requests)`);
    const interval = arm.reward_ci95 ? ` (95% CI ${number(arm.reward_ci95[0], 2)}–${number(arm.reward_ci95[1], 2)})` : "";
    cell(row, "Mean reward", arm.mean_reward === null ? "no feedback" : `${number(arm.mean_reward, 3)}${interval}, ${arm.rewards} rewards`);
    body.append(row);
  }
  table.append(caption, head, body);
  wrap.append(table);
  return wrap;
}

function field(id, label, control, hint) {
  const wrap = document.createElement("div");
  wrap.className = "field";
  const labelElement = text("label", label);
  labelElement.htmlFor = id;
  control.id = id;
  wrap.append(labelElement, control);
  if (hint) {
    const hintElement = text("span", hint, "hint");
    hintElement.id = `${id}-hint`;
    control.setAttribute("aria-describedby", hintElement.id);
    wrap.append(hintElement);
  }
  return wrap;
}

function select(options, chosen) {
  const element = document.createElement("select");
  for (const [value, label] of options) {
    const option = text("option", label);
    option.value = value;
    option.selected = value === chosen;
    element.append(option);
  }
  return element;
}

function numberInput(value, min, max) {
  const input = document.createElement("input");
  input.type = "number";
  input.min = String(min);
  if (max !== undefined) input.max = String(max);
  input.step = "any";
  input.required = true;
  input.value = String(value);
  return input;
}

function checkbox(id, label, checked) {
  const wrap = document.createElement("div");
  wrap.className = "check";
  const input = document.createElement("input");
  input.type = "checkbox";
  input.id = id;
  input.checked = checked;
  const labelElement = text("label", label);
  labelElement.htmlFor = id;
  wrap.append(input, labelElement);
  return { wrap, input };
}

function rolloutForm(context, deployment) {
  const versions = byNumber(deployment.live_versions);
  const form = document.createElement("form");
  form.id = "rollout-form";
  form.setAttribute("aria-labelledby", "rollout-form-title");
  const title = text("h4", "Start a rollout");
  title.id = "rollout-form-title";
  form.append(title);

  if (versions.length < 2) {
    form.append(text("p", "A rollout needs a second loaded version: push one (it is staged), then start a canary, bandit or shadow here.", "hint"));
    return form;
  }

  const kinds = document.createElement("fieldset");
  kinds.append(text("legend", "Kind"));
  const kindInputs = {};
  for (const [value, label] of [
    ["canary", "Canary: fixed weights"],
    ["bandit", "Bandit: learns from rewards"],
    ["shadow", "Shadow: the candidate gets copies"],
  ]) {
    const wrap = document.createElement("div");
    wrap.className = "check";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "rollout-kind";
    input.value = value;
    input.id = `rollout-kind-${value}`;
    input.checked = value === "canary";
    const labelElement = text("label", label);
    labelElement.htmlFor = input.id;
    wrap.append(input, labelElement);
    kinds.append(wrap);
    kindInputs[value] = input;
  }
  form.append(kinds);

  const stable = deployment.stable;
  const newest = versions.filter((v) => v !== stable).at(-1);
  const choices = versions.map((v) => [v, `v${v}`]);
  const stableSelect = select(choices, stable);
  const candidateSelect = select(choices, newest);
  const stableField = field("rollout-stable", "Stable version", stableSelect, "It answers now; a rollback returns to it.");
  const candidateField = field("rollout-candidate", "Candidate version", candidateSelect);

  const weights = document.createElement("div");
  weights.className = "rollout-pair";
  const stableWeight = numberInput(90, 0);
  const candidateWeight = numberInput(10, 0);
  weights.append(
    field("rollout-stable-weight", "Stable weight", stableWeight),
    field("rollout-candidate-weight", "Candidate weight", candidateWeight, "Any scale: 90 and 10 send 10% to the candidate."),
  );

  const arms = document.createElement("fieldset");
  arms.append(text("legend", "Bandit arms"));
  const armInputs = versions.map((v) => {
    const { wrap, input } = checkbox(`rollout-arm-${v}`, `v${v}`, v === stable || v === newest);
    input.value = v;
    arms.append(wrap);
    return input;
  });
  const banditSelect = select(BANDITS, "thompson");
  const banditField = field("rollout-bandit", "Bandit policy", banditSelect);

  const shadowShare = numberInput(100, 0, 100);
  const shadowField = field("rollout-shadow-share", "Requests copied to the candidate (%)", shadowShare);

  const guard = checkbox("rollout-guard", "Watch with the rollout guard (rolls back by itself when the candidate does worse)", true);
  const reason = document.createElement("input");
  reason.type = "text";
  reason.maxLength = 1000;
  const reasonField = field("rollout-reason", "Reason (kept in the audit log)", reason);
  const submit = text("button", "Start rollout…");
  submit.type = "submit";

  form.append(stableField, candidateField, weights, arms, banditField, shadowField, guard.wrap, reasonField, submit);

  const showKind = () => {
    const kind = Object.keys(kindInputs).find((k) => kindInputs[k].checked);
    candidateField.hidden = kind === "bandit";
    weights.hidden = kind !== "canary";
    arms.hidden = kind !== "bandit";
    banditField.hidden = kind !== "bandit";
    shadowField.hidden = kind !== "shadow";
    stableField.hidden = kind === "bandit";
  };
  for (const input of Object.values(kindInputs)) input.addEventListener("change", showKind);
  showKind();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = Object.keys(kindInputs).find((k) => kindInputs[k].checked);
    const a = stableSelect.value;
    const b = candidateSelect.value;
    let policy;
    let message;
    if (kind === "canary") {
      const wa = Number(stableWeight.value);
      const wb = Number(candidateWeight.value);
      policy = { kind: "canary", versions: [a, b], weights: { [a]: wa, [b]: wb } };
      const share = wa + wb > 0 ? Math.round((100 * wb) / (wa + wb)) : 0;
      message = `Send ${share}% of ${context.name}'s requests to v${b} and ${100 - share}% to v${a} (stable)?`;
    } else if (kind === "bandit") {
      const chosen = armInputs.filter((input) => input.checked).map((input) => input.value);
      policy = { kind: banditSelect.value, versions: chosen };
      message = `Let a ${banditSelect.selectedOptions[0].textContent} bandit split ${context.name}'s requests between ${chosen.map((v) => `v${v}`).join(", ")}?`;
    } else {
      const share = Number(shadowShare.value);
      policy = { kind: "shadow", versions: [a], candidate: b, shadow_share: share / 100 };
      message = `Keep v${a} answering ${context.name}'s requests and copy ${number(share, 3)}% of them to v${b}?`;
    }
    const body = { policy, guard: { enabled: guard.input.checked }, reason: reason.value.trim() || "console" };
    act(context, {
      title: "Start a rollout",
      message: `${message} This changes what serves the model now.`,
      confirmLabel: "Start rollout",
      method: "PUT",
      path: `/v1/admin/deployments/${encodeURIComponent(context.name)}`,
      body,
      done: (answer) => `Rollout started: ${context.name} now serves ${answer.serving.summary}.`,
    });
  });
  return form;
}

function actionButtons(context, deployment) {
  const name = context.name;
  const base = `/v1/admin/deployments/${encodeURIComponent(name)}`;
  const serving = deployment.serving;
  const box = document.createElement("div");
  box.className = "actions rollout-actions";
  const served = (answer) => `${name} now serves ${answer.serving.summary}.`;

  const back = actionButton("Roll back", `Roll back ${name}`, () =>
    act(context, {
      title: `Roll back ${name}`,
      message: `Return ${name} to what served before the last change (${deployment.can_roll_back_to})? All its traffic moves at once.`,
      confirmLabel: "Roll back",
      method: "POST",
      path: `${base}/rollback`,
      body: { reason: "console" },
      done: (answer) => `Rolled back: ${served(answer)}`,
    }),
  );
  back.id = "rollout-rollback";
  back.disabled = !deployment.can_roll_back_to;
  box.append(back);

  for (const version of byNumber(deployment.live_versions)) {
    if (version === serving.live_version) continue;
    const promote = actionButton(`Promote v${version}`, `Promote ${name} version ${version}`, () =>
      act(context, {
        title: `Promote ${name} v${version}`,
        message: `Make v${version} live: every request to ${name} that names no version goes to it, and any rollout ends.`,
        confirmLabel: "Promote",
        method: "POST",
        path: `${base}/promote`,
        body: { version, reason: "console" },
        done: (answer) => `Promoted v${version}: ${served(answer)}`,
      }),
    );
    promote.id = `rollout-promote-${version}`;
    box.append(promote);
  }
  for (const version of byNumber(serving.staged)) {
    const remove = actionButton(`Delete v${version}`, `Delete ${name} version ${version}`, () =>
      act(context, {
        title: `Delete ${name} v${version}`,
        message: `Retire staged version v${version} of ${name}? It is unloaded; its package stays in the registry's history.`,
        confirmLabel: "Delete",
        method: "DELETE",
        path: `/v1/admin/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}?reason=console`,
        done: () => `Deleted ${name} v${version}.`,
      }),
    );
    remove.id = `rollout-delete-${version}`;
    remove.classList.add("danger");
    box.append(remove);
  }
  const note = deployment.can_roll_back_to
    ? `Roll back returns to: ${deployment.can_roll_back_to}.`
    : "Nothing to roll back to: this has served since the first version went live.";
  const wrap = document.createElement("div");
  wrap.append(box, text("p", note, "hint"));
  return wrap;
}

/** Fills #rollout-section for one model; `context` is { name, admin, serving, refresh }. */
export async function showRollout(context) {
  const section = $("rollout-section");
  const { body, formBox } = parts();
  const { status, audit } = outcome();
  if (shownFor !== context.name) {
    say(status, "");
    audit.textContent = "";
    shownFor = context.name;
    // The next visit of the page starts without this one's messages.
    whenLeaving(() => {
      shownFor = null;
    });
  }
  if (!context.admin) {
    // Only admin keys may change a deployment (the API refuses the others with 403).
    body.replaceChildren();
    formBox.replaceChildren();
    section.hidden = true;
    return;
  }
  section.hidden = false;
  try {
    const deployment = await api(`/v1/admin/deployments/${encodeURIComponent(context.name)}`);
    const since = new Date(deployment.started_at * 1000).toLocaleString();
    const current = text("p", `Now: ${deployment.serving.summary}, since ${since}; guard ${deployment.guard.state}.`);
    current.id = "rollout-current";
    body.replaceChildren(current, armsTable(deployment), actionButtons(context, deployment));
    formBox.replaceChildren(rolloutForm(context, deployment));
  } catch (error) {
    body.replaceChildren(text("p", `Could not load the deployment: ${error.message}`, "error"));
    formBox.replaceChildren();
  }
}
