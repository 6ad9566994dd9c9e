"""The whole system as `make dev` runs it: embedded nats-server and four service processes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fake_gemini import FakeGemini
from fake_openai import FakeOpenAI
from stacks import FAST_ENV, running_stack

from devstack.runner import DevStack

StackFactory = Callable[..., DevStack]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """One system shared by the tests of a module that do not break it."""
    with running_stack(tmp_path_factory.mktemp("stack"), FAST_ENV) as running:
        yield running


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Systems of a test's own, for tests that kill and restart parts of them."""
    numbers = itertools.count()
    with ExitStack() as started:

        def make(**env: str) -> DevStack:
            data_dir = tmp_path / f"stack{next(numbers)}"
            return started.enter_context(running_stack(data_dir, {**FAST_ENV, **env}))

        yield make


@pytest.fixture(scope="module")
def groq() -> Iterator[FakeOpenAI]:
    """A local server speaking Groq's (OpenAI's) wire format, for a module's stack."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    """A local server speaking Gemini's wire format, for a module's stack."""
    with FakeGemini() as server:
        yield server
