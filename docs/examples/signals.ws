A → {"type": "subscribe", "conversation_id": "my-first-chat"}
A → {"type": "ping"}
A ← {"type":"pong"}
B → {"type": "subscribe", "conversation_id": "my-first-chat"}
A ← {"type":"presence","conversation_id":"my-first-chat","user_id":"local","client_id":"9c1f0b7e2d4a4c1e8f3b6a5d7c9e0f12","state":"joined"}
B ← {"type":"presence","conversation_id":"my-first-chat","user_id":"local","client_id":"4e2a6c8b0d1f4a3c9e5b7d2f1a6c8e04","state":"present"}
B → {"type": "typing", "conversation_id": "my-first-chat", "is_typing": true}
A ← {"type":"typing","conversation_id":"my-first-chat","user_id":"local","client_id":"9c1f0b7e2d4a4c1e8f3b6a5d7c9e0f12","is_typing":true}
A → {"type": "read", "conversation_id": "my-first-chat", "event_id": 1796426477457360}
B ← {"type":"read","conversation_id":"my-first-chat","user_id":"local","client_id":"4e2a6c8b0d1f4a3c9e5b7d2f1a6c8e04","event_id":1796426477457360}
