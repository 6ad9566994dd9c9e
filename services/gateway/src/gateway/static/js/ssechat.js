// Live mode over Server-Sent Events (fetch, so headers can be set), for when the
// WebSocket is not open: POST a message and read its events; after a drop,
// GET .../events with Last-Event-ID until the answer ends.
import { ApiError, api, errorOf } from "./api.js";
import { authHeaders } from "./auth.js";
import { readSse, sseEvent } from "./sse.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function streamHeaders(lastEventId) {
  const headers = { ...authHeaders(), Accept: "text/event-stream" };
  if (lastEventId !== null) headers["Last-Event-ID"] = String(lastEventId);
  return headers;
}

// Events to `onEvent` until the answer's `done`/`error` (true) or the stream ends (false).
export async function pump(response, signal, onEvent) {
  for await (const frame of readSse(response, signal)) {
    const ev = sseEvent(frame);
    if (!ev) continue;
    onEvent(ev);
    if (ev.type === "done" || ev.type === "error") return true;
  }
  return false;
}

// The open event stream of a new message (or of `url`: a regeneration); an ApiError
// when it is refused.
export async function postMessage(conversationId, body, signal, url = api.messagesUrl(conversationId)) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { ...streamHeaders(null), "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "the server cannot be reached");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

// The conversation's events after `lastEventId` (null: the answer in flight from
// its start). "ended", "idle" (nothing in flight), "unsupported", "failed" or "dropped".
export async function follow(conversationId, lastEventId, signal, onEvent) {
  let response;
  try {
    response = await fetch(api.eventsUrl(conversationId), {
      headers: streamHeaders(lastEventId),
      signal,
    });
  } catch {
    return "failed";
  }
  if (response.status === 204) return "idle";
  if (response.status === 404 || response.status === 405) return "unsupported";
  if (!response.ok) return "failed";
  try {
    return (await pump(response, signal, onEvent)) ? "ended" : "dropped";
  } catch {
    return "dropped";
  }
}

// After a drop: `follow` again with backoff, each time after the newest event shown.
export async function resume(conversationId, { lastEventId, signal, onEvent }) {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    await sleep(Math.min(250 * 2 ** attempt, 4000));
    if (signal.aborted) return "aborted";
    const outcome = await follow(conversationId, lastEventId(), signal, onEvent);
    if (outcome !== "failed" && outcome !== "dropped") return outcome;
  }
  return "gave_up";
}
