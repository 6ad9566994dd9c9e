// Drives the gateway's /socket.io/ with the real socket.io-client, as the Socket.IO
// front ends livechat replaces do: two clients of one user in a room, one asks, both
// see the stream; a client of another user is refused the room; a bad token is refused.
//
//   node room.mjs '<json request>'   ->   one line of JSON on stdout
//
// request: {"url": "http://…", "token": "<jwt>", "otherToken": "<jwt>", "room": "…",
//           "content": "…"}
import { io } from "socket.io-client";

const WAIT_MS = 60000;

function connect(url, options) {
  const socket = io(url, { reconnection: false, timeout: WAIT_MS, ...options });
  const events = [];
  socket.onAny((name, data) => events.push([name, data]));
  const opened = new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (error) => reject(error));
  });
  return { socket, events, opened };
}

function next(socket, name) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} event`)), WAIT_MS);
    socket.once(name, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

async function refusedConnect(url) {
  const { socket, opened } = connect(url, { auth: { token: "not-a-jwt" } });
  try {
    await opened;
    return { refused: false };
  } catch (error) {
    return { refused: true, message: error.message, data: error.data };
  } finally {
    socket.close();
  }
}

async function main() {
  const request = JSON.parse(process.argv[2]);
  const { url, token, otherToken, room, content } = request;
  // One client on polling only, one on WebSocket (after polling, as by default).
  const first = connect(url, { auth: { token }, transports: ["polling"] });
  const second = connect(url, { query: { access_token: token } });
  const other = connect(url, { auth: { token: otherToken }, transports: ["websocket"] });
  const [a, b, c] = await Promise.all([first.opened, second.opened, other.opened]);
  try {
    const joinedA = await a.emitWithAck("join-room", { roomName: room, participantName: "Ann" });
    const arrival = next(a, "participant-joined");
    const joinedB = await b.emitWithAck("join-room", { roomName: room, participantName: "Bo" });
    const participant = await arrival;
    // Another user: the room is not theirs (404 as everywhere).
    const otherError = next(c, "stream-error");
    const refusedJoin = await c.emitWithAck("join-room", { roomName: room });
    const refusedJoinEvent = await otherError;

    const doneA = next(a, "stream-complete");
    const doneB = next(b, "stream-complete");
    const sent = await a.emitWithAck("stream-chat", {
      roomName: room,
      messages: [{ role: "user", content }],
    });
    await Promise.all([doneA, doneB]);
    // A message that is not the user's last: an error for the sender alone.
    const badError = next(a, "stream-error");
    const bad = await a.emitWithAck("stream-chat", {
      roomName: room,
      messages: [{ role: "assistant", content: "not a question" }],
    });
    const badEvent = await badError;
    const badToken = await refusedConnect(url);
    return {
      status: "ok",
      sockets: { first: a.id, second: b.id },
      joinedA,
      joinedB,
      participant,
      refusedJoin,
      refusedJoinEvent,
      sent,
      bad,
      badEvent,
      first: first.events,
      second: second.events,
      other: other.events,
      badToken,
    };
  } finally {
    a.close();
    b.close();
    c.close();
  }
}

// Exits once the answer is written: a closed client's timers (the connect timeout of
// the refused one) would otherwise keep node running until they fire.
main().then(
  (result) => process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0)),
  (error) => {
    const failed = { status: "failed", error: String(error?.message ?? error) };
    process.stdout.write(JSON.stringify(failed) + "\n", () => process.exit(1));
  },
);
