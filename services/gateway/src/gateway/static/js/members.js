// A shared conversation: its members dialog (list, add, remove, leave) and the
// "take over / hand back to the assistant" switch (docs/api.md, "Members").
import { api } from "./api.js";
import { getToken } from "./auth.js";
import { announce, statusLine } from "./notices.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// The caller's user id: the `sub` of the access token (not verified here: the server
// does), or null without one.
export function currentUser() {
  const token = getToken();
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).sub || null;
  } catch {
    return null;
  }
}

export class Members {
  // onShared(shared): authors are shown in a conversation with more than one person.
  // onLeft(): the caller left (or lost) the open conversation.
  constructor({ button, takeover, dialog, list, form, userInput, roleInput, onShared, onLeft }) {
    Object.assign(this, { button, takeover, dialog, list, form, userInput, roleInput });
    this.onShared = onShared;
    this.onLeft = onLeft;
    this.conversationId = null;
    this.role = null; // the caller's: owner, member or viewer
    this.assistant = "on";
    this.members = [];
    this.shared = false;
    button.addEventListener("click", () => this.open());
    takeover.addEventListener("click", () => this.toggleAssistant());
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.add();
    });
    this.show(null);
  }

  // The conversation just opened (null: none, or not stored yet).
  async show(conversation) {
    this.conversationId = conversation ? conversation.id : null;
    this.role = conversation ? conversation.role || "owner" : null;
    this.assistant = conversation?.assistant || "on";
    this.members = [];
    this.button.hidden = !conversation;
    this.renderSwitch();
    this.setShared(this.role !== null && this.role !== "owner");
    if (conversation) await this.load();
  }

  async load() {
    const id = this.conversationId;
    try {
      const body = await api.listMembers(id);
      if (id !== this.conversationId) return;
      this.members = body.members;
    } catch {
      return;
    }
    this.setShared(this.members.length > 1);
    this.render();
  }

  setShared(shared) {
    this.shared = shared;
    this.onShared(shared);
  }

  // What a frame or answer tells of the assistant's state in the open conversation.
  setAssistant(state) {
    if (!state || state === this.assistant) return;
    this.assistant = state;
    this.renderSwitch();
  }

  get sends() {
    return this.role === "owner" || this.role === "member";
  }

  renderSwitch() {
    const off = this.assistant === "off";
    this.takeover.hidden = !this.conversationId || !this.sends;
    this.takeover.setAttribute("aria-pressed", String(off));
    this.takeover.textContent = off ? "Hand back to the assistant" : "Take over";
    this.takeover.title = off
      ? "Messages are not answered by the assistant: a person answers"
      : "Stop the assistant's answers: a person answers";
  }

  async toggleAssistant() {
    const id = this.conversationId;
    const wanted = this.assistant === "off" ? "on" : "off";
    this.takeover.disabled = true;
    try {
      const body = await api.setAssistant(id, wanted);
      if (id !== this.conversationId) return;
      this.setAssistant(body.assistant || wanted);
      announce(wanted === "off" ? "You took over: the assistant does not answer." : "The assistant answers again.");
    } catch (err) {
      statusLine(`Could not switch the assistant: ${err.message}`, "error");
    } finally {
      this.takeover.disabled = false;
    }
  }

  async open() {
    this.render();
    this.form.hidden = this.role !== "owner";
    this.dialog.showModal();
    await this.load();
  }

  render() {
    const me = currentUser();
    const owner = this.role === "owner";
    const items = this.members.map((member) => {
      const li = el("li", "member");
      li.append(el("span", "member-name", member.user_id), el("span", "member-role", member.role));
      // The owner removes anyone else; a member or viewer may leave.
      const label = owner ? "Remove" : member.user_id === me ? "Leave" : null;
      if (member.role !== "owner" && label) {
        const remove = el("button", "member-remove", label);
        remove.type = "button";
        remove.setAttribute("aria-label", `${label}: ${member.user_id}`);
        remove.addEventListener("click", () => this.remove(member.user_id));
        li.append(remove);
      }
      return li;
    });
    this.list.replaceChildren(...items);
  }

  async add() {
    const userId = this.userInput.value.trim();
    if (!userId) return;
    try {
      await api.addMember(this.conversationId, userId, this.roleInput.value);
      this.userInput.value = "";
      announce(`${userId} added`);
      await this.load();
    } catch (err) {
      statusLine(`Could not add ${userId}: ${err.message}`, "error");
    }
  }

  async remove(userId) {
    try {
      await api.removeMember(this.conversationId, userId);
    } catch (err) {
      statusLine(`Could not remove ${userId}: ${err.message}`, "error");
      return;
    }
    if (this.role !== "owner") {
      this.dialog.close();
      this.onLeft();
      return;
    }
    announce(`${userId} removed`);
    await this.load();
  }
}
