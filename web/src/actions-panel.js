// What the agent's client actions look like on the page, and the audit list of every one of them.

import { byId, el } from "./dom.js";

const MAX_CARDS = 20;
const MAX_AUDIT_ROWS = 200;

export class ActionsPanel {
  constructor() {
    this._list = byId("actions");
    this._empty = byId("actions-empty");
    this._rows = byId("audit-rows");
    this._count = byId("audit-count");
    this._audited = 0;
  }

  /** A link the user may follow (never opened on the agent's say-so alone). */
  showLink({ id, url, label }) {
    const host = new URL(url).hostname;
    const link = el("a", {
      text: label || url,
      attrs: { href: url, target: "_blank", rel: "noopener noreferrer", referrerpolicy: "no-referrer" },
    });
    this._add(id, "link", [el("p", { className: "card-kind", text: `Link to ${host}` }), link]);
  }

  showChecklist({ id, title, items }) {
    const list = el("ul", { className: "checklist" });
    items.forEach((item, n) => {
      const box = el("input", { attrs: { type: "checkbox", id: `check-${id}-${n}` } });
      const label = el("label", { text: item, attrs: { for: box.id } });
      const entry = el("li");
      entry.append(box, label);
      list.append(entry);
    });
    this._add(id, "checklist", [el("h3", { text: title }), list]);
  }

  /** One audit row: time, id, action, outcome, reason (all as text). */
  audit({ id, action, outcome, reason }) {
    const row = el("tr");
    row.dataset.outcome = outcome;
    row.dataset.id = id ?? "";
    const time = new Date().toLocaleTimeString([], { hour12: false });
    for (const value of [time, id ?? "—", action ?? "—", outcome, reason ?? ""]) {
      row.append(el("td", { text: value }));
    }
    this._rows.append(row);
    while (this._rows.children.length > MAX_AUDIT_ROWS) this._rows.firstElementChild.remove();
    this._audited += 1;
    this._count.textContent = String(this._audited);
  }

  clear() {
    this._list.replaceChildren();
    this._rows.replaceChildren();
    this._audited = 0;
    this._count.textContent = "0";
    this._empty.hidden = false;
  }

  _add(id, kind, children) {
    const card = el("li", { className: `action-card ${kind}` });
    card.dataset.actionId = id;
    card.append(...children);
    this._list.prepend(card);
    while (this._list.children.length > MAX_CARDS) this._list.lastElementChild.remove();
    this._empty.hidden = true;
  }
}
