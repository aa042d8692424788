// The keys page (#/keys, admin keys): list, create (the secret shown once), revoke.

import { show } from "./lib.js";

export async function showKeys() {
  show("keys-page", "API keys");
}
