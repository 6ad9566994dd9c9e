curl -H 'Content-Type: application/json' \
  -d '{"content": "What is a river?", "model": "demo"}' \
  http://127.0.0.1:8000/v1/conversations/my-first-chat/messages
