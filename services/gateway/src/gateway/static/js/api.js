// The REST part of the public API (docs/api.md), with its one error shape.
import { authHeaders } from "./auth.js";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || "error"}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    } else if (body && typeof body.detail === "string") {
      message = body.detail;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
}

export async function request(method, path, { body, headers = {}, signal } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "the server cannot be reached");
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

const conv = (id) => `/v1/conversations/${encodeURIComponent(id)}`;

export const api = {
  listConversations: (q) =>
    request("GET", q ? `/v1/conversations?q=${encodeURIComponent(q)}` : "/v1/conversations"),
  getConversation: (id) => request("GET", conv(id)),
  renameConversation: (id, title) => request("PATCH", conv(id), { body: { title } }),
  switchBranch: (id, messageId) =>
    request("PATCH", conv(id), { body: { active_message_id: messageId } }),
  regenerateJson: (id, messageId, signal) =>
    request("POST", api.regenerateUrl(id, messageId), { body: {}, signal }),
  regenerateUrl: (id, messageId) => `${conv(id)}/messages/${encodeURIComponent(messageId)}/regenerate`,
  feedbackUrl: (id, messageId) => `${conv(id)}/messages/${encodeURIComponent(messageId)}/feedback`,
  setFeedback: (id, messageId, body) => request("PUT", api.feedbackUrl(id, messageId), { body }),
  deleteFeedback: (id, messageId) => request("DELETE", api.feedbackUrl(id, messageId)),
  deleteConversation: (id) => request("DELETE", conv(id)),
  markRead: (id, messageId) =>
    request("PUT", `${conv(id)}/read`, { body: { message_id: messageId } }),
  setAssistant: (id, assistant) => request("PATCH", conv(id), { body: { assistant } }),
  listMembers: (id) => request("GET", `${conv(id)}/members`),
  addMember: (id, userId, role) =>
    request("POST", `${conv(id)}/members`, { body: { user_id: userId, role } }),
  removeMember: (id, userId) =>
    request("DELETE", `${conv(id)}/members/${encodeURIComponent(userId)}`),
  cancel: (id) => request("POST", `${conv(id)}/cancel`, { body: {} }),
  // Standard mode: the JSON request/response.
  sendJson: (id, body, signal) => request("POST", `${conv(id)}/messages`, { body, signal }),
  messagesUrl: (id) => `${conv(id)}/messages`,
  eventsUrl: (id) => `${conv(id)}/events`,
};
