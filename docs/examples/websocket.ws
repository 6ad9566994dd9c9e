→ {"type": "message", "conversation_id": "my-first-chat", "content": "Hello again"}
← {"type":"message","event_id":1796426477457238,"conversation_id":"my-first-chat","message_id":"c26940ef8352429f9239f50c1d07e6af","role":"user","content":"Hello again","created_at":"2026-12-04T23:12:14.493905Z","user_id":"local"}
← {"type":"start","event_id":1796426477457239,"conversation_id":"my-first-chat","message_id":"ac21ddbdf6ce0c5bcf5579771511e4c7","model":"auto","provider":"demo"}
← {"type":"status","event_id":1796426477457240,"conversation_id":"my-first-chat","message_id":"ac21ddbdf6ce0c5bcf5579771511e4c7","state":"generating"}
← {"type":"token","event_id":1796426477457241,"conversation_id":"my-first-chat","message_id":"ac21ddbdf6ce0c5bcf5579771511e4c7","content":"You "}
← …
← {"type":"done","event_id":1796426477457360,"conversation_id":"my-first-chat","message_id":"ac21ddbdf6ce0c5bcf5579771511e4c7","finish_reason":"stop","usage":{"prompt_tokens":344,"completion_tokens":119,"total_tokens":463},"model":"auto","provider":"demo"}
→ {"type": "ping"}
← {"type":"pong"}
