"""livechat usage: the token ledger, per-user totals, and the analytics stream."""

from usage.app import create_app, main
from usage.database import create_engine, migrate
from usage.handlers import create_router
from usage.ledger import Ledger, Recorded
from usage.settings import UsageSettings

__all__ = [
    "Ledger",
    "Recorded",
    "UsageSettings",
    "create_app",
    "create_engine",
    "create_router",
    "main",
    "migrate",
]
