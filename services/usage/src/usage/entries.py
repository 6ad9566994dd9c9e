"""A ledger entry as its row holds it, and its analytics copy (`UsageRecorded`) as JSON.

A batch's entries are built from the rows it inserted (the values given) and the
rows it read (a redelivery): the hot path reads the row's fields and serializes
its analytics copy straight from it, without a pydantic model per entry; the model
is built only when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from contracts.events import SCHEMA_VERSION, Outcome, Usage, UsageRecorded

__all__ = ["ENTRY_COLUMNS", "USAGE_COLUMNS", "Row", "entry_json", "entry_of"]

# A ledger row's values by column name.
Row = Mapping[str, Any]

# The token counts are columns of their own; every other column of an entry is a
# field of the same name on both the report and the entry.
USAGE_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens")
ENTRY_COLUMNS = (
    "attempt_id",
    "message_id",
    "conversation_id",
    "user_id",
    "model",
    "provider",
    "provider_model",
    "estimated",
    "outcome",
    "time_to_first_token_ms",
    "duration_ms",
    "occurred_at",
    "recorded_at",
    "cost_usd",
)


class _UsageJson(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _EntryJson(TypedDict):
    """`UsageRecorded`'s fields, in its order (its JSON is this one's, byte for byte)."""

    schema_version: int
    kind: Literal["usage_recorded"]
    attempt_id: str
    message_id: str
    conversation_id: str
    user_id: str
    model: str
    provider: str
    provider_model: str
    usage: _UsageJson
    estimated: bool
    outcome: Outcome
    time_to_first_token_ms: float | None
    duration_ms: float
    occurred_at: datetime
    recorded_at: datetime
    cost_usd: float | None


_ENTRY_JSON = TypeAdapter(_EntryJson)


def entry_json(row: Row) -> bytes:
    """The analytics copy of the entry in `row`, as `UsageRecorded.model_dump_json` has it."""
    return _ENTRY_JSON.dump_json(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": "usage_recorded",
            "attempt_id": row["attempt_id"],
            "message_id": row["message_id"],
            "conversation_id": row["conversation_id"],
            "user_id": row["user_id"],
            "model": row["model"],
            "provider": row["provider"],
            "provider_model": row["provider_model"],
            "usage": {
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "total_tokens": row["total_tokens"],
            },
            "estimated": row["estimated"],
            "outcome": row["outcome"],
            "time_to_first_token_ms": row["time_to_first_token_ms"],
            "duration_ms": row["duration_ms"],
            "occurred_at": row["occurred_at"],
            "recorded_at": row["recorded_at"],
            "cost_usd": row["cost_usd"],
        }
    )


def entry_of(row: Row) -> UsageRecorded:
    # Not validated again: the row holds a validated report, in the field types
    # (the columns map onto them, times come back as UTC).
    return UsageRecorded.model_construct(
        usage=Usage.model_construct(**{name: row[name] for name in USAGE_COLUMNS}),
        **{name: row[name] for name in ENTRY_COLUMNS},
    )
