"""The stream sequence of a JetStream message, read from its ack (reply) subject."""

from __future__ import annotations

__all__ = ["stream_sequence"]

# $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
_V1_TOKENS = 9
_V1_SEQ = 5
# $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.
#   <consumer seq>.<time>.<pending>.<random>[.<tokens a later server may add>]
_V2_MIN_TOKENS = 12
_V2_SEQ = 7


def stream_sequence(reply: str) -> int:
    """What `msg.metadata.sequence.stream` gives, without building the whole metadata
    (a dataclass pair and a datetime per message: a measurable share of the hub's time).

    Raises ValueError when `reply` is not a JetStream ack subject.
    """
    tokens = reply.split(".")
    count = len(tokens)
    if tokens[0] == "$JS" and count > 1 and tokens[1] == "ACK":
        if count == _V1_TOKENS:
            return int(tokens[_V1_SEQ])
        if count >= _V2_MIN_TOKENS:
            return int(tokens[_V2_SEQ])
    raise ValueError("not a JetStream ack subject")
