"""The REST API: messages (SSE or JSON), events, cancel, conversations, usage."""
