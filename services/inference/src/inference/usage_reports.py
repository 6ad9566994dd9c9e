"""What a reply's deliveries reported of their usage: read back from the usage stream.

Each report is stored on the reply's own subject (`subjects.usage_reported`) before the
delivery that made it goes on, and the ledger bills what the reports say, the first of
each attempt id. A later delivery of the reply reads them to show what it is billed,
whether or not the events that carried the bill on (`outbox.BILLED_HEADER`) are stored.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from contracts import subjects, topology
from contracts.events import Usage, UsageReported

__all__ = ["read_usage_reports"]


async def read_usage_reports(
    nc: Client, conversation_id: str, reply_id: str, *, timeout: float = 5.0
) -> dict[str, Usage]:
    """The usage reported for each attempt of the reply, by attempt id: the first report
    of each, as the ledger keeps it (a report made again past the stream's dedupe window
    is stored again, and the ledger ignores it).

    One request per report, and one more: the stream's leader answers each one with
    the next message of the subject (a reply has a few reports).
    """
    js = nc.jetstream(timeout=timeout)
    subject = subjects.usage_reported(conversation_id, reply_id)
    reported: dict[str, Usage] = {}
    sequence = 1
    while True:
        try:
            msg = await js.get_msg(topology.USAGE_STREAM, seq=sequence, subject=subject, next=True)
        except NotFoundError:
            # No report after `sequence`; or no stream (deleted, made anew later): then
            # the bill the status events carried stands (`generation._Bill.add_earlier`).
            return reported
        sequence = (msg.seq or sequence) + 1
        try:
            report = UsageReported.model_validate_json(msg.data or b"")
        except ValidationError:
            continue  # not a report: the ledger terminates it
        reported.setdefault(report.attempt_id, report.usage)
