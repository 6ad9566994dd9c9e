"""Fixtures shared by every test: a real nats-server per test, PostgreSQL and Redis from CI."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack.natsserver import NatsServer

REQUIRE_SERVICES = os.environ.get("LIVECHAT_TEST_REQUIRE_SERVICES") == "1"
# Every test of these folders runs the whole system, nats-server included; so does every
# test that asks for one of these fixtures (`stack`: the whole system, as `make dev` runs it).
_WHOLE_SYSTEM_DIRS = frozenset({"e2e", "browser"})
_NATS_FIXTURES = frozenset({"nats_server", "stack"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `nats` every test that starts a real nats-server, so that
    `pytest -m "not nats"` (`make test-fast`) runs without one. Modules that start
    one by hand carry the mark themselves."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _NATS_FIXTURES or item.path.parent.name in _WHOLE_SYSTEM_DIRS:
            item.add_marker(pytest.mark.nats)


def _missing(what: str) -> None:
    message = f"{what} is not set"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and LIVECHAT_TEST_REQUIRE_SERVICES=1")
    pytest.skip(message)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream on a free port; tests may kill and restart it."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    base = os.environ.get("LIVECHAT_TEST_DATABASE_URL")
    if not base:
        _missing("LIVECHAT_TEST_DATABASE_URL")
    assert base is not None
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"livechat_test_{uuid.uuid4().hex[:12]}"
    dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("LIVECHAT_TEST_REDIS_URL")
    if not url:
        _missing("LIVECHAT_TEST_REDIS_URL")
    assert url is not None
    return url
