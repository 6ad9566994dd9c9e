# LAST_EVENT_ID: the `id:` of the last event you got
curl -N -H "Last-Event-ID: ${LAST_EVENT_ID:?set it to the id of the last event you got}" \
  http://127.0.0.1:8000/v1/conversations/my-first-chat/events
