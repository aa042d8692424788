// Rollout actions for admin keys: canary, bandit, shadow, promote, roll back, delete a staged version.

import { $ } from "./lib.js";

/** Fills #rollout-section for one model; `context` is { name, admin, serving, refresh }. */
export async function showRollout(context) {
  $("rollout-section").hidden = true;
}
