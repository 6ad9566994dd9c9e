"""One generation request, start to finish (docs/architecture.md, step 2)."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypedDict, TypeVar

from faststream.nats import NatsBroker
from nats.aio.client import Client
from opentelemetry.trace import Tracer

from contracts import ids, subjects
from contracts.events import (
    ContextMessage,
    DoneEvent,
    ErrorEvent,
    FinishReason,
    GenerationFailed,
    GenerationFinished,
    GenerationRequested,
    MessageStatus,
    Outcome,
    ResyncEvent,
    StartEvent,
    StatusEvent,
    ToolCallEvent,
    Usage,
    UsageReported,
)
from contracts.rpc import ContextReply, ContextRequest, ReplyError, StoredMessage
from inference.cancel import CancelSignal
from inference.clock import Clock
from inference.coalescing import TokenCoalescer
from inference.failover.breaker import CircuitBreaker
from inference.failover.chain import (
    Call,
    Cancelled,
    Chain,
    ChainPolicy,
    Failed,
    Finished,
    Retrying,
    Spent,
    Token,
    Using,
)
from inference.failover.outcomes import PublicError
from inference.images import ImagesMissing, message_images, seeing_images, with_images
from inference.leader_watch import LeaderWatch
from inference.outbox import Outbox
from inference.providers.base import Provider, ProviderRequest, ToolCallDelta
from inference.providers.model_routes import Route, UnknownModelError, default_models, resolve
from inference.receipts import AckInbox
from inference.reply_log import ReplyLog, read_reply_log
from inference.settings import InferenceSettings
from inference.usage_reports import read_usage_reports
from runtime.token_estimate import estimate_prompt_tokens

__all__ = ["ReadReplyLog", "ReadUsageReports", "Worker", "chain_policy"]

log = logging.getLogger("inference")

# (connection, conversation id, reply id) -> what earlier deliveries published.
ReadReplyLog = Callable[[Client, str, str], Awaitable[ReplyLog]]
# (connection, conversation id, reply id) -> the usage reported, by attempt id.
ReadUsageReports = Callable[[Client, str, str], Awaitable[Mapping[str, Usage]]]


T = TypeVar("T")


def _first_set(value: T | None, default: T | None) -> T | None:
    """The request's own value, else the operator's default (LIVECHAT_DEFAULT_*)."""
    return default if value is None else value


def chain_policy(settings: InferenceSettings) -> ChainPolicy:
    return ChainPolicy(
        max_attempts=settings.provider_max_attempts,
        retry_budget=settings.provider_retry_budget_seconds,
        backoff_base=settings.provider_backoff_base_seconds,
        stall=settings.provider_stall_seconds,
    )


@dataclass(slots=True)
class _Bill:
    """What a reply's attempts were billed so far: the usage of each attempt id, once.

    The usage its `done` and its stored message show, so that they equal what the
    ledger bills for it (interrupted and switched calls included): the ledger keeps
    one entry per attempt id. A later delivery starts from the reply's usage reports
    (`add_earlier`); the status events carry the bill on too (`BILLED_HEADER`).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: set[str] = field(default_factory=set)

    def add(self, attempt_id: str, usage: Usage) -> None:
        """Count an attempt's usage, unless it is counted already."""
        if attempt_id in self.attempts:
            return
        self.attempts.add(attempt_id)
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens

    def add_earlier(self, reported: Mapping[str, Usage], carried: Usage | None) -> None:
        """What earlier deliveries billed: the reply's usage reports, by attempt id, and
        of the bill the reply log carried, what they lack (calls reported before each
        reply had a subject of its own, see `subjects.USAGE_REPORTED`). Every report a
        status event's bill counts is in the stream before that event is published."""
        for attempt_id, usage in reported.items():
            self.add(attempt_id, usage)
        if carried is None:
            return
        prompt = max(carried.prompt_tokens - self.prompt_tokens, 0)
        completion = max(carried.completion_tokens - self.completion_tokens, 0)
        if prompt or completion:
            self.add(_UNREPORTED, Usage.of(prompt, completion))

    def total(self) -> Usage:
        return Usage.of(self.prompt_tokens, self.completion_tokens)

    def with_call(self, spent: Spent | None) -> Usage:
        """The total once `spent` (the reply's last call, not reported yet) is too."""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        if spent is not None:
            prompt += spent.usage.prompt_tokens
            completion += spent.usage.completion_tokens
        return Usage.of(prompt, completion)


