// The tabs: which one shows, and what each loads when it is shown.

import { badge, on, state } from "./state.js";
import { refreshContacts } from "./contacts.js";
import { renderChats } from "./chats.js";
import { reloadFeed } from "./moments.js";
import { refreshWallet } from "./wallet.js";

export function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === tab);
  }
  for (const s of document.querySelectorAll("main#app > section.tab")) {
    s.hidden = s.id !== `tab-${tab}`;
  }
  if (tab === "moments") {
    badge("badge-moments", "");
    reloadFeed();
  } else if (tab === "contacts") {
    refreshContacts();
  } else if (tab === "chats") {
    renderChats();
  } else if (tab === "wallet") {
    refreshWallet();
  }
}

for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}

on("show-tab", showTab);
