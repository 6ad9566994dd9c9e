"""`python -m devstack.asyncapi [out.yaml]`: the AsyncAPI document of the whole system.

Every service defines its NATS side on a router; here they are all included in
one broker so the document shows every subject, who publishes and who consumes.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["system_document"]


def system_document() -> str:
    # Imported here: devstack itself does not depend on the services.
    import gateway.handlers
    import inference.handlers
    import inference.settings
    import memory.feedback.desk
    import memory.feedback.publisher
    import memory.feedback.repository
    import memory.handlers
    import memory.history.repository
    import memory.settings
    import usage.handlers
    import usage.ledger
    import usage.settings

    # Engines are never connected: building the routers needs only their collaborators.
    engine = create_async_engine("sqlite+aiosqlite://")
    broker = NatsBroker()
    broker.include_router(gateway.handlers.create_router())
    broker.include_router(inference.handlers.create_router(inference.settings.InferenceSettings()))
    conversations = memory.history.repository.SqlConversationRepository(engine)
    feedback = memory.feedback.repository.SqlFeedbackRepository(engine)
    broker.include_router(
        memory.handlers.create_router(
            memory.settings.MemorySettings(),
            conversations,
            feedback=memory.feedback.desk.FeedbackDesk(
                conversations,
                feedback,
                memory.feedback.publisher.FeedbackPublisher(
                    feedback, timeout=1.0, interval_seconds=1.0
                ),
                lambda: datetime.now(UTC),
            ),
        )
    )
    broker.include_router(
        usage.handlers.create_router(usage.ledger.Ledger(engine), usage.settings.UsageSettings())
    )
    spec = AsyncAPI(
        broker,
        title="livechat",
        version="0.1.0",
        description=(
            "Streaming AI live chat on NATS JetStream. Subjects and payloads of every "
            "service; the models live in libs/contracts."
        ),
    )
    return _in_stable_order(spec.to_specification().to_yaml())


# The sections FastStream fills in the order of sets and dicts built at import time
# (which vary with the hash seed): sorted by name, so `make asyncapi` twice is no diff.
_NAMED_SECTIONS = ("channels", "operations")


def _in_stable_order(text: str) -> str:
    document: dict[str, Any] = yaml.safe_load(text)
    for name in _NAMED_SECTIONS:
        if name in document:
            document[name] = dict(sorted(document[name].items()))
    components = document.get("components", {})
    for name, section in components.items():
        if isinstance(section, dict):
            components[name] = dict(sorted(section.items()))
    stable: str = yaml.dump(document, sort_keys=False)
    return stable


def main() -> int:
    text = system_document()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
