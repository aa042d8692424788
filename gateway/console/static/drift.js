// The drift table with reference-versus-live histograms, and the reward interval.

import { $ } from "./lib.js";

/** Fills #drift-section for one model; `context` is { name, admin, serving, refresh }. */
export async function showDrift(context) {
  $("drift-section").hidden = true;
}
