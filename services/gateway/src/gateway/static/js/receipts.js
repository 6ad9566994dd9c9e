// Read receipts: the page marks the newest message it shows as read while it is
// visible, and shows under a message who else has read up to it ("Seen by bob").
//
// The read goes as PUT …/read (whatever the transport): its answer names the
// caller, which tells the page whose reads are "others'", and a 404 tells that
// memory has not stored a just-finished answer yet (the read is tried again).
import { api } from "./api.js";

const FINAL = new Set(["complete", "cancelled", "failed", "interrupted"]);
const RETRIES = 8;

// Stored, as far as the page knows: a user message the server echoed, an answer that ended.
function stored(rec) {
  return rec.role === "user" ? rec.status === "complete" : FINAL.has(rec.status);
}

export class ReadReceipts {
  // `current()`: the id of the conversation shown (null: a new one, not sent yet).
  constructor(list, current) {
    this.list = list; // the MessageList
    this.current = current;
    this.me = null; // the caller's user id, from the first read's answer
    this.readBy = new Map(); // user id -> the last message they read (this conversation)
    this.sent = new Map(); // conversation id -> the message this page marked read last
    document.addEventListener("visibilitychange", () => this.markNewest());
  }

  // The token changed: the caller may be someone else.
  reset() {
    this.me = null;
    this.sent.clear();
    this.render();
  }

  // A conversation was opened (or a new one started): who has read what in it, as stored.
  show(readBy = {}) {
    this.readBy = new Map(Object.entries(readBy || {}));
    this.render();
  }

  // A live `read` frame of the open conversation.
  onRead(ev) {
    if (!ev.message_id || !ev.user_id || ev.conversation_id !== this.current()) return;
    this.readBy.set(ev.user_id, ev.message_id);
    this.render();
  }

  // The newest stored message shown is read, if the page is seen and it is new.
  markNewest() {
    const conversationId = this.current();
    if (!conversationId || document.visibilityState !== "visible") return;
    const newest = this.list
      .all()
      .reverse()
      .find((rec) => stored(rec));
    if (!newest || this.sent.get(conversationId) === newest.id) return;
    this.sent.set(conversationId, newest.id);
    this.put(conversationId, newest.id, 0);
  }

  async put(conversationId, messageId, attempt) {
    try {
      const body = await api.markRead(conversationId, messageId);
      if (this.me !== body.user_id) {
        this.me = body.user_id;
        this.render();
      }
    } catch (err) {
      const current = this.sent.get(conversationId) === messageId;
      if (err.status === 404 && current && attempt < RETRIES) {
        // Not stored yet (memory follows the answer's end by a moment).
        setTimeout(() => this.put(conversationId, messageId, attempt + 1), 250 * 2 ** attempt);
      } else if (current) {
        this.sent.delete(conversationId); // the next chance tries again
      }
    }
  }

  // One "Seen by …" under the last message each other user has read.
  render() {
    for (const old of this.list.root.querySelectorAll(".receipt")) old.remove();
    if (this.me === null) return; // whose reads are others' is not known yet
    const readers = new Map(); // message id -> user ids
    for (const [user, messageId] of this.readBy) {
      if (user === this.me) continue;
      if (!readers.has(messageId)) readers.set(messageId, []);
      readers.get(messageId).push(user);
    }
    for (const [messageId, users] of readers) {
      const rec = this.list.get(messageId);
      if (!rec) continue; // not shown (another branch, an older page)
      const receipt = document.createElement("div");
      receipt.className = "receipt";
      receipt.textContent = `Seen by ${users.sort().join(", ")}`;
      rec.li.append(receipt);
    }
  }
}
