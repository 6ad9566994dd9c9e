// Drives the gateway's /api/chat with the real AI SDK client parts, as `useChat` does:
// DefaultChatTransport sends or reconnects, readUIMessageStream assembles the message.
//
//   node chat.mjs '<json request>'   ->   one line of JSON on stdout
//
// request: {"api": "http://…/api/chat", "chatId": "…", "action": "send" | "resume",
//           "messages": [UIMessage…], "trigger"?, "messageId"?, "abortAfterDeltas"?}
import { DefaultChatTransport, readUIMessageStream } from "ai";

async function read(stream, abortAfterDeltas, abort) {
  const chunks = [];
  const [forChunks, forMessage] = stream.tee();
  const collecting = (async () => {
    const reader = forChunks.getReader();
    let deltas = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        chunks.push(value);
        if (value.type === "text-delta" && ++deltas === abortAfterDeltas) abort();
      }
    } catch (error) {
      if (error?.name !== "AbortError") throw error;
    }
  })();
  let message;
  const errors = [];
  try {
    for await (const snapshot of readUIMessageStream({
      stream: forMessage,
      onError: (error) => errors.push(String(error?.message ?? error)),
    })) {
      message = snapshot;
    }
  } catch (error) {
    if (error?.name !== "AbortError") throw error;
  }
  await collecting;
  const text = (message?.parts ?? [])
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("");
  return { status: "stream", message, text, chunks, errors };
}

async function main() {
  const request = JSON.parse(process.argv[2]);
  const controller = new AbortController();
  const transport = new DefaultChatTransport({ api: request.api, fetch: globalThis.fetch });
  let stream;
  if (request.action === "resume") {
    stream = await transport.reconnectToStream({ chatId: request.chatId });
    if (stream === null) return { status: "none" };
  } else {
    stream = await transport.sendMessages({
      chatId: request.chatId,
      messages: request.messages,
      trigger: request.trigger ?? "submit-message",
      messageId: request.messageId,
      abortSignal: controller.signal,
    });
  }
  return read(stream, request.abortAfterDeltas, () => controller.abort());
}

main().then(
  (result) => process.stdout.write(JSON.stringify(result) + "\n"),
  (error) => {
    process.stdout.write(JSON.stringify({ status: "failed", error: String(error?.message ?? error) }) + "\n");
    process.exitCode = 1;
  },
);
