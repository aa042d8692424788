// The mdeploy console: a client of the gateway's JSON API, nothing more. The API key lives in
// sessionStorage (this tab only, gone when it closes) and travels only as a Bearer header.
// This module signs in and out and routes #/... addresses to the pages' modules.

import { $, ApiError, KEY_ITEM, api, leave, show } from "./lib.js";
import { showKeys } from "./keys.js";
import { showModel } from "./model.js";
import { showModels } from "./models.js";

function showSignIn(message = "", isError = true) {
  show("sign-in-page");
  $("sign-in-error").className = isError ? "error" : "";
  $("sign-in-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

async function route() {
  const detail = location.hash.match(/^#\/models\/(.+)$/);
  if (detail) await showModel(decodeURIComponent(detail[1]));
  else if (location.hash === "#/keys") await showKeys();
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
  leave();
  $("search").value = "";
  $("models-table").querySelector("tbody").replaceChildren();
  showSignIn("Signed out.", false);
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  // Only the console's own routes (#/...) change the page: the skip link's #main does not.
  window.addEventListener("hashchange", () => {
    if (location.hash.startsWith("#/") && sessionStorage.getItem(KEY_ITEM)) enter();
  });
  if (sessionStorage.getItem(KEY_ITEM)) await enter();
  else showSignIn();
}

start();
