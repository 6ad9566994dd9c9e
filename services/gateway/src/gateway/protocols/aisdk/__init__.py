"""The Vercel AI SDK 5+ UI message stream endpoints."""
