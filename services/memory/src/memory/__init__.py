"""livechat memory: conversation history in SQL, context for the workers."""

from memory.app import create_app, create_broker
from memory.repository import SqlConversationRepository
from memory.router import create_router
from memory.settings import MemorySettings
from memory.store import ConversationStore, StoreOutcome

__all__ = [
    "ConversationStore",
    "MemorySettings",
    "SqlConversationRepository",
    "StoreOutcome",
    "create_app",
    "create_broker",
    "create_router",
]
