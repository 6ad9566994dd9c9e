"""What a chaos client saw of one message it sent: the reply's events, by event id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts import ids

__all__ = ["TERMINAL", "Exchange"]

TERMINAL = ("done", "error")


@dataclass
class Exchange:
    """One user message and its reply, as one client saw them."""

    conversation_id: str
    message_id: str
    transport: str  # "sse" or "ws"
    sent_at: float = 0.0  # time.monotonic() of the first send
    accepted: bool = False  # the gateway took the message (200, or a WS event of it)
    sends: int = 0  # sends of the message (retries included)
    resumes: int = 0  # reconnections that resumed after the last event seen
    stopped: bool = False  # the client pressed stop during the reply
    refused: str | None = None  # a final refusal (an error code no retry fixes)
    last_problem: str = ""  # the last retried refusal or error, for the audit's report
    events: dict[int, dict[str, Any]] = field(default_factory=dict)  # the reply's, by id
    # What the client met, in order: "send", "resume@<last id>", "<type>#<id>" and its
    # problems (the audit's account of an answer it lists).
    arrivals: list[str] = field(default_factory=list)

    @property
    def reply_id(self) -> str:
        return ids.reply_id(self.conversation_id, self.message_id)

    def take(self, event: dict[str, Any]) -> None:
        """Keep an event if it belongs to this reply (a repeat of an id is kept once)."""
        if event.get("message_id") != self.reply_id or "event_id" not in event:
            return
        self.accepted = True
        self.events[int(event["event_id"])] = event
        self.arrivals.append(f"{event.get('type')}#{event['event_id']}")

    def note(self, what: str) -> None:
        """Something else the client met (a refusal, an error frame, a dropped stream)."""
        self.arrivals.append(what)

    def note_send(self) -> None:
        self.sends += 1
        self.arrivals.append("send")

    def note_resume(self) -> None:
        self.resumes += 1
        self.arrivals.append(f"resume@{self.last_event_id}")

    @property
    def last_event_id(self) -> int | None:
        return max(self.events) if self.events else None

    def terminals(self) -> list[dict[str, Any]]:
        """The distinct terminal events (done/error) of the reply."""
        return [e for _, e in sorted(self.events.items()) if e["type"] in TERMINAL]

    @property
    def finished(self) -> bool:
        return bool(self.terminals()) or self.refused is not None

    def joined_tokens(self) -> str:
        """The reply's text as a client builds it: its tokens joined, a `resync` (the
        whole text, after some token events were lost) replacing what came before it."""
        parts: list[str] = []
        for _, e in sorted(self.events.items()):
            if e["type"] == "token":
                parts.append(e["content"])
            elif e["type"] == "resync":
                parts = [e["content"]]
        return "".join(parts)

    def token_count(self) -> int:
        return sum(1 for e in self.events.values() if e["type"] == "token")
