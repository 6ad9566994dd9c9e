curl -N -H 'Accept: text/event-stream' -H 'Content-Type: application/json' \
  -d '{"content": "Hello there"}' \
  http://127.0.0.1:8000/v1/conversations/my-first-chat/messages
