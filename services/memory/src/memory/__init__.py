"""livechat memory: conversation history in SQL, context for the workers."""

from memory.app import create_app
from memory.handlers import create_router
from memory.history.repository import SqlConversationRepository
from memory.history.store import ConversationStore, StoreOutcome
from memory.settings import MemorySettings

__all__ = [
    "ConversationStore",
    "MemorySettings",
    "SqlConversationRepository",
    "StoreOutcome",
    "create_app",
    "create_router",
]
