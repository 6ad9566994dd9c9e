// Server-Sent Events over fetch (so the Authorization and Last-Event-ID
// headers can be set), parsed as the HTML standard says.

export async function* readSse(response, signal) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort);
  let buffer = "";
  let event = { id: null, type: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (event.data.length) yield { id: event.id, type: event.type, data: event.data.join("\n") };
          event = { id: null, type: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") event.data.push(value);
        else if (field === "event") event.type = value;
        else if (field === "id") event.id = value;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

// The event object of a frame: the data carries the same fields as a WebSocket frame.
export function sseEvent(frame) {
  let data;
  try {
    data = JSON.parse(frame.data);
  } catch {
    return null;
  }
  if (!data.type) data.type = frame.type;
  if (data.event_id == null && frame.id != null && /^\d+$/.test(frame.id)) {
    data.event_id = Number(frame.id);
  }
  return data;
}
