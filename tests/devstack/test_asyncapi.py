"""The AsyncAPI document in docs/ is generated from the services' FastStream routers."""

from __future__ import annotations

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
    ):
        assert "send" in generated[address], address
    assert generated[subjects.USAGE_REPORTED] == {"send", "receive"}
    for service in ("inference", "memory", "usage"):
        assert subjects.ping(service) in generated


def test_the_committed_document_is_up_to_date() -> None:
    committed = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    generated = yaml.safe_load(system_document())
    assert _channels(committed) == _channels(generated), "run `make asyncapi`"
    assert committed["components"]["schemas"] == generated["components"]["schemas"]
