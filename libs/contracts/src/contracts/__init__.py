"""livechat contracts: subjects, streams, event and request-reply models, settings base."""

from contracts import events, ids, rpc, subjects, topology
from contracts.settings import LivechatSettings

__all__ = ["LivechatSettings", "events", "ids", "rpc", "subjects", "topology"]
