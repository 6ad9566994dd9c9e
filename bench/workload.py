"""What every run sends: the same prompts, staggered the same way, direct or through the system."""

from __future__ import annotations

__all__ = ["prompt", "stagger"]

_TOPICS = (
    "mountain rivers and glaciers",
    "sourdough bread fermentation",
    "distributed consensus protocols",
    "coral reef ecosystems",
    "medieval castle architecture",
    "electric vehicle batteries",
    "jazz harmony and improvisation",
    "volcanic island formation",
)


def prompt(conversation: int, message: int) -> str:
    topic = _TOPICS[(conversation + message) % len(_TOPICS)]
    return f"Please explain {topic} (conversation {conversation}, question {message})"


def stagger(conversation: int, conversations: int, period: float) -> float:
    """When a conversation sends its first message, so that starts spread over one answer.

    A burst of simultaneous sends would measure queueing of the burst, not the
    steady added latency of N conversations in flight.
    """
    return period * conversation / conversations
