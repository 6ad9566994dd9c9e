"""API keys as an alternative to JWTs: LIVECHAT_API_KEYS maps each key to its user."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

__all__ = ["ApiKeys", "parse_api_keys"]


def parse_api_keys(value: object) -> object:
    """A JSON object `{"key": "user"}` or a comma list `key:user,key2:user2`."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        return json.loads(text)
    keys: dict[str, str] = {}
    for part in text.split(","):
        key, sep, user = part.strip().partition(":")
        if not sep or not key.strip() or not user.strip():
            # Not the entry itself: it holds a secret.
            raise ValueError("LIVECHAT_API_KEYS entries are `key:user`")
        keys[key.strip()] = user.strip()
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Looks keys up by their SHA-256, so no comparison leaks a key's prefix by its timing."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._users = {_digest(key): user for key, user in keys.items()}

    def __bool__(self) -> bool:
        return bool(self._users)

    def user_of(self, key: str) -> str | None:
        return self._users.get(_digest(key))