@dataclass(frozen=True, slots=True)
class _Run:
    """One delivery of a request, with what every publish needs."""

    request: GenerationRequested
    outbox: Outbox
    alias: str
    delivery: int
    messages: tuple[ContextMessage, ...]
    created_at: datetime
    bill: _Bill
    # The connection's reconnects and the events stream's leader elections when the
    # delivery began (`Outbox.disturbances`): another count at its end means NATS
    # restarted or lost the stream's leader mid-answer, and token events (core
    # publishes) may be lost even if acked (a stream recreated empty). Those the stream
    # never acked are told by `Outbox.unconfirmed`, whether or not this was heard of.
    disturbances: int


class _Record(TypedDict):
    """The fields a finished and a failed reply's records for memory share."""

    message_id: str
    conversation_id: str
    user_id: str
    reply_to: str
    content: str
    model: str
    created_at: datetime
    finished_at: datetime
    regenerated: bool


class Worker:
    def __init__(
        self,
        settings: InferenceSettings,
        providers: Mapping[str, Provider],
        *,
        clock: Clock,
        read_log: ReadReplyLog = read_reply_log,
        read_usage: ReadUsageReports = read_usage_reports,
        breaker: CircuitBreaker | None = None,
        rng: random.Random | None = None,
        tracer: Tracer | None = None,
        leaders: LeaderWatch | None = None,
    ) -> None:
        self._settings = settings
        # One per worker process: the events stream's leader elections it heard of.
        self._leaders = leaders or LeaderWatch()
        # One per worker connection: the subscription for the acks of its replies' events.
        self._acks: AckInbox | None = None
        self._providers = providers
        self._clock = clock
        self._read_log = read_log
        self._read_usage = read_usage
        self._coalesce_window = settings.token_coalesce_ms / 1000
        self._table = settings.model_table()
        self._default_models = default_models(settings)
        # One per worker process: what one generation learns about a provider, the
        # next ones use.
        breaker = breaker or CircuitBreaker(
            threshold=settings.breaker_failure_threshold,
            cooldown=settings.breaker_cooldown_seconds,
            clock=clock,
        )
        self._chain = Chain(
            providers,
            breaker=breaker,
            policy=chain_policy(settings),
            clock=clock,
            rng=rng,
            tracer=tracer,
        )

    async def generate(
        self,
        request: GenerationRequested,
        delivery: int,
        broker: NatsBroker,
        cancel: CancelSignal | None = None,
    ) -> bool:
        """Run one delivery; False when it should be tried again later (memory is away, or
        an earlier delivery is still answering it).

        Publishes every outcome; raises when NATS fails, leaving the request unfinished.
        `cancel`: the user's stop button for this request.
        """
        await self._leaders.watch(broker.connection)
        messages = await self._prompt(request, broker)
        if messages is None:
            return False
        alias = request.options.model or self._settings.default_model
        if isinstance(messages, StoredMessage):
            await self._end_again(request, messages, alias, broker)
            return True
        created_at = max(self._clock.now(), request.requested_at)
        outbox = Outbox(broker, leaders=self._leaders, acks=self._ack_inbox(broker))
        run = _Run(
            request, outbox, alias, delivery, messages, created_at, _Bill(), outbox.disturbances()
        )
        try:
            return await self._deliver(run, broker, cancel)
        finally:
            await outbox.close()

    def _ack_inbox(self, broker: NatsBroker) -> AckInbox:
        """The worker's subscription for the acks of its events (anew for a new connection)."""
        connection = broker.connection
        if self._acks is None or self._acks.connection is not connection:
            self._acks = AckInbox(connection)
        return self._acks

    async def _deliver(self, run: _Run, broker: NatsBroker, cancel: CancelSignal | None) -> bool:
        """Answer one delivery of a request (its context at hand), or end it otherwise;
        False when it should be tried again later (an earlier delivery is still on it)."""
        request, alias, messages, delivery = run.request, run.alias, run.messages, run.delivery
        try:
            routes = resolve(alias, self._table, self._providers.keys(), self._default_models)
        except UnknownModelError:
            message = f"Model {alias!r} is not available."
            await self._fail(run, None, "", PublicError("unknown_model", message, False))
            return True
        if any(m.images for m in messages):
            routes = seeing_images(routes, self._settings.vision_models)
            if not routes:
                message = f"No model of {alias!r} that is configured can see images."
                error = PublicError("unsupported_attachment", message, False)
                await self._fail(run, None, "", error)
                return True
        prior = await self._earlier_deliveries(run, broker)
        if prior is None:
            return True
        if self._still_generating(prior):
            log.info(
                "reply %s: its earlier delivery is still publishing; left to it", request.message_id
            )
            return False
        if delivery > 1:
            # What the earlier deliveries billed: their usage reports, read back.
            reported = await self._read_usage(
                broker.connection, request.conversation_id, request.message_id
            )
            run.bill.add_earlier(reported, prior.billed)
        if prior.gap or prior.lost_since(request.requested_at):
            # The events stream lost the reply's beginning, or all of it (NATS restarted
            # mid-answer): its text cannot be continued. Answered afresh (no second
            # start), and its whole text sent at the end, replacing what clients joined.
            log.info(
                "reply %s: its beginning is lost from the events; answering afresh",
                request.message_id,
            )
            prior = replace(
                prior,
                started=True,
                text="",
                tokens=0,
                attempts=max(prior.attempts, 1),
                last_delivery=prior.last_delivery or delivery - 1,
            )
            run = replace(run, disturbances=-1)
        if prior.attempts >= self._settings.max_generation_attempts:
            await self._give_up(run, prior, routes)
            return True
        if cancel is not None and await cancel.settled():
            # Cancelled while queued (or between two deliveries): no provider is called.
            await self._report_interrupted(run, prior, routes)
            await self._cancelled(run, Cancelled(None, prior.provider), prior.text)
            return True
        if prior.tool_calls:
            # A function call cut off by a crash cannot be continued: the reply ends.
            await self._report_interrupted(run, prior, routes)
            await self._fail(run, prior.provider, prior.text, _TOOL_CALL_CUT)
            return True
        if prior.started:
            # Reported first (once, by its attempt id): the retrying event then carries
            # the bill with it, for the deliveries after this one.
            await self._report_interrupted(run, prior, routes)
            retrying = StatusEvent(
                message_id=request.message_id, state="retrying", attempt=delivery
            )
            await run.outbox.event(request.conversation_id, retrying, billed=run.bill.total())
        await self._stream(run, routes, prior, cancel)
        return True

    def _still_generating(self, prior: ReplyLog) -> bool:
        """Whether the delivery before this one looks alive: its last event is recent.

        A worker cut from NATS long enough to miss its heartbeats (while a node is lost,
        say) goes on generating, and JetStream redelivers its request meanwhile. Taken
        over, the reply would be generated twice side by side: tokens interleaved, its
        call billed at the taker's estimate. So a delivery whose last event is younger
        than the window is left to finish, and this one is tried again later (it then
        finds the reply ended, or the delivery gone quiet).

        The window is half of `ack_wait - heartbeat` (a dead delivery's last event is
        at least that old when its request comes again: its last heartbeat came after
        it) and at most 3/4 of `retry_delay` (a delivery that handed its request over,
        a publish having failed, went quiet that long before: taken over at once).
        The age is told by the server's clock alone (when it stored the event, and its
        time when the log was read), whatever the worker's clock says; by the worker's
        clock only from a server that does not tell its time. Either sign counts.
        """
        if prior.last_at is None:
            return False
        settings = self._settings
        window = min(
            (settings.ack_wait_seconds - settings.heartbeat_seconds) / 2,
            settings.retry_delay_seconds * 3 / 4,
        )
        now = prior.read_at or self._clock.now()
        age = (now - prior.last_at).total_seconds()
        return abs(age) < window

    async def _end_again(
        self, request: GenerationRequested, stored: StoredMessage, alias: str, broker: NatsBroker
    ) -> None:
        """A reply memory already holds final: its end again, if the events lack it."""
        conv, reply = request.conversation_id, request.message_id
        log.info("reply %s already stored; not generating again", reply)
        # A client may wait for its end when the first delivery's aged out of the
        # events stream; past the dedupe window, republishing one still there
        # would give the reply a second end.
        ended = await self._read_log(broker.connection, conv, reply)
        if ended.finished:
            return
        outbox = Outbox(broker, leaders=self._leaders)
        if ended.started:
            # Streamed, stored, not ended: its worker died after storing it, maybe
            # before its last call's usage was reported.
            reported = await self._read_usage(broker.connection, conv, reply)
            await self._report_stored_call(request, stored, ended, reported, alias, outbox)
        if ended.text != stored.content and not ended.lost_since(request.requested_at):
            # Its events lack some of its text (the stream had no leader while they were
            # published, and its end then failed): clients are given the stored text.
            # Not when the stream was made anew since (NATS restarted): it holds nothing
            # of the reply, and the end alone is what a client resuming is missing.
            log.info("reply %s: its events lack some of its text; resyncing", reply)
            resync = ResyncEvent(message_id=reply, content=stored.content)
            await outbox.event(conv, resync)
        await outbox.terminal(conv, _final_event(stored, alias))

    async def _report_stored_call(
        self,
        request: GenerationRequested,
        stored: StoredMessage,
        ended: ReplyLog,
        reported: Mapping[str, Usage],
        alias: str,
        outbox: Outbox,
    ) -> None:
        """Report the usage of the call that ended a stored reply, unless its report is
        in the usage stream (`reported`, the reply's reports by attempt id). Under the
        call's own attempt id: the ledger keeps one entry.

        A finished reply's call is billed what the reply is in all (its stored usage)
        less what its other calls were (their reports). A failed reply stores no
        usage: its call is billed, as when it failed, the tokens it streamed and its
        prompt, estimated (here from the request alone, without the context).
        Flagged `estimated` either way: whether the provider counted the lost report's
        usage is not stored.
        """
        attempt_id = ids.attempt_id(request.message_id, ended.last_delivery, ended.last_call)
        if attempt_id in reported:
            return
        outcome = _STORED_OUTCOMES.get(stored.status)
        if outcome is not None and stored.usage is not None:
            billed = _Bill()
            billed.add_earlier(reported, ended.billed)
            prompt = stored.usage.prompt_tokens - billed.prompt_tokens
            completion = stored.usage.completion_tokens - billed.completion_tokens
        elif stored.status == "failed" and ended.last_delivery_tokens:
            # Only a call that streamed is known to have been made (and billed).
            outcome = "failed"
            contents = [m.content for m in request.history or ()]
            prompt = estimate_prompt_tokens([*contents, request.content])
            completion = ended.last_delivery_tokens
        else:
            return
        if prompt <= 0 and completion <= 0:
            return  # no call of its own (stopped before one), or all reported
        provider = stored.provider or ended.provider
        try:
            routes = resolve(alias, self._table, self._providers.keys(), self._default_models)
        except UnknownModelError:
            routes = ()
        route = next((r for r in routes if r.provider == provider), None)
        if route is None:
            log.warning("reply %s: the provider of its last call is unknown", request.message_id)
            return
        now = self._clock.now()
        report = UsageReported(
            attempt_id=attempt_id,
            message_id=request.message_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            model=alias,
            provider=route.provider,
            provider_model=route.model,
            usage=Usage.of(max(prompt, 0), max(completion, 0)),
            estimated=True,
            outcome=outcome,
            duration_ms=0.0,
            occurred_at=now,
        )
        await outbox.usage(report)

    async def _earlier_deliveries(self, run: _Run, broker: NatsBroker) -> ReplyLog | None:
        """What earlier deliveries streamed (nothing on the first); None: the reply ended."""
        if run.delivery <= 1:
            return ReplyLog()
        request = run.request
        prior = await self._read_log(broker.connection, request.conversation_id, request.message_id)
        if prior.finished:
            log.info("reply %s already ended on an earlier delivery", request.message_id)
            return None
        return prior

    async def _stream(
        self,
        run: _Run,
        routes: tuple[Route, ...],
        prior: ReplyLog,
        cancel: CancelSignal | None,
    ) -> None:
        """Run the failover chain, publishing its steps until the reply ends."""
        request = run.request
        conv, reply = request.conversation_id, request.message_id
        settings = self._settings
        call = ProviderRequest(
            model="",  # each route's own
            messages=run.messages,
            max_tokens=_first_set(request.options.max_tokens, settings.default_max_tokens),
            temperature=_first_set(request.options.temperature, settings.default_temperature),
            continuation=prior.text,
            tools=request.tools,
            tool_choice=request.tool_choice,
        )
        text = prior.text
        tokens = TokenCoalescer(run.outbox.tokens(conv, reply), self._coalesce_window)
        try:
            async with contextlib.aclosing(self._chain.run(routes, call, cancel)) as steps:
                async for step in steps:
                    if isinstance(step, Token):
                        text += step.text
                        await tokens.add(step.text)
                        continue
                    # The tokens so far go out before anything else of the reply.
                    await tokens.flush()
                    if isinstance(step, ToolCallDelta):
                        piece = ToolCallEvent(
                            message_id=reply,
                            index=step.index,
                            id=step.id,
                            name=step.name,
                            arguments=step.arguments,
                        )
                        await run.outbox.tool_call(conv, piece)
                    elif isinstance(step, Finished):
                        await self._finish(run, step, text)
                        return
                    elif isinstance(step, Failed):
                        await self._fail(run, step.provider, text, step.error, step.spent)
                        return
                    elif isinstance(step, Cancelled):
                        await self._cancelled(run, step, text)
                        return
                    else:
                        await self._progress(run, step, announce_start=not prior.started)
        finally:
            tokens.close()
        raise AssertionError("unreachable: a chain ends with Finished or Failed")

    async def _progress(
        self, run: _Run, step: Using | Retrying | Spent, *, announce_start: bool
    ) -> None:
        conv, reply = run.request.conversation_id, run.request.message_id
        if isinstance(step, Spent):
            await run.outbox.flush()
            await self._usage(run, step)
        elif isinstance(step, Retrying):
            retrying = StatusEvent(
                message_id=reply,
                state="retrying",
                provider=step.route.provider,
                attempt=step.attempt,
                detail=step.detail,
            )
            await run.outbox.event(conv, retrying, billed=run.bill.total())
        elif step.first:
            if announce_start:
                # The provider about to be called first; `done` names the one that finished.
                start = StartEvent(
                    message_id=reply,
                    conversation_id=conv,
                    model=run.alias,
                    provider=step.route.provider,
                )
                await run.outbox.announce(conv, start)
                # Its delivery when not the first (an earlier one waited for memory): the
                # reply log bills the call under it if this delivery dies.
                generating = StatusEvent(
                    message_id=reply,
                    state="generating",
                    attempt=run.delivery if run.delivery > 1 else None,
                )
                await run.outbox.announce(conv, generating)
        else:
            # The tokens so far reach the stream before the switch is announced.
            await run.outbox.flush()
            switched = StatusEvent(
                message_id=reply, state="provider_switched", provider=step.route.provider
            )
            await run.outbox.event(conv, switched, billed=run.bill.total())

    async def _prompt(
        self, request: GenerationRequested, broker: NatsBroker
    ) -> tuple[ContextMessage, ...] | StoredMessage | None:
        """The model's messages; the reply when memory holds it final; None if memory is away."""
        timeout = self._settings.memory_timeout_seconds
        attachments = request.attachments
        if request.regenerated and not attachments and request.history is None:
            try:  # another answer: the question's images, as memory holds them
                attachments = await message_images(
                    broker, request.conversation_id, request.user_message_id, timeout=timeout
                )
            except ImagesMissing as exc:
                log.warning("memory did not give the images (%s); retrying later", exc)
                return None
        user: tuple[ContextMessage, ...] = (
            ContextMessage(role="user", content=request.content, attachments=attachments),
        )
        system = request.options.system_prompt
        if request.history is not None:
            context = request.history
            if request.prompt_in_history:
                user = ()
            if not any(m.role == "system" for m in context):  # none of its own
                system = system or self._settings.system_prompt
        else:
            ask = ContextRequest(
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                reply_id=request.message_id,
                user_message_id=request.user_message_id,
                limit=self._settings.context_messages,
                # What memory searches its knowledge base and personal memory for.
                query=request.content,
                # The branch of the message, for when memory does not hold it yet.
                parent_id=request.parent_id,
                root=request.root,
            )
            try:
                answer = await broker.request(
                    ask, subjects.MEMORY_CONTEXT, timeout=self._settings.memory_timeout_seconds
                )
                reply = ContextReply.model_validate_json(answer.body)
            except Exception as exc:
                log.warning("memory did not give context (%s); retrying later", type(exc).__name__)
                return None
            if reply.existing_reply is not None and reply.existing_reply.status != "streaming":
                return reply.existing_reply
            # The message's, else the conversation's, else the operator's default.
            context = reply.messages
            system = system or reply.system_prompt or self._settings.system_prompt
        head = (ContextMessage(role="system", content=system),) if system else ()
        messages = (*head, *context, *user)
        try:
            return await with_images(
                broker,
                request.conversation_id,
                messages,
                timeout=timeout,
                most=self._settings.prompt_max_images,
            )
        except ImagesMissing as exc:
            log.warning("memory did not give the images (%s); retrying later", exc)
            return None

    async def _finish(self, run: _Run, step: Finished, text: str) -> None:
        spent = step.spent
        # What the ledger bills for the message: every call of every delivery.
        usage = run.bill.with_call(spent)
        provider = spent.call.route.provider
        await self._done(run, text, "complete", step.finish_reason, provider, usage, spent)

    async def _cancelled(self, run: _Run, step: Cancelled, text: str) -> None:
        """The user stopped it: the partial answer is stored as cancelled, its call accounted."""
        spent = step.spent
        usage = run.bill.with_call(spent)
        provider = step.provider or ""
        await self._done(run, text, "cancelled", "cancelled", provider, usage, spent)
        log.info("reply %s stopped by its user", run.request.message_id)

    async def _done(
        self,
        run: _Run,
        text: str,
        status: MessageStatus,
        finish_reason: FinishReason,
        provider: str,
        usage: Usage,
        spent: Spent | None,
    ) -> None:
        """End a reply with `done`: its buffered tokens first, then what memory stores
        (persisted requests only), its call's usage, and the terminal event last.

        No PING round trip first: the tokens (published by `_stream` before) go ahead of
        the record on the one connection, and the record's ack comes after the server
        took them, as the terminal event comes after them in the events stream."""
        request = run.request
        if request.persist:
            finished = GenerationFinished(
                **self._record(run, text),
                status=status,
                finish_reason=finish_reason,
                provider=provider,
                usage=usage,
            )
            await run.outbox.finished(finished)
        done = DoneEvent(
            message_id=request.message_id,
            finish_reason=finish_reason,
            usage=usage,
            model=run.alias,
            provider=provider,
        )
        await self._end(run, spent, done, text)

    async def _fail(
        self,
        run: _Run,
        provider: str | None,
        text: str,
        error: PublicError,
        spent: Spent | None = None,
    ) -> None:
        """End a reply with `error`, in the same order as `_done`."""
        request = run.request
        if request.persist:
            failed = GenerationFailed(
                **self._record(run, text),
                code=error.code,
                message=error.message,
                retryable=error.retryable,
                provider=provider,
            )
            await run.outbox.failed(failed)
        event = ErrorEvent(
            message_id=request.message_id,
            code=error.code,
            message=error.message,
            retryable=error.retryable,
        )
        await self._end(run, spent, event, text)

    async def _resync(self, run: _Run, text: str) -> None:
        """The whole text, acked by the stream, when clients may lack some of it: the
        stream did not ack every token event of the reply (it had no leader when they
        came, and dropped them), or NATS reconnected or the stream changed leader
        mid-answer (a stream recreated empty acked what it then lost)."""
        request = run.request
        if run.outbox.disturbances() != run.disturbances:
            log.info(
                "reply %s: NATS reconnected or the events stream changed leader mid-answer; "
                "sending its whole text",
                request.message_id,
            )
        elif missing := await run.outbox.unconfirmed():
            log.info(
                "reply %s: %d of its events were not acked by the events stream; "
                "sending its whole text",
                request.message_id,
                missing,
            )
        else:
            return
        resync = ResyncEvent(message_id=request.message_id, content=text)
        await run.outbox.event(request.conversation_id, resync, billed=run.bill.total())

    def _record(self, run: _Run, text: str) -> _Record:
        """The fields of a reply's record for memory, however it ended."""
        request = run.request
        return _Record(
            message_id=request.message_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            reply_to=request.user_message_id,
            content=text,
            model=run.alias,
            created_at=run.created_at,
            finished_at=max(self._clock.now(), run.created_at),
            regenerated=request.regenerated,
        )

    async def _end(
        self, run: _Run, spent: Spent | None, event: DoneEvent | ErrorEvent, text: str
    ) -> None:
        """Account the reply's call (when one was made), then publish its terminal event,
        after the whole text if some tokens may be lost. The check comes last, after the
        acked publishes of the record and the usage: the stream's acks of the reply's
        token events are in by then, and it seldom waits for them."""
        if spent is not None:
            await self._usage(run, spent)
        await self._resync(run, text)
        await run.outbox.terminal(run.request.conversation_id, event)

    async def _give_up(self, run: _Run, prior: ReplyLog, routes: tuple[Route, ...]) -> None:
        """End a reply every allowed attempt failed to finish: its last attempt billed,
        the text streamed so far stored as failed, one `error` to the client."""
        request = run.request
        log.error(
            "reply %s given up after %d attempts; ending it with an error",
            request.message_id,
            prior.attempts,
        )
        await self._report_interrupted(run, prior, routes)
        error = PublicError(
            "generation_interrupted",
            "The reply could not be finished. Please send the message again.",
            True,
        )
        try:
            await self._fail(run, prior.provider, prior.text, error)
        except Exception as exc:
            # What failed every attempt may refuse the failure too: the client is
            # still told, once (its end has one msg id).
            log.error(
                "reply %s: its failure could not be stored (%s)",
                request.message_id,
                type(exc).__name__,
            )
            event = ErrorEvent(
                message_id=request.message_id,
                code=error.code,
                message=error.message,
                retryable=error.retryable,
            )
            await run.outbox.terminal(request.conversation_id, event)

    async def _report_interrupted(
        self, run: _Run, prior: ReplyLog, routes: tuple[Route, ...]
    ) -> None:
        """Account the tokens of an earlier delivery's call that crashed before reporting:
        once, not when its report is in the bill already (made by that delivery before it
        went, or by a later one that found the call cut short too)."""
        if prior.last_delivery_tokens == 0:
            return
        attempt_id = ids.attempt_id(run.request.message_id, prior.last_delivery, prior.last_call)
        if attempt_id in run.bill.attempts:
            return
        route = next((r for r in routes if r.provider == prior.provider), routes[0])
        now = self._clock.monotonic()
        call = Call(
            route=route,
            index=prior.last_call,
            started=now,
            ended=now,
            first_token=None,
            tokens=prior.last_delivery_tokens,
        )
        prompt_tokens = estimate_prompt_tokens(m.content for m in run.messages)
        usage = Usage.of(prompt_tokens, prior.last_delivery_tokens)
        earlier = replace(run, delivery=prior.last_delivery)
        await self._usage(earlier, Spent(call, usage, True, "interrupted"))

    async def _usage(self, run: _Run, spent: Spent) -> None:
        request, call = run.request, spent.call
        ttft = call.first_token
        attempt_id = ids.attempt_id(request.message_id, run.delivery, call.index)
        reported = UsageReported(
            attempt_id=attempt_id,
            message_id=request.message_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            model=run.alias,
            provider=call.route.provider,
            provider_model=call.route.model,
            usage=spent.usage,
            estimated=spent.estimated,
            outcome=spent.outcome,
            time_to_first_token_ms=None if ttft is None else (ttft - call.started) * 1000,
            duration_ms=(call.ended - call.started) * 1000,
            occurred_at=self._clock.now(),
        )
        await run.outbox.usage(reported)
        run.bill.add(attempt_id, spent.usage)


