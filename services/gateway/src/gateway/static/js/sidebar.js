// The conversation manager: list (newest first, as the server sorts it), search,
// open, rename, delete.
import { api } from "./api.js";
import { plural, relativeTime } from "./format.js";

export function displayTitle(conversation) {
  return (conversation.title || "").trim() || "Untitled conversation";
}

// A conversation's action: `label` names it, and the conversation for screen readers.
function actionButton(className, label, title, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.setAttribute("aria-label", `${label} “${title}”`);
  button.addEventListener("click", onClick);
  return button;
}

export class Sidebar {
  constructor({ list, status, search, onOpen, onRename, onDelete, onError }) {
    this.list = list;
    this.status = status;
    this.search = search;
    this.onOpen = onOpen;
    this.onRename = onRename;
    this.onDelete = onDelete;
    this.onError = onError;
    this.conversations = [];
    this.currentId = null;
    this.loading = null;
    this.searchTimer = 0;
    search.addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.refresh(), 250);
    });
    // Relative times move on.
    setInterval(() => this.render(), 30000);
  }

  find(id) {
    return this.conversations.find((c) => c.id === id);
  }

  async refresh() {
    const q = this.search.value.trim();
    const loading = api.listConversations(q);
    this.loading = loading;
    try {
      const body = await loading;
      if (this.loading !== loading) return;
      this.conversations = body.conversations || [];
      this.status.textContent = this.conversations.length
        ? ""
        : q
          ? `No conversation matches “${q}”.`
          : "No conversations yet.";
    } catch (err) {
      if (this.loading !== loading) return;
      this.status.textContent = `Conversations unavailable: ${err.message}`;
      this.onError(err);
    }
    this.render();
  }

  setCurrent(id) {
    this.currentId = id;
    for (const li of this.list.children) {
      li.setAttribute("aria-current", String(li.dataset.id === id));
    }
  }

  render() {
    // Keep keyboard focus on the same control across a re-render.
    const active = document.activeElement;
    const focusedLi = active && this.list.contains(active) ? active.closest("li") : null;
    const focus = focusedLi ? [focusedLi.dataset.id, active.className] : null;
    const now = Date.now();
    const items = this.conversations.map((c) => {
      const li = document.createElement("li");
      li.className = "conversation";
      li.dataset.id = c.id;
      li.setAttribute("aria-current", String(c.id === this.currentId));
      const title = displayTitle(c);

      const open = document.createElement("button");
      open.type = "button";
      open.className = "open";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = title;
      const facts = document.createElement("span");
      facts.className = "facts";
      const time = document.createElement("time");
      time.dateTime = c.updated_at;
      time.textContent = relativeTime(c.updated_at, now);
      time.title = new Date(c.updated_at).toLocaleString();
      facts.append(
        `${plural(c.message_count || 0, "message")} · ${plural(c.total_tokens || 0, "token")} · `,
        time,
      );
      if (c.unread_count > 0 && c.id !== this.currentId) {
        const unread = document.createElement("span");
        unread.className = "unread";
        unread.textContent = `${c.unread_count} unread`;
        facts.append(" · ", unread);
      }
      open.append(name, facts);
      open.addEventListener("click", () => this.onOpen(c.id));

      const actions = document.createElement("div");
      actions.className = "actions";
      actions.append(
        actionButton("rename", "Rename", title, () => this.onRename(c)),
        actionButton("delete", "Delete", title, () => this.onDelete(c)),
      );

      li.append(open, actions);
      return li;
    });
    this.list.replaceChildren(...items);
    if (focus) {
      const li = items.find((item) => item.dataset.id === focus[0]);
      const again = li?.getElementsByClassName(focus[1])[0];
      (again || this.search).focus();
    }
  }
}
