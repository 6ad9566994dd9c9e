// What the page was sent of each conversation, in order, since it began to
// follow it (a send, a subscribe, a resume). Reopening a conversation shows its
// stored history and then this log, so an answer still streaming is shown whole;
// the page then follows on after the log's newest event.

const MAX_EVENTS = 5000; // per conversation, beyond the answers still streaming
const SIGNALS = new Set(["typing", "presence", "read"]);

export class EventLog {
  constructor() {
    this.logs = new Map();
  }

  add(conversationId, ev) {
    if (!conversationId || typeof ev.event_id !== "number" || SIGNALS.has(ev.type)) return;
    let events = this.logs.get(conversationId);
    if (!events) {
      events = [];
      this.logs.set(conversationId, events);
    }
    events.push(ev);
    if ((ev.type === "done" || ev.type === "error") && ev.message_id) forgetBefore(events, ev.message_id);
    if (events.length > MAX_EVENTS) trim(events);
  }

  events(conversationId) {
    return this.logs.get(conversationId) || [];
  }

  forget(conversationId) {
    this.logs.delete(conversationId);
  }
}

// A reply just ended: what ended before it (and the questions before its own)
// is in the stored history by now. The reply itself stays until the next one
// ends, as its history may not be stored yet.
function forgetBefore(events, replyId) {
  const first = events.findIndex((e) => e.message_id === replyId);
  if (first <= 0) return;
  let from = first;
  for (let i = first - 1; i >= 0; i -= 1) {
    if (events[i].type === "message") {
      from = i;
      break;
    }
  }
  events.splice(0, from);
}

// Too long: drop what came before the first reply that has not ended (never the
// start of an answer still streaming, however long it is), or the older half.
function trim(events) {
  const ended = new Set();
  for (const e of events) if (e.type === "done" || e.type === "error") ended.add(e.message_id);
  const open = events.findIndex((e) => e.type !== "message" && !ended.has(e.message_id));
  events.splice(0, open === -1 ? events.length >> 1 : open);
}
