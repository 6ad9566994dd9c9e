// The livechat page: wires the message list, the sidebar and the transports
// (WebSocket, SSE over fetch, plain JSON) to the public API of docs/api.md.
import { api } from "./api.js";
import { getToken, setToken } from "./auth.js";
import { ask } from "./dialogs.js";
import { EventLog } from "./eventlog.js";
import { newId, plural } from "./format.js";
import { displayTitle, Sidebar } from "./sidebar.js";
import { announce, showBanner, statusLine } from "./notices.js";
import { ReadReceipts } from "./receipts.js";
import { keep, release, waitingIn } from "./outbox.js";
import { clearResume, loadResume, saveResume } from "./resume.js";
import { Members } from "./members.js";
import { LiveSocket } from "./socket.js";
import {
  follow as sseFollow,
  postMessage as ssePost,
  pump as ssePump,
  resume as sseResume,
} from "./ssechat.js";
import { MessageList } from "./view.js";

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  toggleSidebar: $("toggle-sidebar"),
  newConversation: $("new-conversation"),
  title: $("conversation-title"),
  tokens: $("conversation-tokens"),
  presence: $("presence"),
  connection: $("connection"),
  settingsToggle: $("settings-toggle"),
  settings: $("settings"),
  token: $("token"),
  tokenClear: $("token-clear"),
  typing: $("typing"),
  composer: $("composer"),
  attach: $("attach"),
  attachInput: $("attach-input"),
  attachments: $("attachments"),
  input: $("composer-input"),
  send: $("send"),
  stop: $("stop"),
  confirmDelete: $("confirm-delete"),
  confirmDeleteText: $("confirm-delete-text"),
  renameDialog: $("rename-dialog"),
  renameInput: $("rename-input"),
  feedbackDialog: $("feedback-dialog"),
  feedbackInput: $("feedback-input"),
};

const FINAL = new Set(["complete", "cancelled", "failed", "interrupted"]);
const ECHO_TIMEOUT_MS = 30000;

const state = {
  mode: "live",
  conversationId: null,
  known: false, // the server has this conversation: it can be subscribed to
  loading: false, // history being loaded: its events are shown from the log after it
  replaying: false, // showing the log of a conversation just opened: nothing to announce
  lastEventId: null, // the newest event of this conversation shown; replay starts after it
  active: null, // the reply streaming now
  pending: new Map(), // user message id -> timer, until the server echoes it
  standardAbort: null,
  sseAbort: null,
  typingSupported: true,
  followed: new Set(), // conversations this socket follows (subscribed or sent to)
  typingSentAt: 0,
  typingStopTimer: 0,
  othersTypingTimer: 0,
  listTimer: 0,
  editing: null, // {id, parentId}: the user message the composer's text replaces
  reloadAfter: null, // a conversation to reload once its answer ends (its branches changed)
  waitTimer: 0, // the next try of the messages waiting to be sent
  waitDelay: 0,
};

// --- small UI helpers ------------------------------------------------------

function setGenerating(on) {
  ui.stop.hidden = !on;
  ui.stop.disabled = false;
  ui.send.hidden = on;
}

function connectionLabel(socketState) {
  if (state.mode === "standard") return ["standard", "Standard (JSON)"];
  switch (socketState) {
    case "open":
      return ["open", "Connected"];
    case "connecting":
      return ["connecting", "Connecting…"];
    case "reconnecting":
      return ["reconnecting", "Reconnecting…"];
    case "unavailable":
      return ["closed", "Live (SSE)"];
    default:
      return ["closed", "Live (SSE)"];
  }
}

function showConnection(socketState) {
  const [key, label] = connectionLabel(socketState);
  ui.connection.dataset.state = key;
  ui.connection.textContent = label;
}

function updateTokenCount() {
  let total = 0;
  for (const rec of messages.all()) total += rec.usage?.total_tokens || 0;
  ui.tokens.textContent = `${plural(total, "token")} in this conversation`;
}

function scheduleListRefresh(delay = 300) {
  clearTimeout(state.listTimer);
  state.listTimer = setTimeout(async () => {
    await sidebar.refresh();
    const current = sidebar.find(state.conversationId);
    if (current) ui.title.textContent = displayTitle(current);
  }, delay);
}

function handleApiError(err, what) {
  if (err.status === 401) {
    showBanner("This server needs an access token: enter it under “Access token”.");
    openSettings(true);
  } else {
    statusLine(`${what}: ${err.message}`, "error");
  }
}

// Announced to screen readers, except while the log of a reopened conversation is shown again.
function tell(text) {
  if (!state.replaying) announce(text);
}

// --- messages --------------------------------------------------------------

const messages = new MessageList($("messages"), {
  onRetry: retry,
  onSwitch: switchBranch,
  onEdit: editMessage,
  onRegenerate: regenerate,
  onRate: (rec, rating) => giveFeedback(rec, rating),
  onComment: commentOn,
});
const receipts = new ReadReceipts(messages, () => state.conversationId);

// --- feedback on answers ---------------------------------------------------

const RATED = { up: "Marked as a good answer", down: "Marked as a bad answer" };

