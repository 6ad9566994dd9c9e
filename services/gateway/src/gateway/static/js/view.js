// The message list: one bubble per message, re-rendered from its record.
import { clockTime, plural } from "./format.js";
import { renderMarkdown } from "./markdown.js";

const STATE_LABELS = {
  sending: "sending…",
  waiting: "waiting to send",
  failed: "failed",
  cancelled: "stopped",
  interrupted: "interrupted",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// The cursor goes at the end of the last line of text, inside its block.
function cursorHost(content) {
  const last = content.lastElementChild;
  if (!last) return content;
  if (last.tagName === "UL" || last.tagName === "OL") return last.lastElementChild || last;
  if (last.tagName === "PRE") return last.firstElementChild || last;
  return last;
}

export class MessageList {
  // onSwitch(rec, id): show the branch of sibling `id`; onEdit(rec), onRegenerate(rec).
  // onRate(rec, rating): "up", "down" or null (taken back); onComment(rec).
  constructor(
    root,
    { onRetry, onSwitch = null, onEdit = null, onRegenerate = null, onRate = null, onComment = null },
  ) {
    this.root = root;
    this.onRetry = onRetry;
    this.onSwitch = onSwitch;
    this.onEdit = onEdit;
    this.onRegenerate = onRegenerate;
    this.onRate = onRate;
    this.onComment = onComment;
    this.records = new Map();
    this.pending = new Set();
    this.frame = 0;
    this.showAuthors = false; // a shared conversation: who wrote each user message
  }

  setShowAuthors(on) {
    if (on === this.showAuthors) return;
    this.showAuthors = on;
    for (const rec of this.records.values()) this.renderMeta(rec);
  }

  clear(emptyText) {
    this.records.clear();
    this.pending.clear();
    this.root.replaceChildren();
    if (emptyText) this.root.append(el("li", "empty", emptyText));
  }

  get(id) {
    return this.records.get(id);
  }

  all() {
    return [...this.records.values()];
  }

  // A message record: {id, role, content, status, created_at, model, provider, usage, note,
  // error, parent_id, siblings, feedback}.
  add(record) {
    this.root.querySelector(".empty")?.remove();
    const li = el("li", `message ${record.role}`);
    li.dataset.id = record.id;
    const bubble = el("div", "bubble");
    const content = el("div", "content");
    bubble.append(content);
    li.append(bubble, el("div", "meta"));
    const rec = { content: "", status: "complete", ...record, li };
    this.records.set(rec.id, rec);
    const stick = this.nearBottom();
    this.root.append(li);
    this.render(rec);
    if (stick || record.role === "user") this.scrollToEnd();
    return rec;
  }

  nearBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight < 80;
  }

  scrollToEnd() {
    this.root.scrollTop = this.root.scrollHeight;
  }

  // Tokens arrive faster than frames: render at most once per animation frame.
  update(rec) {
    this.pending.add(rec);
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const stick = this.nearBottom();
      for (const r of this.pending) this.render(r);
      this.pending.clear();
      if (stick) this.scrollToEnd();
    });
  }

  render(rec) {
    const { li } = rec;
    if (!li.isConnected && !this.records.has(rec.id)) return;
    li.dataset.status = rec.status;
    const content = li.querySelector(".content");
    if (rec.role === "user") {
      content.textContent = rec.content;
      this.renderImages(rec);
    } else {
      content.innerHTML = renderMarkdown(rec.content);
      if (rec.status === "streaming") {
        const cursor = el("span", "cursor");
        cursor.setAttribute("aria-hidden", "true");
        cursorHost(content).append(cursor);
      }
    }
    li.setAttribute("aria-busy", rec.status === "streaming" ? "true" : "false");
    this.renderMeta(rec);
  }

  // A user message's images: from history and this tab with their bytes; from another
  // tab by name only (their bytes come with the history).
  renderImages(rec) {
    rec.li.querySelector(".images")?.remove();
    const images = rec.attachments || [];
    if (!images.length) return;
    const box = el("div", "images");
    images.forEach((a, index) => {
      if (a.data) {
        const img = el("img");
        img.src = `data:${a.media_type};base64,${a.data}`;
        img.alt = `Image ${index + 1} of the message`;
        box.append(img);
      } else {
        box.append(el("span", "image-placeholder", `[image ${index + 1}: ${a.media_type}]`));
      }
    });
    rec.li.querySelector(".bubble").append(box);
  }

  renderMeta(rec) {
    const meta = rec.li.querySelector(".meta");
    const parts = [];
    if (this.showAuthors && rec.role === "user" && rec.user_id) {
      parts.push(el("span", "author", rec.user_id));
    }
    const time = el("time", "", clockTime(rec.created_at));
    if (rec.created_at) time.dateTime = rec.created_at;
    parts.push(time);
    if (rec.role === "assistant" && (rec.provider || rec.model)) {
      const who = [rec.provider, rec.model].filter(Boolean).join(" · ");
      const model = el("span", "model", who);
      model.title = "provider · model";
      parts.push(model);
    }
    if (rec.usage) {
      const u = rec.usage;
      const usage = el("span", "usage", plural(u.total_tokens, "token"));
      usage.title = `${u.prompt_tokens} prompt + ${u.completion_tokens} completion`;
      parts.push(usage);
    }
    const label = rec.phase || STATE_LABELS[rec.status];
    if (label) {
      const kind = rec.status === "failed" ? "failed" : rec.status === "cancelled" ? "stopped" : "";
      parts.push(el("span", `state ${kind}`.trim(), label));
    }
    if (rec.note) parts.push(el("span", "note", rec.note));
    if (rec.error) parts.push(el("span", "state failed", rec.error));
    if (rec.retry) {
      const button = el("button", "retry", "Retry");
      button.type = "button";
      const what = rec.role === "user" ? `sending: ${rec.content.slice(0, 60)}` : "this answer";
      button.setAttribute("aria-label", `Retry ${what}`);
      button.addEventListener("click", () => this.onRetry(rec));
      parts.push(button);
    }
    parts.push(...this.branchControls(rec));
    parts.push(...this.feedbackControls(rec));
    meta.replaceChildren(...parts);
  }

  // Like / dislike on a finished answer (pressed: the caller's rating; pressed again:
  // taken back), and a comment once rated.
  feedbackControls(rec) {
    if (!this.onRate || rec.role !== "assistant" || rec.status !== "complete") return [];
    const rating = rec.feedback ? rec.feedback.rating : null;
    const group = el("span", "feedback");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Feedback on this answer");
    const rate = (value, text, label) => {
      const button = el("button", `rate rate-${value}`, text);
      button.type = "button";
      button.setAttribute("aria-label", label);
      button.setAttribute("aria-pressed", String(rating === value));
      button.addEventListener("click", () => this.onRate(rec, rating === value ? null : value));
      return button;
    };
    group.append(rate("up", "👍", "Good answer"), rate("down", "👎", "Bad answer"));
    if (rating && this.onComment) {
      const comment = rec.feedback.comment;
      const button = el("button", "comment", comment ? "Edit comment" : "Comment");
      button.type = "button";
      button.setAttribute("aria-label", comment ? "Edit your comment" : "Comment on this answer");
      button.addEventListener("click", () => this.onComment(rec));
      group.append(button);
      if (comment) {
        const said = el("q", "feedback-comment", comment);
        said.title = "Your comment";
        group.append(said);
      }
    }
    return [group];
  }

  // "‹ 2/3 ›" between the versions of a turn, edit on questions, regenerate on answers.
  branchControls(rec) {
    const controls = [];
    const sib = rec.siblings;
    if (this.onSwitch && sib && sib.count > 1) {
      const nav = el("span", "siblings");
      nav.setAttribute("role", "group");
      nav.setAttribute("aria-label", "Versions of this message");
      const step = (delta, text, label) => {
        const button = el("button", "sibling", text);
        button.type = "button";
        button.setAttribute("aria-label", label);
        const target = sib.ids[sib.index + delta];
        button.disabled = target === undefined;
        button.addEventListener("click", () => this.onSwitch(rec, target));
        return button;
      };
      nav.append(
        step(-1, "‹", "Previous version"),
        el("span", "sibling-count", `${sib.index + 1}/${sib.count}`),
        step(1, "›", "Next version"),
      );
      controls.push(nav);
    }
    const final = !["streaming", "sending", "waiting"].includes(rec.status);
    if (this.onEdit && rec.role === "user" && final && rec.status !== "failed") {
      const edit = el("button", "edit", "Edit");
      edit.type = "button";
      edit.setAttribute("aria-label", `Edit: ${rec.content.slice(0, 60)}`);
      edit.addEventListener("click", () => this.onEdit(rec));
      controls.push(edit);
    }
    if (this.onRegenerate && rec.role === "assistant" && final && rec.parent_id) {
      const again = el("button", "regenerate", "Regenerate");
      again.type = "button";
      again.setAttribute("aria-label", "Regenerate this answer");
      again.addEventListener("click", () => this.onRegenerate(rec));
      controls.push(again);
    }
    return controls;
  }

  // The records from `id` on (a branch replaced from there), in order.
  from(id) {
    const all = this.all();
    const at = all.findIndex((r) => r.id === id);
    return at < 0 ? [] : all.slice(at);
  }

  remove(id) {
    const rec = this.records.get(id);
    if (rec) {
      rec.li.remove();
      this.records.delete(id);
    }
  }
}
