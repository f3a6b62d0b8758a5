// The profile tab: one's own profile, its fields and which of them are private.

import { api, guarded, state } from "./state.js";
import { $ } from "./view.js";

const FIELDS = ["nickname", "avatar", "region", "signature", "phone"];
const PRIVATE = ["region", "signature", "phone"];

export async function loadProfile() {
  await guarded("profile-error", async () => {
    const r = await api.call("profile.get");
    showProfile(r.profile);
  });
}

export function showProfile(p) {
  state.profiles.set(Number(p.uid), p);
  $("whoami").textContent = `${p.nickname || p.name} (${p.name})`;
  $("profile-name").textContent = p.name;
  $("profile-uid").textContent = p.uid;
  for (const f of FIELDS) $(`profile-${f}`).value = p[f] ?? "";
  for (const f of PRIVATE) $(`private-${f}`).checked = p.private_fields.includes(f);
}

$("profile-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("profile-saved").textContent = "";
  await guarded("profile-error", async () => {
    const body = {};
    for (const f of FIELDS) body[f] = $(`profile-${f}`).value.trim();
    body.private_fields = PRIVATE.filter((f) => $(`private-${f}`).checked);
    const r = await api.call("profile.update", body);
    showProfile(r.profile);
    $("profile-saved").textContent = "Saved.";
  });
});