// An answer just finished may not be stored yet (memory writes it a moment later):
// a 404 for the message is asked again a few times.
async function whenStored(call) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await call();
    } catch (err) {
      if (err.status !== 404 || attempt >= 4) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250 * (attempt + 1)));
    }
  }
}

// rating null takes the feedback back; the comment stays with a changed rating.
async function giveFeedback(rec, rating, comment = rec.feedback ? rec.feedback.comment : null) {
  const conversationId = state.conversationId;
  try {
    if (rating === null) {
      await whenStored(() => api.deleteFeedback(conversationId, rec.id));
      rec.feedback = null;
      announce("Feedback removed");
    } else {
      const body = comment ? { rating, comment } : { rating };
      rec.feedback = await whenStored(() => api.setFeedback(conversationId, rec.id, body));
      announce(RATED[rating]);
    }
    messages.renderMeta(rec);
  } catch (err) {
    handleApiError(err, "Could not save the feedback");
  }
}

async function commentOn(rec) {
  if (!rec.feedback) return;
  ui.feedbackInput.value = rec.feedback.comment || "";
  const value = await ask(ui.feedbackDialog, () => ui.feedbackInput.focus());
  if (value !== "save" || !rec.feedback) return;
  await giveFeedback(rec, rec.feedback.rating, ui.feedbackInput.value.trim() || null);
}

// What a send posts: with `parent_id` for an edit (null: a new first message), and its images.
function bodyOf(rec) {
  const body = { id: rec.id, content: rec.content };
  if (rec.attachments?.length) {
    body.attachments = rec.attachments.map(({ media_type, data }) => ({
      type: "image",
      media_type,
      data,
    }));
  }
  if (rec.branchParent !== undefined) body.parent_id = rec.branchParent;
  return body;
}

function busy() {
  if (state.active || state.standardAbort) {
    statusLine("An answer is still coming: stop it or wait for it.", "warn");
    return true;
  }
  return false;
}

