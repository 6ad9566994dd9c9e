"""Conversation history: the store protocol, the SQL repository and tables, the Redis cache."""
