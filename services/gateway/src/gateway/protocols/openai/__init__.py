"""The OpenAI-compatible chat completions endpoint."""