// After an edit or a regeneration: the stored branch, with its "‹ n/m ›" switchers,
// once memory holds the reply `replyId` that ended it.
async function reloadIfBranched(replyId = null) {
  const id = state.reloadAfter;
  state.reloadAfter = null;
  if (!id || id !== state.conversationId) return;
  for (let i = 0; replyId && i < 40; i += 1) {
    try {
      const body = await api.getConversation(id);
      if (body.messages.some((m) => m.id === replyId)) break;
    } catch {
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  if (state.conversationId !== id || state.active) return;
  // Nothing is in flight: the stored branch is the whole truth (the log holds
  // answers of the branch left behind).
  eventLog.forget(id);
  await openConversation(id);
}

async function switchBranch(rec, messageId) {
  if (busy() || !messageId) return;
  const conversationId = state.conversationId;
  try {
    await api.switchBranch(conversationId, messageId);
  } catch (err) {
    handleApiError(err, "Could not switch versions");
    return;
  }
  if (state.conversationId !== conversationId) return;
  eventLog.forget(conversationId); // replies of the branch left behind
  await openConversation(conversationId);
}

function cancelEdit() {
  if (!state.editing) return;
  state.editing = null;
  ui.composer.classList.remove("editing");
  statusLine("");
}

function editMessage(rec) {
  if (busy()) return;
  state.editing = { id: rec.id, parentId: rec.parent_id ?? null };
  ui.composer.classList.add("editing");
  ui.input.value = rec.content;
  ui.input.dispatchEvent(new Event("input"));
  // Its images go with the edited text (removable like any other).
  pendingImages = (rec.attachments || [])
    .filter((a) => a.data)
    .map(({ media_type, data }) => ({ media_type, data }));
  showPendingImages();
  ui.input.focus();
  statusLine("Editing: sending starts a new branch from this message (Escape cancels).");
}

async function regenerate(rec) {
  if (busy() || !rec.parent_id) return;
  const conversationId = state.conversationId;
  const question = rec.parent_id;
  for (const r of messages.from(rec.id)) messages.remove(r.id);
  state.reloadAfter = conversationId;
  statusLine("Regenerating…");
  if (state.mode === "standard") {
    const abort = new AbortController();
    state.standardAbort = abort;
    setGenerating(true);
    let replyId = null;
    try {
      replyId = (await api.regenerateJson(conversationId, question, abort.signal)).message.id;
    } catch (err) {
      if (err.name !== "AbortError") handleApiError(err, "Could not regenerate");
    } finally {
      state.standardAbort = null;
      setGenerating(false);
      updateTokenCount();
      reloadIfBranched(replyId);
    }
    return;
  }
  if (socket.isOpen) {
    state.followed.add(conversationId);
    socket.send({ type: "regenerate", conversation_id: conversationId, message_id: question });
    return;
  }
  const abort = new AbortController();
  state.sseAbort = abort;
  let response;
  try {
    const url = api.regenerateUrl(conversationId, question);
    response = await ssePost(conversationId, {}, abort.signal, url);
  } catch (err) {
    if (err.name !== "AbortError") handleApiError(err, "Could not regenerate");
    reloadIfBranched();
    return;
  }
  const finished = await ssePump(response, abort.signal, (ev) => onEvent(ev, conversationId)).catch(
    () => false,
  );
  if (!finished && !abort.signal.aborted) await resumeSse(conversationId, abort.signal);
}

function failUser(rec, reason) {
  clearTimeout(state.pending.get(rec.id));
  state.pending.delete(rec.id);
  release(rec.id); // refused: Retry sends it again, a reload forgets it
  rec.status = "failed";
  rec.error = reason;
  rec.retry = true;
  messages.render(rec);
  statusLine(`Not sent: ${reason}`, "error");
  announce(`Your message was not sent: ${reason}`);
}

function markSent(rec, ev = null) {
  state.known = true;
  if (ev?.user_id) rec.user_id = ev.user_id;
  if (members.conversationId !== state.conversationId) {
    members.show({ id: state.conversationId, role: "owner", assistant: "on" });
  }
  if (!sidebar.find(state.conversationId)) scheduleListRefresh(); // a new one: list it
  clearTimeout(state.pending.get(rec.id));
  state.pending.delete(rec.id);
  release(rec.id);
  state.waitDelay = 0;
  if (rec.status === "sending" || rec.status === "failed" || rec.status === "waiting") {
    rec.status = "complete";
    rec.error = null;
    rec.retry = false;
    messages.render(rec);
  }
  receipts.markNewest();
}

// No connection: the message stays in the outbox, shown as waiting, and goes when the
// connection is back (`sendWaiting`), also after a reload.
function waitToSend(rec) {
  clearTimeout(state.pending.get(rec.id));
  state.pending.delete(rec.id);
  rec.status = "waiting";
  rec.error = null;
  rec.retry = false;
  messages.render(rec);
  statusLine("Offline: your message will be sent when the connection is back.", "warn");
  // Online but the server out of reach: tried again, less and less often (offline, the
  // `online` event and the socket's reopening try at once).
  clearTimeout(state.waitTimer);
  state.waitDelay = Math.min(Math.max(state.waitDelay * 2, 1000), 8000);
  state.waitTimer = setTimeout(sendWaiting, state.waitDelay);
}

function isNetworkError(err) {
  return err && err.code === "network_error";
}

// The shown conversation's messages waiting to be sent, and those sent over a socket
// that closed before the server confirmed them: all over the socket when it is open,
// else the first one over HTTP (the next when its answer ends).
function sendWaiting() {
  clearTimeout(state.waitTimer);
  if (!state.conversationId || state.loading || !navigator.onLine) return;
  const waiting = messages
    .all()
    .filter((r) => r.role === "user" && (r.status === "waiting" || state.pending.has(r.id)));
  if (!waiting.length) return;
  if (state.mode === "live" && socket.isOpen) {
    for (const rec of waiting) {
      rec.status = "sending";
      messages.render(rec);
      sendOverSocket(rec);
    }
  } else if (!state.active && !state.standardAbort) {
    const rec = waiting[0];
    rec.status = "sending";
    messages.render(rec);
    if (state.mode === "standard") sendStandard(rec);
    else sendOverSse(rec);
  }
}

function retry(rec) {
  if (rec.role === "user") {
    // The same id: if the first try did arrive, the server answers it once.
    sendMessage(rec.content, rec.id);
    return;
  }
  const all = messages.all();
  const before = all.slice(0, all.indexOf(rec)).reverse().find((r) => r.role === "user");
  if (before) sendMessage(before.content);
}

function phaseOf(ev) {
  switch (ev.state) {
    case "queued":
      // `position`: how many requests wait ahead of this one.
      if (ev.position == null) return "queued";
      return ev.position > 0 ? `queued (${ev.position} ahead)` : "queued (next in line)";
    case "generating":
      return "generating…";
    case "retrying":
      return ev.attempt != null ? `retrying (attempt ${ev.attempt})…` : "retrying…";
    case "provider_switched":
      return `provider switched${ev.provider ? ` to ${ev.provider}` : ""}`;
    default:
      return ev.state || "";
  }
}

// The bubble of a reply still streaming; null for one already final (from
// history, or finished), whose replayed events change nothing.
function replyRecord(id, eventId) {
  let rec = messages.get(id);
  if (rec && rec.status !== "streaming") return null;
  if (!rec) {
    const question = messages.all().reverse().find((r) => r.role === "user");
    rec = messages.add({
      id,
      role: "assistant",
      content: "",
      status: "streaming",
      created_at: new Date().toISOString(),
      parent_id: question ? question.id : null,
    });
  }
  if (state.active !== id) {
    state.active = id;
    setGenerating(true);
    if (eventId != null && loadResume(state.conversationId) === null) {
      saveResume(state.conversationId, eventId - 1);
    }
  }
  return rec;
}

function endGeneration() {
  state.active = null;
  setGenerating(false);
  if (state.conversationId) clearResume(state.conversationId);
  if (!socket.isOpen) setTimeout(sendWaiting, 0); // over HTTP: one at a time
}

// A replayed end of an answer the history already holds changes nothing.
function endOf(ev) {
  const rec = replyRecord(ev.message_id, ev.event_id);
  if (rec || !state.active) endGeneration();
  return rec;
}

function onDone(ev) {
  const rec = endOf(ev);
  if (!rec) return;
  const cancelled = ev.finish_reason === "cancelled";
  rec.status = cancelled ? "cancelled" : "complete";
  rec.phase = null;
  rec.usage = ev.usage || rec.usage;
  rec.model = ev.model || rec.model;
  rec.provider = ev.provider || rec.provider;
  if (ev.finish_reason === "length") rec.note = "cut off at the length limit";
  if (ev.finish_reason === "content_filter") rec.note = "stopped by the content filter";
  messages.render(rec);
  statusLine(cancelled ? "Stopped. The partial answer is kept." : "", cancelled ? "warn" : "");
  tell(cancelled ? "Answer stopped." : `Answer: ${rec.content.slice(0, 600)}`);
  updateTokenCount();
  scheduleListRefresh();
  receipts.markNewest();
  reloadIfBranched(ev.message_id);
}

function onError(ev) {
  if (ev.message_id) {
    const rec = endOf(ev);
    if (rec) {
      rec.status = "failed";
      rec.phase = null;
      rec.error = ev.message;
      rec.retry = true;
      messages.render(rec);
    }
    statusLine(`The answer failed: ${ev.message}`, "error");
    tell(`The answer failed: ${ev.message}`);
    scheduleListRefresh();
    reloadIfBranched(ev.message_id);
    return;
  }
  // An error about a message we sent (rejected before any reply exists).
  const last = [...state.pending.keys()].pop();
  if (last) failUser(messages.get(last), ev.message);
  else statusLine(ev.message, "error");
}

function onUserMessage(ev) {
  // Sent while a person had taken over (no answer follows), or answered again.
  members.setAssistant(ev.unanswered ? "off" : "on");
  const rec = messages.get(ev.message_id);
  if (rec) {
    // Ours, just accepted: a reload replays from here, this message included.
    if (rec.status === "sending" && ev.event_id != null && !ev.unanswered) {
      saveResume(state.conversationId, ev.event_id - 1);
    }
    markSent(rec, ev);
    if (ev.unanswered) statusLine("Sent. The assistant is off: a person answers.");
    return;
  }
  messages.add({
    id: ev.message_id,
    role: "user",
    content: ev.content,
    status: "complete",
    created_at: ev.created_at,
    user_id: ev.user_id,
    attachments: ev.attachments,
  });
  const who = members.shared && ev.user_id ? ev.user_id : "another tab";
  tell(`New message from ${who}: ${ev.content.slice(0, 200)}`);
  receipts.markNewest();
}

function onOthersTyping(ev) {
  clearTimeout(state.othersTypingTimer);
  if (ev.is_typing === false) {
    ui.typing.textContent = "";
    return;
  }
  ui.typing.textContent = "Someone in another tab is typing…";
  state.othersTypingTimer = setTimeout(() => {
    ui.typing.textContent = "";
  }, 6000);
}

// Other tabs (connections) on this conversation, by client id, from their
// `joined`/`left` signals.
const present = new Set();

function showPresence() {
  const n = present.size;
  ui.presence.hidden = n === 0;
  ui.presence.textContent = n === 1 ? "1 other tab here" : `${n} other tabs here`;
}

function onPresence(ev) {
  if (!ev.client_id) return;
  if (ev.state === "left") present.delete(ev.client_id);
  else present.add(ev.client_id);
  showPresence();
}

// An event of a conversation this socket still follows but the page does not
// show: remember where its answer started, so opening it again replays it whole.
function onOtherConversation(ev) {
  if (typeof ev.event_id === "number") {
    if (ev.type === "done" || ev.type === "error") clearResume(ev.conversation_id);
    else if (loadResume(ev.conversation_id) === null) saveResume(ev.conversation_id, ev.event_id - 1);
  }
  if (ev.type === "done" || ev.type === "message") scheduleListRefresh();
}

const eventLog = new EventLog();

const members = new Members({
  button: $("members-button"),
  takeover: $("takeover"),
  dialog: $("members-dialog"),
  list: $("members-list"),
  form: $("members-form"),
  userInput: $("member-user"),
  roleInput: $("member-role"),
  onShared: (shared) => messages.setShowAuthors(shared),
  onLeft: () => {
    eventLog.forget(state.conversationId);
    startNewConversation();
    sidebar.refresh();
  },
});

// Every event a transport delivers: kept in its conversation's log, and shown
// when that conversation is open.
function onEvent(ev, conversationId = ev?.conversation_id) {
  if (!ev || !ev.type) return;
  eventLog.add(conversationId, ev);
  showEvent(ev);
}

// One event, from a transport or from the log of a conversation just opened.
function showEvent(ev) {
  if (ev.type === "error" && !ev.conversation_id && !ev.message_id) {
    onFrameError(ev);
    return;
  }
  if (ev.conversation_id && ev.conversation_id !== state.conversationId) {
    onOtherConversation(ev);
    return;
  }
  if (ev.type === "typing") return onOthersTyping(ev);
  if (ev.type === "presence") return onPresence(ev);
  if (ev.type === "read") return receipts.onRead(ev);
  if (state.loading) return;
  if (typeof ev.event_id === "number") {
    // Replays after a reconnect start after this id; anything older is a duplicate.
    if (state.lastEventId !== null && ev.event_id <= state.lastEventId) return;
    state.lastEventId = ev.event_id;
  }
  let rec;
  switch (ev.type) {
    case "message":
      onUserMessage(ev);
      break;
    case "status":
      rec = replyRecord(ev.message_id, ev.event_id);
      if (!rec) break;
      rec.phase = phaseOf(ev);
      if (ev.state === "provider_switched") rec.note = rec.phase;
      statusLine(`Answer ${rec.phase}`);
      messages.update(rec);
      break;
    case "start":
      rec = replyRecord(ev.message_id, ev.event_id);
      if (!rec) break;
      rec.model = ev.model;
      rec.provider = ev.provider;
      if (!rec.phase || rec.phase.startsWith("queued")) rec.phase = "generating…";
      statusLine("Answer generating…");
      messages.update(rec);
      break;
    case "token":
      rec = replyRecord(ev.message_id, ev.event_id);
      if (!rec) break;
      rec.content += ev.content;
      messages.update(rec);
      break;
    case "resync": // some tokens were lost in transit: the whole text so far
      rec = replyRecord(ev.message_id, ev.event_id);
      if (!rec) break;
      rec.content = ev.content;
      messages.update(rec);
      break;
    case "done":
      onDone(ev);
      break;
    case "error":
      onError(ev);
      break;
    default:
      break;
  }
}

// A WebSocket frame the server could not take. Frames this server does not
// know (typing, cancel) turn that feature off rather than failing a message.
function onFrameError(ev) {
  const text = ev.message || "";
  if (ev.code === "not_subscribed") return; // a typing signal raced the subscribe
  if (ev.code === "relay_failed" || ev.code === "too_many_subscriptions") {
    // The socket follows less than the page thought (the frame names no conversation):
    // the next subscribe of each one asks again from its newest event shown.
    state.followed.clear();
    if (ev.code === "relay_failed" && state.conversationId && state.known) subscribe();
    return;
  }
  if (/'typing'/.test(text)) {
    state.typingSupported = false;
    return;
  }
  if (/'cancel'/.test(text)) {
    statusLine("This server cannot stop answers yet.", "error");
    return;
  }
  onError(ev);
}

// --- the live socket -------------------------------------------------------

// Follow the open conversation on the socket: after the newest event shown, or,
// when this socket follows it already, on as it is (replaying from an id there
// would race the live events already on their way).
function subscribe() {
  const id = state.conversationId;
  const frame = { type: "subscribe", conversation_id: id };
  if (state.lastEventId !== null && !state.followed.has(id)) frame.last_event_id = state.lastEventId;
  state.followed.add(id);
  socket.send(frame);
}

const socket = new LiveSocket({
  onFrame: onEvent,
  onState(socketState) {
    showConnection(socketState);
    if (socketState === "reconnecting" && state.active) {
      statusLine("Connection lost — reconnecting…", "warn");
    }
    if (socketState === "reconnecting") {
      // Not confirmed before the socket closed: kept until it is back.
      for (const id of [...state.pending.keys()]) {
        const rec = messages.get(id);
        if (rec) waitToSend(rec);
      }
    }
  },
  onOpen() {
    state.followed.clear();
    if (!state.conversationId || state.loading) return;
    if (state.known) subscribe();
    if (state.active) statusLine("Reconnected; the answer continues.");
    // Messages not yet echoed, and those written offline, go (again) with their ids:
    // the server stores and answers each once.
    sendWaiting();
  },
});

function sendOverSocket(rec) {
  clearTimeout(state.pending.get(rec.id));
  state.pending.set(
    rec.id,
    setTimeout(() => failUser(rec, "the server did not confirm it"), ECHO_TIMEOUT_MS),
  );
  state.followed.add(state.conversationId);
  state.known = true;
  socket.send({ type: "message", conversation_id: state.conversationId, ...bodyOf(rec) });
}

// --- SSE over fetch (when the socket is not open) --------------------------

async function resumeSse(conversationId, signal) {
  statusLine("Connection lost — reconnecting…", "warn");
  const outcome = await sseResume(conversationId, {
    lastEventId: () => state.lastEventId,
    signal,
    onEvent: (ev) => onEvent(ev, conversationId),
  });
  if (outcome === "ended" || signal.aborted) return;
  if (outcome === "unsupported") {
    statusLine("This server cannot resume an answer; reloading the history.", "warn");
  }
  // Nothing more to follow: the stored history has the answer as it ended.
  endGeneration();
  if (state.conversationId === conversationId) await openConversation(conversationId);
}

async function sendOverSse(rec) {
  const conversationId = state.conversationId;
  const abort = new AbortController();
  state.sseAbort = abort;
  let response;
  try {
    response = await ssePost(conversationId, bodyOf(rec), abort.signal);
  } catch (err) {
    if (err.name === "AbortError") return;
    if (isNetworkError(err)) {
      waitToSend(rec);
      return;
    }
    failUser(rec, err.message);
    if (err.status === 401) handleApiError(err, "Sending");
    return;
  }
  if (response.status === 202) {
    // The assistant is off: stored and shown to everyone here, not answered.
    const body = await response.json().catch(() => null);
    markSent(rec, body?.message);
    members.setAssistant("off");
    statusLine("Sent. The assistant is off: a person answers.");
    return;
  }
  markSent(rec);
  let finished = false;
  try {
    finished = await ssePump(response, abort.signal, (ev) => onEvent(ev, conversationId));
  } catch {
    finished = false;
  }
  if (!finished && !abort.signal.aborted) await resumeSse(conversationId, abort.signal);
}

// Attach to the conversation's events: the answer in flight (after `resume`), then live ones.
async function attachSse(conversationId, resume) {
  const abort = new AbortController();
  state.sseAbort = abort;
  const shown = (ev) => onEvent(ev, conversationId);
  const outcome = await sseFollow(conversationId, resume, abort.signal, shown);
  if (outcome === "dropped" && !abort.signal.aborted) await resumeSse(conversationId, abort.signal);
}

// --- standard mode ---------------------------------------------------------

async function sendStandard(rec) {
  const abort = new AbortController();
  state.standardAbort = abort;
  setGenerating(true);
  statusLine("Waiting for the whole answer (standard mode)…");
  const conversationId = state.conversationId;
  try {
    const body = await api.sendJson(conversationId, bodyOf(rec), abort.signal);
    const m = body.message;
    if (m.role === "user") {
      // The assistant is off: stored and shown to everyone here, not answered.
      markSent(rec, m);
      members.setAssistant("off");
      statusLine("Sent. The assistant is off: a person answers.");
      return;
    }
    markSent(rec);
    if (state.conversationId !== conversationId) return;
    const answer = messages.get(m.id) || messages.add({ ...m, role: "assistant" });
    Object.assign(answer, { ...m, usage: m.usage || body.usage });
    messages.render(answer);
    const cancelled = m.status === "cancelled";
    statusLine(cancelled ? "Stopped. The partial answer is kept." : "", cancelled ? "warn" : "");
    announce(cancelled ? "Answer stopped." : `Answer: ${m.content.slice(0, 600)}`);
  } catch (err) {
    if (isNetworkError(err)) waitToSend(rec);
    else if (err.name !== "AbortError") {
      failUser(rec, err.message);
      if (err.status === 401) handleApiError(err, "Sending");
    }
  } finally {
    state.standardAbort = null;
    setGenerating(false);
    updateTokenCount();
    scheduleListRefresh();
    receipts.markNewest();
    reloadIfBranched(messages.all().at(-1)?.id);
  }
}

// --- sending, stopping, typing ---------------------------------------------

function ensureConversation() {
  if (!state.conversationId) {
    state.conversationId = newId("c");
    state.lastEventId = null;
    history.replaceState(null, "", `#c/${state.conversationId}`);
  }
  return state.conversationId;
}

function sendMessage(content, id = null) {
  if (!content.trim()) return false;
  if (busy()) return false;
  ensureConversation();
  stopTyping();
  let rec = id ? messages.get(id) : null;
  const editing = rec ? null : state.editing;
  if (editing) {
    // The edited message and what follows it give way to the new branch.
    for (const r of messages.from(editing.id)) messages.remove(r.id);
    cancelEdit();
    state.reloadAfter = state.conversationId;
  }
  if (!rec) {
    const last = messages.all().at(-1);
    rec = messages.add({
      id: id || newId("m"),
      role: "user",
      content,
      status: "sending",
      created_at: new Date().toISOString(),
      parent_id: editing ? editing.parentId : last ? last.id : null,
      attachments: takeImages(),
    });
    if (editing) rec.branchParent = editing.parentId;
  }
  keep({
    id: rec.id,
    conversation_id: state.conversationId,
    content: rec.content,
    created_at: rec.created_at,
    parent_id: rec.parent_id ?? null,
    ...(rec.branchParent !== undefined ? { branchParent: rec.branchParent } : {}),
  });
  if (!navigator.onLine) {
    waitToSend(rec);
    return true;
  }
  rec.status = "sending";
  rec.error = null;
  rec.retry = false;
  messages.render(rec);
  statusLine("Sending…");
  if (state.mode === "standard") sendStandard(rec);
  else if (socket.isOpen) sendOverSocket(rec);
  else sendOverSse(rec);
  return true;
}

async function stop() {
  const conversationId = state.conversationId;
  if (!conversationId) return;
  ui.stop.disabled = true;
  statusLine("Stopping…");
  try {
    const body = await api.cancel(conversationId);
    if (body && body.cancelled === false && !state.active && !state.standardAbort) {
      statusLine("Nothing to stop.");
    }
  } catch (err) {
    if ((err.status === 404 || err.status === 405) && socket.isOpen) {
      socket.send({ type: "cancel", conversation_id: conversationId });
    } else {
      handleApiError(err, "Could not stop");
      ui.stop.disabled = false;
    }
  }
}

function sendTyping(isTyping) {
  // The server takes typing only on a conversation this socket follows.
  if (!state.typingSupported || !socket.isOpen || !state.followed.has(state.conversationId)) return;
  socket.send({ type: "typing", conversation_id: state.conversationId, is_typing: isTyping });
}

function stopTyping() {
  clearTimeout(state.typingStopTimer);
  if (state.typingSentAt) {
    state.typingSentAt = 0;
    sendTyping(false);
  }
}

function noteTyping() {
  if (state.mode !== "live" || !state.conversationId) return;
  const now = Date.now();
  if (now - state.typingSentAt > 3000) {
    state.typingSentAt = now;
    sendTyping(true);
  }
  clearTimeout(state.typingStopTimer);
  state.typingStopTimer = setTimeout(stopTyping, 4000);
}

// --- conversations ---------------------------------------------------------

function detach() {
  cancelEdit();
  state.loading = false;
  state.sseAbort?.abort();
  state.sseAbort = null;
  state.standardAbort?.abort();
  for (const timer of state.pending.values()) clearTimeout(timer);
  state.pending.clear();
  state.active = null;
  setGenerating(false);
  ui.typing.textContent = "";
  present.clear();
  showPresence();
}

function startNewConversation() {
  detach();
  state.conversationId = null;
  state.lastEventId = null;
  state.known = false;
  history.replaceState(null, "", location.pathname + location.search);
  sidebar.setCurrent(null);
  ui.title.textContent = "New conversation";
  messages.clear("Start a conversation: type a message below.");
  receipts.show();
  members.show(null);
  updateTokenCount();
  statusLine("");
  closeSidebarIfNarrow();
  ui.input.focus();
}

async function openConversation(id) {
  detach();
  state.conversationId = id;
  state.lastEventId = null;
  history.replaceState(null, "", `#c/${id}`);
  sidebar.setCurrent(id);
  const known = sidebar.find(id);
  ui.title.textContent = known ? displayTitle(known) : "Loading…";
  messages.clear();
  statusLine("");
  state.loading = true;
  let body = null;
  try {
    body = await api.getConversation(id);
  } catch (err) {
    if (state.conversationId === id && err.status !== 404) {
      handleApiError(err, "Could not load the conversation");
    }
  }
  if (state.conversationId !== id) return;
  state.loading = false;
  const stored = body ? body.messages : [];
  // What this page was sent of it, while open or not (events that came during
  // the load included): shown after the history, and followed on from its end.
  const logged = eventLog.events(id);
  let resume = logged.length ? null : loadResume(id);
  // A reply this browser saw start: the server has the conversation even
  // when its history is not stored yet.
  state.known = body !== null || resume !== null || logged.length > 0;
  ui.title.textContent = body ? displayTitle(body) : "New conversation";
  members.show(body);
  if (body && !known) scheduleListRefresh(0); // opened by its address: list it
  // Written here before and not sent yet (a reload while offline): after the history.
  const held = new Set(stored.map((m) => m.id));
  const unsent = waitingIn(id).filter((entry) => {
    if (held.has(entry.id)) release(entry.id); // it did arrive
    return !held.has(entry.id);
  });
  if (!stored.length && !unsent.length) {
    messages.clear("Start a conversation: type a message below.");
  }
  for (const m of stored) messages.add({ ...m });
  for (const entry of unsent) {
    const rec = messages.add({
      id: entry.id,
      role: "user",
      content: entry.content,
      status: "waiting",
      created_at: entry.created_at,
      parent_id: entry.parent_id,
    });
    if (entry.branchParent !== undefined) rec.branchParent = entry.branchParent;
  }
  messages.scrollToEnd();
  receipts.show(body?.read_by);
  receipts.markNewest();
  updateTokenCount();

  if (logged.length) {
    state.replaying = true;
    try {
      for (const ev of logged) showEvent(ev); // leaves lastEventId at the log's end
    } finally {
      state.replaying = false;
    }
  } else {
    // Where to pick up an answer in flight: after what this browser showed before
    // a reload; without that, the server sends the generation in flight from its start.
    const last = stored.at(-1);
    if (last && last.role === "assistant" && FINAL.has(last.status)) {
      clearResume(id);
      resume = null;
    }
    state.lastEventId = resume;
  }
  if (state.mode === "live" && state.known) {
    if (socket.isOpen) subscribe();
    else if (socket.state === "unavailable") attachSse(id, state.lastEventId);
  }
  sendWaiting();
}

async function renameConversation(conversation) {
  ui.renameInput.value = displayTitle(conversation);
  const value = await ask(ui.renameDialog, () => ui.renameInput.select());
  const title = ui.renameInput.value.trim();
  if (value !== "save" || !title) return;
  try {
    await api.renameConversation(conversation.id, title);
    if (conversation.id === state.conversationId) ui.title.textContent = title;
    announce(`Renamed to ${title}`);
    await sidebar.refresh();
  } catch (err) {
    handleApiError(err, "Could not rename");
  }
}

async function deleteConversation(conversation) {
  ui.confirmDeleteText.textContent = `“${displayTitle(conversation)}” and all its messages will be deleted.`;
  const value = await ask(ui.confirmDelete);
  if (value !== "delete") return;
  try {
    await api.deleteConversation(conversation.id);
    clearResume(conversation.id);
    eventLog.forget(conversation.id);
    announce(`Deleted ${displayTitle(conversation)}`);
    if (conversation.id === state.conversationId) startNewConversation();
    await sidebar.refresh();
  } catch (err) {
    handleApiError(err, "Could not delete");
  }
}

const sidebar = new Sidebar({
  list: $("conversation-list"),
  status: $("list-status"),
  search: $("search"),
  onOpen(id) {
    closeSidebarIfNarrow();
    openConversation(id);
    ui.input.focus();
  },
  onRename: renameConversation,
  onDelete: deleteConversation,
  onError(err) {
    if (err.status === 401) handleApiError(err, "Conversations");
  },
});

// --- layout, settings, mode ------------------------------------------------

const narrow = matchMedia("(max-width: 760px)");

function setSidebarOpen(open) {
  ui.app.classList.toggle("sidebar-open", open);
  ui.toggleSidebar.setAttribute("aria-expanded", String(open));
  // A closed drawer is off screen: keep it out of the tab order too.
  ui.sidebar.inert = narrow.matches && !open;
}

function closeSidebarIfNarrow() {
  if (narrow.matches) setSidebarOpen(false);
}

function openSettings(open) {
  ui.settings.hidden = !open;
  ui.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.token.focus();
}

function setMode(mode) {
  state.mode = mode === "standard" ? "standard" : "live";
  try {
    localStorage.setItem("livechat.mode", state.mode);
  } catch {
    // Not kept across reloads.
  }
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.checked = radio.value === state.mode;
  }
  if (state.mode === "live") socket.start();
  else socket.stop();
  showConnection(socket.state);
}

// --- images to send --------------------------------------------------------

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];
let pendingImages = []; // [{media_type, data}] shown under the messages until sent

