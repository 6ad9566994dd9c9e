"""The AsyncAPI document in docs/ is generated from the services' FastStream routers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from contracts import subjects
from devstack.asyncapi import system_document

ROOT = Path(__file__).resolve().parents[2]


def _channels(document: dict[str, Any]) -> dict[str, set[str]]:
    """address → the titles of the operations on it."""
    found: dict[str, set[str]] = {}
    for channel in document["channels"].values():
        found.setdefault(channel["address"], set())
    for operation in document["operations"].values():
        ref = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        address = document["channels"][ref]["address"]
        found[address].add(operation["action"])
    return found


def test_the_document_covers_every_subject_of_the_data_path() -> None:
    generated = _channels(yaml.safe_load(system_document()))
    conv = "{conversation_id}"
    assert generated[subjects.GENERATE] == {"send", "receive"}
    assert generated[subjects.CHAT_ALL] == {"receive"}
    for address in (
        subjects.chat_user(conv),
        subjects.chat_finished(conv),
        subjects.chat_failed(conv),
        subjects.events(conv),
        subjects.USAGE_RECORDED,
        subjects.feedback_changed(conv),
    ):
        assert "send" in generated[address], address
    # Reported on each reply's own subject, consumed on all of them.
    assert generated[subjects.usage_reported(conv, "{message_id}")] == {"send"}
    assert generated[subjects.USAGE_REPORTED_ALL] == {"receive"}
    for service in ("inference", "memory", "usage"):
        assert subjects.ping(service) in generated


def test_the_committed_document_is_up_to_date() -> None:
    committed = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    generated = yaml.safe_load(system_document())
    assert _channels(committed) == _channels(generated), "run `make asyncapi`"
    assert committed["components"]["schemas"] == generated["components"]["schemas"]


def test_make_asyncapi_twice_leaves_no_diff(tmp_path: Path) -> None:
    # Separate processes with different hash seeds: the order of sets and dicts built at
    # import time changes with the seed, and the document must not.
    written = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"asyncapi-{seed}.yaml"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-m", "devstack.asyncapi", str(out)], env=env, check=True, timeout=120
        )
        written.append(out.read_text())
    assert written[0] == written[1] == written[2]
    assert written[0] == (ROOT / "docs" / "asyncapi.yaml").read_text(), "run `make asyncapi`"