# The bill's entry for what the reply log's bill counts and its reports lack.
_UNREPORTED = ""

_TOOL_CALL_CUT = PublicError(
    "generation_interrupted",
    "The reply was cut short in the middle of a function call. Please send the request again.",
    True,
)

# The outcome of the call that finished a reply, told from its stored status.
_STORED_OUTCOMES: dict[MessageStatus, Outcome] = {"complete": "completed", "cancelled": "cancelled"}

# The end of a reply stored without its error, told from its status.
_STATUS_ERRORS = {
    "failed": ReplyError(
        code="generation_failed", message="The reply could not be produced.", retryable=False
    ),
    # Cut short for good; the partial answer is stored, sending again may succeed.
    "interrupted": ReplyError(
        code="generation_interrupted",
        message="The reply was cut short. Please send the message again.",
        retryable=True,
    ),
}


def _final_event(stored: StoredMessage, alias: str) -> DoneEvent | ErrorEvent:
    """The end of a reply as memory holds it, to publish again: the same end as its first.

    Memory keeps the finish reason of a finished reply and the public error of a failed
    one. A reply stored before it kept them has its end told from its status: a complete
    one ends with `stop`, a failed one with `generation_failed`.
    """
    error = stored.error or _STATUS_ERRORS.get(stored.status)
    if error is not None:
        return ErrorEvent(
            message_id=stored.id,
            code=error.code,
            message=error.message,
            retryable=error.retryable,
        )
    finish_reason = stored.finish_reason
    if finish_reason is None:
        finish_reason = "cancelled" if stored.status == "cancelled" else "stop"
    return DoneEvent(
        message_id=stored.id,
        finish_reason=finish_reason,
        usage=stored.usage or Usage.of(0, 0),
        model=stored.model or alias,
        provider=stored.provider or "",
    )
