"""The stream sequence read from a JetStream ack subject, in both of its formats."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from gateway.fanout.acks import stream_sequence


@pytest.mark.parametrize(
    "reply",
    [
        # v1: no domain, no account hash.
        "$JS.ACK.LIVECHAT_EVENTS.hub1.1.4711.12.1700000000000000000.0",
        # v2: domain and account hash, a random token at the end.
        "$JS.ACK.hub.ACCHASH.LIVECHAT_EVENTS.hub1.1.4711.12.1700000000000000000.0.x7Q",
        # v2 with tokens a later server may append.
        "$JS.ACK._.ACCHASH.LIVECHAT_EVENTS.hub1.2.4711.12.1700000000000000000.3.x7Q.more.more",
    ],
)
def test_the_stream_sequence_is_the_one_nats_py_reads(reply: str) -> None:
    expected = Msg(None, reply=reply).metadata.sequence.stream  # type: ignore[arg-type]
    assert stream_sequence(reply) == expected == 4711


@pytest.mark.parametrize(
    "reply", ["", "_INBOX.abc", "$JS.ACK.too.few", "$JS.API.A.B.C.D.E.F.G", "$JS.ACK.S.C.1.x.2.3.4"]
)
def test_anything_else_is_refused(reply: str) -> None:
    with pytest.raises(ValueError):
        stream_sequence(reply)
