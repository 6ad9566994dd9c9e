"""Fixtures of the memory tests: a migrated database (SQLite and PostgreSQL), settings."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from memory import MemorySettings, SqlConversationRepository
from memory.history.database import create_engine, migrate

# The test modules import their helpers from memory_testing.py beside this file
# (pytest runs with --import-mode=importlib, which puts no test directory on the path).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def repository(engine: AsyncEngine) -> SqlConversationRepository:
    return SqlConversationRepository(engine)


@pytest.fixture
def memory_settings(nats_url: str, sqlite_url: str, tmp_path: Path) -> MemorySettings:
    return MemorySettings(
        nats_url=nats_url,
        database_url=sqlite_url,
        data_dir=tmp_path / "data",
        memory_ack_wait_seconds=2.0,
    )
