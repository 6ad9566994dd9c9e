// One WebSocket to /v1/ws that reconnects with backoff. The page re-subscribes
// (with the last event id it has shown) in `onOpen` after every reconnect.
import { withAccessToken } from "./auth.js";

const PING_MS = 20000;

export class LiveSocket {
  constructor({ onFrame, onState, onOpen }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.onOpen = onOpen;
    this.ws = null;
    this.wanted = false;
    this.attempt = 0;
    this.everOpened = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.state = "idle";
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.wanted = true;
    if (!this.ws) this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "mode changed");
    this.setState("idle");
  }

  // A fresh socket now (a new token, or the page came back online).
  restart() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "restart");
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    if (this.wanted) this.connect();
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  connect() {
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let ws;
    try {
      ws = new WebSocket(withAccessToken(`${scheme}://${location.host}/v1/ws`));
    } catch {
      this.setState("unavailable"); // no WebSocket here at all: SSE only
      return;
    }
    this.ws = ws;
    this.setState(this.everOpened ? "reconnecting" : "connecting");
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.everOpened = true;
      this.setState("open");
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_MS);
      this.onOpen();
    });
    ws.addEventListener("message", (msg) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.type !== "pong") this.onFrame(frame);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (!this.wanted) return;
      this.attempt += 1;
      // Never opened after a few tries: the page sends over SSE meanwhile.
      this.setState(this.everOpened ? "reconnecting" : this.attempt >= 3 ? "unavailable" : "connecting");
      const delay = Math.min(250 * 2 ** (this.attempt - 1), 4000);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    });
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }
}