function showPendingImages() {
  ui.attachments.hidden = pendingImages.length === 0;
  ui.attachments.replaceChildren(
    ...pendingImages.map((image, index) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = `data:${image.media_type};base64,${image.data}`;
      img.alt = `Image ${index + 1} to send`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove image ${index + 1}`);
      remove.addEventListener("click", () => {
        pendingImages.splice(index, 1);
        showPendingImages();
      });
      li.append(img, remove);
      return li;
    }),
  );
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve({ media_type: file.type, data: url.slice(url.indexOf(",") + 1) });
    };
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addImages(files) {
  const images = [...files].filter((f) => IMAGE_TYPES.includes(f.type));
  if (images.length < files.length) statusLine("Only PNG, JPEG, WebP and GIF images can be sent.", "warn");
  for (const file of images) pendingImages.push(await readImage(file));
  showPendingImages();
}

// The images of the message being sent: they leave the composer with it.
function takeImages() {
  const taken = pendingImages;
  pendingImages = [];
  showPendingImages();
  return taken;
}

function wire() {
  ui.attach.addEventListener("click", () => ui.attachInput.click());
  ui.attachInput.addEventListener("change", async () => {
    await addImages(ui.attachInput.files);
    ui.attachInput.value = "";
  });
  ui.input.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (!files.length) return;
    e.preventDefault();
    addImages(files);
  });
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    if (sendMessage(ui.input.value)) {
      ui.input.value = "";
      autosize();
    }
  });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.editing) {
      e.preventDefault();
      cancelEdit();
      takeImages();
      ui.input.value = "";
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  const autosize = () => {
    ui.input.style.height = "auto";
    ui.input.style.height = `${ui.input.scrollHeight + 2}px`;
  };
  ui.input.addEventListener("input", () => {
    autosize();
    noteTyping();
  });
  ui.stop.addEventListener("click", stop);
  ui.newConversation.addEventListener("click", startNewConversation);
  ui.toggleSidebar.addEventListener("click", () =>
    setSidebarOpen(!ui.app.classList.contains("sidebar-open")),
  );
  narrow.addEventListener("change", () => setSidebarOpen(false));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.app.classList.contains("sidebar-open")) {
      setSidebarOpen(false);
      ui.toggleSidebar.focus();
    }
  });
  ui.settingsToggle.addEventListener("click", () => openSettings(ui.settings.hidden));
  ui.token.value = getToken();
  ui.settings.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(ui.token.value.trim());
    receipts.reset(); // perhaps another user now
    showBanner("");
    openSettings(false);
    socket.restart();
    sidebar.refresh();
    if (state.conversationId) openConversation(state.conversationId);
  });
  ui.tokenClear.addEventListener("click", () => {
    ui.token.value = "";
    setToken("");
    receipts.reset();
    socket.restart();
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  window.addEventListener("online", () => {
    // Over HTTP when there is no socket; otherwise its `onOpen` sends them.
    const overHttp = state.mode !== "live" || socket.state === "unavailable";
    socket.restart();
    if (overHttp) sendWaiting();
  });
  window.addEventListener("hashchange", () => {
    const id = conversationFromHash();
    if (id && id !== state.conversationId) openConversation(id);
  });
}

function conversationFromHash() {
  const match = location.hash.match(/^#c\/([A-Za-z0-9_-]{1,64})$/);
  return match ? match[1] : null;
}

async function init() {
  wire();
  setSidebarOpen(false);
  let mode = "live";
  try {
    mode = localStorage.getItem("livechat.mode") || "live";
  } catch {
    // Default mode.
  }
  setMode(mode);
  const id = conversationFromHash();
  const listed = sidebar.refresh();
  if (id) await openConversation(id);
  else startNewConversation();
  await listed;
  const current = sidebar.find(state.conversationId);
  if (current) ui.title.textContent = displayTitle(current);
  document.body.dataset.ready = "true";
}

init();
