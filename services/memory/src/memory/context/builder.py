"""The context of one reply, in layers: system prompt, knowledge, personal memory, history.

The worker puts the system prompt first (the request's, else the conversation's
`system_prompt` of the reply), then `messages`, then the user message. `messages`
starts with a system message of knowledge base passages and one of relevant
exchanges from the user's other conversations (each only when something is
relevant), followed by the history, oldest first. Everything is trimmed to the
token budget: the oldest history goes first, knowledge and personal memory each
keep at most a share of the budget.
"""

from __future__ import annotations

import asyncio

from contracts.events import ContextMessage
from contracts.rpc import ContextReply, ContextRequest
from memory.context.knowledge import KnowledgeBase
from memory.history.store import ConversationStore, Exchange
from memory.settings import MemorySettings
from runtime.token_estimate import estimate_message_tokens

__all__ = ["ContextBuilder"]

KNOWLEDGE_HEADER = "Reference material from the knowledge base (use it when it is relevant):"
PERSONAL_HEADER = "Relevant exchanges from the user's earlier conversations:"
# Longest text of one remembered question or answer.
_EXCHANGE_CHARS = 600


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ContextBuilder:
    def __init__(
        self,
        store: ConversationStore,
        knowledge: KnowledgeBase,
        settings: MemorySettings,
    ) -> None:
        """The store's history names the images of its user messages (the worker reads
        their bytes): a follow-up question still shows the model a picture."""
        self._store = store
        self._knowledge = knowledge
        self._settings = settings

    async def build(self, request: ContextRequest) -> ContextReply:
        # With the worker's query, personal memory needs nothing from the history: both
        # reads run at once (one after the other, they held the first token back).
        related = None
        if self._settings.personal_memory_exchanges and request.query:
            related = asyncio.create_task(self._related(request, request.query))
        try:
            return await self._build(request, related)
        finally:
            await _discard(related)

    async def _related(self, request: ContextRequest, query: str) -> list[Exchange]:
        """The exchanges of personal memory, best first (the store's full-text index)."""
        wanted = self._settings.personal_memory_exchanges
        return await self._store.search_exchanges(
            request.user_id, request.conversation_id, query, wanted
        )

    async def _build(
        self, request: ContextRequest, related: asyncio.Task[list[Exchange]] | None
    ) -> ContextReply:
        settings = self._settings
        base = await self._store.context(request, settings.context_messages)
        if base.existing_reply is not None:
            return base  # already answered: the worker stops there
        history = list(base.messages)
        query = request.query
        if query is None:
            query = next((m.content for m in reversed(history) if m.role == "user"), "")
        budget = settings.context_token_budget or None
        left = None
        if budget is not None:
            left = (
                budget
                - estimate_message_tokens(query)
                - estimate_message_tokens(base.system_prompt or "")
            )

        layers: list[ContextMessage] = []
        passages = self._knowledge.search(query, settings.knowledge_passages) if query else []
        knowledge = _section(
            KNOWLEDGE_HEADER, [f"[{name}] {text}" for name, text in passages], _cap(left, budget, 4)
        )
        if knowledge is not None:
            layers.append(knowledge)
            left = None if left is None else left - estimate_message_tokens(knowledge.content)
        if settings.personal_memory_exchanges and query:
            chosen = await (related if related is not None else self._related(request, query))
            personal = _section(
                PERSONAL_HEADER,
                [
                    f"User: {_clip(e.question, _EXCHANGE_CHARS)}\n"
                    f"Assistant: {_clip(e.answer, _EXCHANGE_CHARS)}"
                    for e in chosen
                ],
                _cap(left, budget, 8),
            )
            if personal is not None:
                layers.append(personal)
                left = None if left is None else left - estimate_message_tokens(personal.content)
        if left is not None:
            kept: list[ContextMessage] = []
            for message in reversed(history):  # the newest first
                left -= estimate_message_tokens(message.content)
                if left < 0:
                    break
                kept.append(message)
            history = kept[::-1]
        return ContextReply(system_prompt=base.system_prompt, messages=(*layers, *history))


async def _discard(task: asyncio.Task[list[Exchange]] | None) -> None:
    """Stop a read nobody uses any more (an error, or the reply was already stored)."""
    if task is None or (task.done() and (task.cancelled() or task.exception() is None)):
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: the failure of an unused read is no error


def _cap(left: int | None, budget: int | None, share: int) -> int | None:
    if left is None or budget is None:
        return None
    return min(left, budget // share)


def _section(header: str, items: list[str], cap: int | None) -> ContextMessage | None:
    """A system message of `header` and the items that fit in `cap` tokens, best first."""
    text = header
    added = 0
    for item in items:
        candidate = f"{text}\n\n{item}"
        if cap is not None and estimate_message_tokens(candidate) > cap:
            break
        text, added = candidate, added + 1
    return ContextMessage(role="system", content=text) if added else None
