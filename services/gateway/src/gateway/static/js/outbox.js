// The durable outbox: messages written and not yet accepted by the server, kept in
// localStorage so a reload (or a closed tab) does not lose them. They are sent again
// with their own ids when the connection is back: the server stores and answers an
// id once, so a message that did arrive before is not doubled.

const KEY = "livechat.outbox";

function read() {
  try {
    const entries = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(entries) ? entries : [];
  } catch {
    return [];
  }
}

function write(entries) {
  try {
    if (entries.length) localStorage.setItem(KEY, JSON.stringify(entries));
    else localStorage.removeItem(KEY);
  } catch {
    // No storage (or full): the message is kept in this page only.
  }
}

// An entry: {id, conversation_id, content, created_at, parent_id, branchParent?}.
export function keep(entry) {
  write([...read().filter((e) => e.id !== entry.id), entry]);
}

export function release(id) {
  const entries = read();
  const kept = entries.filter((e) => e.id !== id);
  if (kept.length !== entries.length) write(kept);
}

// The conversation's messages still to send, oldest first.
export function waitingIn(conversationId) {
  return read().filter((e) => e.conversation_id === conversationId);
}
