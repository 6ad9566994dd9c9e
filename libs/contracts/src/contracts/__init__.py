"""livechat contracts: subjects, streams, consumer configs, event and request-reply models,
settings base."""

from contracts import attachments, consumers, events, ids, rpc, subjects, topology
from contracts.settings import LivechatSettings

__all__ = [
    "LivechatSettings",
    "attachments",
    "consumers",
    "events",
    "ids",
    "rpc",
    "subjects",
    "topology",
]
