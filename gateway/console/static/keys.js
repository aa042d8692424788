// The keys page (#/keys, admin keys): list, create (the secret shown once), revoke.
//
// A new key's secret lives only in the text of the box that shows it: never in storage, the URL
// or the list, and the box is emptied whenever the page is left (or the user hides it).
// The key this tab is signed in with is not offered for revoking: that would end this session at
// once and, were it the last admin key, leave the API with no admin (only the host's
// `mdeploy keys` could help). Revoke it after signing in with another admin key.

import { $, actionButton, api, ApiError, cell, confirmedCall, KEY_ITEM, keyKind, say, show, text, whenLeaving } from "./lib.js";

/** The id of the key this tab is signed in with: keys read mdk_<16 hex digits>_<secret>. */
function ownKeyId() {
  return (sessionStorage.getItem(KEY_ITEM) ?? "").match(/^mdk_([0-9a-f]{16})_/)?.[1] ?? null;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

function keyLabel(key) {
  return key.name ? `“${key.name}” (${key.id})` : key.id;
}

function forgetSecret() {
  $("secret-value").textContent = "";
  $("secret-copy-status").textContent = "";
  $("secret-box").hidden = true;
}

function showSecret(secret) {
  $("secret-value").textContent = secret;
  $("secret-copy-status").textContent = "";
  $("secret-box").hidden = false;
  $("secret-title").focus();
}

async function copySecret() {
  const status = $("secret-copy-status");
  try {
    // Only in a secure context (https, or this host as localhost); else select it for Ctrl+C.
    if (!navigator.clipboard) throw new Error("no clipboard");
    await navigator.clipboard.writeText($("secret-value").textContent);
    say(status, "Copied to the clipboard.");
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("secret-value"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    say(status, "This browser did not let the page copy: the key is selected, press Ctrl+C (⌘C).", true);
  }
}

async function revoke(key, reload) {
  const ask = {
    title: `Revoke key ${keyLabel(key)}?`,
    message: `Every request with this key (${key.scopes.join(", ")}) is refused from now on. This cannot be undone.`,
    confirmLabel: "Revoke key",
    cancelled: `Kept key ${keyLabel(key)}: nothing was revoked.`,
  };
  const { confirmed } = await confirmedCall($("keys-action-status"), ask, `/v1/admin/keys/${encodeURIComponent(key.id)}`, {
    method: "DELETE",
    said: (answer) => `Revoked key ${keyLabel(answer)}.`,
  });
  if (!confirmed) return;
  await reload();
  $("keys-list-title").focus();
}

function renderKeys(keys, reload) {
  const body = $("keys-table").querySelector("tbody");
  body.replaceChildren();
  const own = ownKeyId();
  for (const key of [...keys].reverse()) {
    const row = document.createElement("tr");
    row.dataset.keyId = key.id;
    const name = cell(row, "Key", text("strong", key.name || "(no name)"));
    name.append(text("div", "", "description"));
    name.lastChild.append(text("code", key.id));
    cell(row, "Scopes", key.scopes.join(", "));
    cell(row, "Models", key.models === null ? "every model" : key.models.join(", ") || "none");
    cell(row, "Rate limit", key.rate_limit ?? "scopes' defaults");
    cell(row, "Created", when(key.created_at));
    cell(row, "Expires", when(key.expires_at));
    const state = cell(row, "Status", text("span", key.status, `key-${key.status}`));
    if (key.revoked_at) state.append(text("div", when(key.revoked_at), "description"));
    let action = text("span", "none (revoked)", "description");
    if (key.id === own) {
      state.append(text("div", "you are signed in with this key", "own-key"));
      if (key.status !== "revoked") {
        action = text("span", "Sign in with another admin key to revoke it.", "description");
      }
    } else if (key.status !== "revoked") {
      action = actionButton("Revoke", `Revoke key ${keyLabel(key)}`, () => revoke(key, reload));
    }
    cell(row, "Actions", action);
    body.append(row);
  }
}

async function create(event, reload) {
  event.preventDefault();
  const form = $("new-key-form");
  const status = $("new-key-status");
  forgetSecret();
  const body = {
    name: $("new-key-name").value.trim(),
    scopes: [...form.querySelectorAll("input[name='scope']:checked")].map((box) => box.value),
  };
  const models = $("new-key-models")
    .value.split(",")
    .map((name) => name.trim())
    .filter(Boolean);
  if (models.length) body.models = models;
  if ($("new-key-expiry").value.trim()) body.expires_at = $("new-key-expiry").value.trim();
  if ($("new-key-rate").value.trim()) body.rate_limit = $("new-key-rate").value.trim();
  $("new-key-create").disabled = true;
  say(status, "Creating…");
  try {
    const created = await api("/v1/admin/keys", { method: "POST", body });
    form.reset();
    say(status, `Created key ${keyLabel(created)} (${created.scopes.join(", ")}).`);
    showSecret(created.key);
  } catch (error) {
    say(status, error.message, true);
    return;
  } finally {
    $("new-key-create").disabled = false;
  }
  await reload();
}

export async function showKeys() {
  show("keys-page", "API keys");
  forgetSecret();
  whenLeaving(forgetSecret);
  for (const id of ["new-key-status", "keys-action-status"]) say($(id), "");
  await keyKind();
  const status = $("keys-status");
  const load = async () => {
    try {
      const answer = await api("/v1/admin/keys");
      renderKeys(answer.keys, load);
      const active = answer.keys.filter((key) => key.status === "active").length;
      say(status, `${answer.keys.length} key${answer.keys.length === 1 ? "" : "s"}, ${active} active`);
      $("keys-denied").hidden = true;
      $("keys-admin").hidden = false;
    } catch (error) {
      // A 401 (this key revoked or expired meanwhile) goes back to the sign-in page.
      if (error instanceof ApiError && error.status === 401) throw error;
      $("keys-table").querySelector("tbody").replaceChildren();
      if (error instanceof ApiError && error.status === 403) {
        say(status, "");
        $("keys-denied-answer").textContent = `The gateway answered: ${error.message}`;
        $("keys-admin").hidden = true;
        $("keys-denied").hidden = false;
      } else {
        say(status, error.message, true);
      }
    }
  };
  $("new-key-form").onsubmit = (event) => create(event, load);
  $("secret-copy").onclick = copySecret;
  $("secret-done").onclick = () => {
    forgetSecret();
    $("new-key-name").focus();
  };
  say(status, "Loading…");
  await load();
  $("keys-title").focus();
}
