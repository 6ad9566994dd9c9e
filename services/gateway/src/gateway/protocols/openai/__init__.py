"""The OpenAI-compatible surface: chat completions and the model list."""
