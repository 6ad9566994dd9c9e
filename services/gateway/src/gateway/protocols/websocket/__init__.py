"""The WebSocket protocol: GET /v1/ws and one session per socket."""
