"""Feedback on answers: stored per user and message, each change published for analytics."""
