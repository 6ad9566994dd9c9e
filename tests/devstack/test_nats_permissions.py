"""The production NATS config (deploy/nats): each service logs in as its own user and may
use only its own subjects; the four real services still run a conversation under it."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
import websockets
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from responders import ask

from contracts import consumers, ids, subjects, topology
from contracts.events import ConversationDeleted, TokenEvent, Usage, UsageReported
from contracts.settings import LivechatSettings
from devstack.natsserver import NatsServer, nats_server_binary
from devstack.ports import free_port
from gateway.intake.budget import BudgetWatch
from inference.reply_log import read_reply_log
from inference.usage_reports import read_usage_reports
from runtime.kv_watch import BucketWatch
from usage import UsageSettings
from usage.app import ensure_report_topology
from usage.budget import allow_atomic_batches

# Starts nats-server itself.
pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "deploy" / "nats"
SERVICES = ("gateway", "inference", "memory", "usage")
PASSWORDS = {service: f"{service}-test-password-0123456789" for service in SERVICES}


def _password_env() -> dict[str, str]:
    return {f"NATS_{s.upper()}_PASSWORD": p for s, p in PASSWORDS.items()}


@pytest.fixture
def secured_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    """A nats-server with the users and permissions of deploy/nats/auth.conf."""
    for name, value in _password_env().items():
        monkeypatch.setenv(name, value)  # nats-server reads them from its environment
    server = NatsServer(tmp_path / "nats", extra_config=(CONFIG_DIR / "auth.conf").read_text())
    server.start()
    try:
        yield server
    finally:
        server.stop()


Connect = Callable[[str], Awaitable[tuple[Client, list[Exception]]]]


@pytest.fixture
async def login(secured_nats: NatsServer) -> AsyncIterator[Connect]:
    """Connect as a service's user, the way the service does; errors are collected."""
    clients: list[Client] = []

    async def connect(user: str) -> tuple[Client, list[Exception]]:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        settings = LivechatSettings(
            nats_url=secured_nats.url, nats_user=user, nats_password=PASSWORDS[user]
        )
        client = await nats.connect(
            **settings.nats_connect_options(), error_cb=on_error, allow_reconnect=False
        )
        clients.append(client)
        return client, errors

    try:
        yield connect
    finally:
        for client in clients:
            await client.close()


async def _violation(errors: list[Exception], subject: str, timeout: float = 10.0) -> str:
    """The server's permissions violation about `subject`, once it arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for exc in errors:
            text = str(exc).lower()
            # nats-py lowercases the server's message.
            if "permissions violation" in text and f'"{subject.lower()}"' in text:
                return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"no permissions violation for {subject}: {errors}")


STREAM_RIGHTS = {
    "gateway": topology.GATEWAY_STREAMS,
    "inference": topology.INFERENCE_STREAMS,
    "memory": topology.MEMORY_STREAMS,
    "usage": topology.USAGE_STREAMS,
}


async def _ensure_as_services(login: Connect, settings: LivechatSettings | None = None) -> None:
    """Each service ensures its streams as its own user, the way it does at start."""
    for service, rights in STREAM_RIGHTS.items():
        client, _ = await login(service)
        await topology.ensure_streams(client.jetstream(), settings or LivechatSettings(), rights)


async def _events_count(gateway: Client) -> int:
    return (await gateway.jetstream().stream_info(topology.EVENTS_STREAM)).state.messages


def _permissions() -> dict[str, dict[str, list[str]]]:
    """{user block: {"publish"|"subscribe": [subjects]}} as written in auth.conf."""
    found: dict[str, dict[str, list[str]]] = {}
    block = section = None
    for line in (CONFIG_DIR / "auth.conf").read_text().splitlines():
        if match := re.match(r"^  ([A-Z]+) = \{", line):
            block = match.group(1).lower()
            found[block] = {"publish": [], "subscribe": []}
        elif match := re.match(r"^    (publish|subscribe): \{", line):
            section = match.group(1)
        elif block is not None and section is not None:
            found[block][section].extend(re.findall(r'"([^"]+)"', line.split("#")[0]))
    return found


def _matches(pattern: str, subject: str) -> bool:
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _contract_subjects() -> list[str]:
    """Every concrete subject libs/contracts names (a conversation id filled in)."""
    concrete = []
    for name in subjects.__all__:
        value = getattr(subjects, name)
        if isinstance(value, str):
            if "." in value and "*" not in value and ">" not in value:
                concrete.append(value)
        elif name == "ping":
            concrete.extend(value(s) for s in SERVICES if s != "gateway")
        elif not name.startswith("conversation_of") and not name.endswith("_pattern"):
            subject = value(*["c1"] * len(inspect.signature(value).parameters))
            if ">" not in subject:
                concrete.append(subject)
    return concrete


def test_every_subject_of_the_contracts_has_a_user_allowed_to_publish_it() -> None:
    permissions = _permissions()
    assert set(permissions) == set(SERVICES)
    contract = _contract_subjects()
    assert subjects.GENERATE in contract and subjects.events("c1") in contract
    for subject in contract:
        publishers = [
            user
            for user, allowed in permissions.items()
            if any(_matches(p, subject) for p in allowed["publish"])
        ]
        assert publishers, f"no NATS user may publish {subject}: update deploy/nats/auth.conf"
    # A request is answered by its service alone.
    for subject in contract:
        if subject.startswith(f"{subjects.PREFIX}.rpc."):
            service = subject.split(".")[2]
            answering = [
                user
                for user, allowed in permissions.items()
                if any(_matches(p, subject) for p in allowed["subscribe"])
            ]
            assert answering == [service], subject


def test_compose_config_includes_the_users_and_needs_every_password(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    base["NATS_SERVER_NAME"] = "nats1"  # compose names each node of the cluster
    check = [nats_server_binary(), "-c", str(CONFIG_DIR / "nats.conf"), "-t"]
    ok = subprocess.run(
        check, env={**base, **_password_env()}, capture_output=True, text=True, timeout=30
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # A password left unset stops the server instead of letting anyone in.
    missing = {**base, **_password_env()}
    del missing["NATS_MEMORY_PASSWORD"]
    refused = subprocess.run(check, env=missing, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "NATS_MEMORY_PASSWORD" in refused.stdout + refused.stderr


async def test_a_wrong_password_or_no_user_is_refused(secured_nats: NatsServer) -> None:
    with pytest.raises((NatsError, NoServersError)):
        await nats.connect(
            secured_nats.url,
            user="memory",
            password="not-the-password",
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
    with pytest.raises((NatsError, NoServersError)):
        await nats.connect(secured_nats.url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_memory_cannot_publish_token_events(login: Connect) -> None:
    gateway, _ = await login("gateway")
    await _ensure_as_services(login)
    memory, memory_errors = await login("memory")
    inference, inference_errors = await login("inference")
    token = TokenEvent(message_id="r1", content="forged").model_dump_json().encode()
    before = await _events_count(gateway)

    await memory.publish(subjects.events("c1"), token)
    await memory.flush()
    await _violation(memory_errors, subjects.events("c1"))
    # Through JetStream too: no ack comes back, nothing is stored.
    with pytest.raises(NatsTimeoutError):
        await memory.jetstream().publish(subjects.events("c1"), token, timeout=1.0)
    assert await _events_count(gateway) == before

    # The worker, whose job it is, may.
    await inference.jetstream().publish(subjects.events("c1"), token, timeout=5.0)
    assert await _events_count(gateway) == before + 1
    assert inference_errors == []


async def test_gateway_cannot_read_the_work_queue(login: Connect) -> None:
    gateway, errors = await login("gateway")
    js = gateway.jetstream()
    await _ensure_as_services(login)
    spied: list[bytes] = []

    async def spy(msg: object) -> None:
        spied.append(getattr(msg, "data", b""))

    # A plain subscription to the queue's subject is refused.
    await gateway.subscribe(f"{subjects.PREFIX}.work.>", cb=spy)
    await gateway.flush()
    await _violation(errors, f"{subjects.PREFIX}.work.>")
    # So are a consumer of its own on the work stream and pulls from the workers' one.
    with pytest.raises(NatsTimeoutError):
        await gateway.jetstream(timeout=1.0).add_consumer(
            topology.WORK_STREAM, durable_name="spy", filter_subject=subjects.GENERATE
        )
    await _violation(errors, f"$JS.API.CONSUMER.DURABLE.CREATE.{topology.WORK_STREAM}.spy")
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{topology.WORK_STREAM}.{topology.INFERENCE_CONSUMER}"
    with pytest.raises(NatsTimeoutError):
        await gateway.request(pull, b'{"batch":1}', timeout=1.0)
    await _violation(errors, pull)

    # Queueing work is what it may do: accepted, and never echoed to the spy.
    ack = await js.publish(subjects.GENERATE, b"{}", timeout=5.0)
    assert ack.stream == topology.WORK_STREAM
    await asyncio.sleep(0.3)
    assert spied == []
    assert (await js.stream_info(topology.WORK_STREAM)).state.messages == 1


async def test_no_service_reads_another_ones_replies(login: Connect) -> None:
    gateway, _ = await login("gateway")
    memory, memory_errors = await login("memory")
    usage, usage_errors = await login("usage")
    snooped: list[bytes] = []

    async def snoop(msg: object) -> None:
        snooped.append(getattr(msg, "data", b""))

    async def answer(msg: object) -> None:
        respond = getattr(msg, "respond")  # noqa: B009
        await respond(b"history of c1")

    # The gateway asks memory; usage listens in on the gateway's inbox and is refused.
    await usage.subscribe("_INBOX.gateway.>", cb=snoop)
    await usage.flush()
    await _violation(usage_errors, "_INBOX.gateway.>")
    await memory.subscribe(subjects.MEMORY_CONVERSATION_GET, cb=answer)
    await memory.flush()
    reply = await ask(gateway, subjects.MEMORY_CONVERSATION_GET, b"{}")
    assert reply.data == b"history of c1"  # answering needs no right on the asker's inbox
    assert snooped == []
    assert memory_errors == []
    # Nor may a service answer for another one.
    await usage.subscribe(subjects.MEMORY_CONVERSATION_GET, cb=answer)
    await usage.flush()
    await _violation(usage_errors, subjects.MEMORY_CONVERSATION_GET)


async def test_usage_and_inference_keep_to_their_own_subjects(login: Connect) -> None:
    gateway, gateway_errors = await login("gateway")
    await _ensure_as_services(login)
    usage, usage_errors = await login("usage")
    inference, inference_errors = await login("inference")

    # Usage may not forge the workers' reports, nor a worker the accounted records.
    reported = subjects.usage_reported("c1", "r1")
    await usage.publish(reported, b"{}")
    await usage.flush()
    await _violation(usage_errors, reported)
    await inference.publish(subjects.USAGE_RECORDED, b"{}")
    # A worker may not forge a user's message nor queue work itself.
    await inference.publish(subjects.chat_user("c1"), b"{}")
    await inference.publish(subjects.GENERATE, b"{}")
    await inference.flush()
    for subject in (subjects.USAGE_RECORDED, subjects.chat_user("c1"), subjects.GENERATE):
        await _violation(inference_errors, subject)
    # And the gateway may not write answers or usage.
    await gateway.publish(subjects.chat_finished("c1"), b"{}")
    await gateway.publish(reported, b"{}")
    await gateway.flush()
    await _violation(gateway_errors, subjects.chat_finished("c1"))
    await _violation(gateway_errors, reported)
    usage_state = (await gateway.jetstream().stream_info(topology.USAGE_STREAM)).state
    chat_state = (await gateway.jetstream().stream_info(topology.CHAT_STREAM)).state
    assert (usage_state.messages, chat_state.messages) == (0, 0)

    # What they do own goes through.
    await usage.jetstream().publish(subjects.USAGE_RECORDED, b"{}", timeout=5.0)
    report = UsageReported(
        attempt_id=ids.attempt_id("r1", 1, 0),
        message_id="r1",
        conversation_id="c1",
        user_id="u1",
        model="demo",
        provider="demo",
        provider_model="demo",
        usage=Usage.of(3, 4),
        outcome="failed",
        duration_ms=1.0,
        occurred_at=datetime.now(UTC),
    )
    await inference.jetstream().publish(reported, report.model_dump_json().encode(), timeout=5.0)
    await gateway.jetstream().publish(subjects.chat_user("c1"), b"{}", timeout=5.0)
    usage_state = (await gateway.jetstream().stream_info(topology.USAGE_STREAM)).state
    chat_state = (await gateway.jetstream().stream_info(topology.CHAT_STREAM)).state
    assert (usage_state.messages, chat_state.messages) == (2, 1)
    # A worker reads a reply's reports back (what its earlier deliveries billed), and
    # the server's time with the events stream's info (how old the reply's last event is).
    refused = len(inference_errors)
    assert await read_usage_reports(inference, "c1", "r1") == {report.attempt_id: report.usage}
    assert (await read_reply_log(inference, "c1", "r1")).read_at is not None
    assert inference_errors[refused:] == []


async def test_only_memory_announces_a_deletion_and_every_gateway_hears_it(
    login: Connect,
) -> None:
    gateways = [await login("gateway") for _ in range(2)]
    memory, memory_errors = await login("memory")
    inference, inference_errors = await login("inference")
    usage, usage_errors = await login("usage")
    heard: list[list[str]] = [[], []]
    all_heard = asyncio.Event()

    for (client, _), subjects_heard in zip(gateways, heard, strict=True):

        async def hear(msg: object, subjects_heard: list[str] = subjects_heard) -> None:
            subjects_heard.append(getattr(msg, "subject", ""))
            if all(heard):
                all_heard.set()

        await client.subscribe(subjects.CONVERSATION_DELETED_ALL, cb=hear)
        await client.flush()

    # Nobody else may make the gateways forget owners (nor learn what is deleted).
    forged = subjects.conversation_deleted("forged")
    for client, errors in (gateways[0], (inference, inference_errors), (usage, usage_errors)):
        await client.publish(forged, b"{}")
        await client.flush()
        await _violation(errors, forged)
    await inference.subscribe(subjects.CONVERSATION_DELETED_ALL)
    await inference.flush()
    await _violation(inference_errors, subjects.CONVERSATION_DELETED_ALL)

    announced = ConversationDeleted(conversation_id="c1").model_dump_json().encode()
    await memory.publish(subjects.conversation_deleted("c1"), announced)
    await memory.flush()
    await asyncio.wait_for(all_heard.wait(), 10)
    assert heard == [[subjects.conversation_deleted("c1")]] * 2
    assert memory_errors == [] and gateways[1][1] == []


def test_auth_conf_grants_each_service_exactly_its_stream_rights() -> None:
    permissions = _permissions()
    for service, rights in STREAM_RIGHTS.items():
        allowed = permissions[service]["publish"]
        created = {p.rsplit(".", 1)[1] for p in allowed if p.startswith("$JS.API.STREAM.CREATE.")}
        updated = {p.rsplit(".", 1)[1] for p in allowed if p.startswith("$JS.API.STREAM.UPDATE.")}
        assert {s for s in created if not s.startswith("KV_")} == {*rights.own, *rights.need}
        assert {s for s in updated if not s.startswith("KV_")} == set(rights.own), service
        # Usage, the budget bucket's only writer, allows atomic batches on it.
        buckets = {s for s in updated if s.startswith("KV_")}
        assert buckets == ({f"KV_{topology.BUDGET_BUCKET}"} if service == "usage" else set())
    gateway = permissions["gateway"]["publish"]
    for stream in (topology.WORK_STREAM, topology.USAGE_STREAM):
        assert not any(_matches(p, f"$JS.API.STREAM.UPDATE.{stream}") for p in gateway)


async def test_the_gateway_cannot_change_the_work_queue_or_usage_streams(login: Connect) -> None:
    # In any start order, each service ensuring its own streams brings up all of them.
    await _ensure_as_services(login)
    gateway, errors = await login("gateway")
    js = gateway.jetstream(timeout=1.0)
    configs = {c.name: c for c in topology.stream_configs(LivechatSettings())}
    for stream in (topology.WORK_STREAM, topology.USAGE_STREAM):
        before = (await js.stream_info(stream)).config
        changed = dataclasses.replace(configs[stream], max_age=60.0, max_msgs=5, first_seq=None)
        with pytest.raises(NatsTimeoutError):
            await js.update_stream(changed)
        await _violation(errors, f"$JS.API.STREAM.UPDATE.{stream}")
        after = (await js.stream_info(stream)).config
        assert (after.max_age, after.max_msgs) == (before.max_age, before.max_msgs)
    # A gateway started with other settings keeps its hands off them, and starts.
    other = LivechatSettings(dedupe_window_seconds=7.0)
    await topology.ensure_streams(js, other, topology.GATEWAY_STREAMS)
    work = (await js.stream_info(topology.WORK_STREAM)).config
    events = (await js.stream_info(topology.EVENTS_STREAM)).config
    assert work.duplicate_window != 7.0
    assert events.duplicate_window == 7.0  # the stream it owns follows it
    # The owner may: the workers keep the work queue configured.
    inference, inference_errors = await login("inference")
    await topology.ensure_streams(inference.jetstream(), other, topology.INFERENCE_STREAMS)
    assert (await js.stream_info(topology.WORK_STREAM)).config.duplicate_window == 7.0
    assert inference_errors == []


def _wait_ready(url: str, processes: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the services did not become ready under the NATS permissions")


def _stop_a_generation(client: httpx.Client) -> None:
    """A stop (gateway: cancel bucket and subject; workers: both) ends the answer."""
    with client.stream(
        "POST",
        "/v1/conversations/perm-2/messages",
        json={"content": "a long answer please"},
        headers={"Accept": "text/event-stream"},
    ) as reply:
        assert reply.status_code == 200
        event, finish = "", None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "token" and finish is None:
                stopped = client.post("/v1/conversations/perm-2/cancel")
                assert stopped.status_code == 202 and stopped.json() == {"cancelled": True}
                finish = "asked"
            elif line.startswith("data: ") and event in ("done", "error"):
                finish = json.loads(line.removeprefix("data: "))["finish_reason"]
                break
    assert finish == "cancelled"


async def _websocket_replays_and_signals(url: str) -> None:
    """Replay from the events stream (ordered consumer) and signals between two sockets."""
    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url) as first, websockets.connect(ws_url) as second:
        for ws in (first, second):
            await ws.send(json.dumps({"type": "subscribe", "conversation_id": "perm-1"}))
        await first.send(
            json.dumps({"type": "subscribe", "conversation_id": "perm-1", "last_event_id": 0})
        )
        replayed = []
        while "done" not in replayed:
            frame = json.loads(await asyncio.wait_for(first.recv(), 30))
            replayed.append(frame["type"])
        assert "token" in replayed
        await first.send(
            json.dumps({"type": "typing", "conversation_id": "perm-1", "is_typing": True})
        )
        while (frame := json.loads(await asyncio.wait_for(second.recv(), 30)))["type"] != "typing":
            pass
        assert frame["is_typing"] is True


def test_the_services_run_a_conversation_as_their_own_users(
    secured_nats: NatsServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVECHAT_", "NATS_"))}
    env.update(
        LIVECHAT_NATS_URL=secured_nats.url,
        LIVECHAT_DATA_DIR=str(tmp_path / "data"),
        LIVECHAT_HTTP_PORT=str(port),
        LIVECHAT_LOG_LEVEL="WARNING",
        LIVECHAT_DEMO_TTFT_MS="20",
        # Slow enough that a stop arrives while the answer streams.
        LIVECHAT_DEMO_TOKENS_PER_SECOND="40",
        # Limits on: the gateway and usage use their key-value buckets.
        LIVECHAT_RATE_LIMIT_PER_MINUTE="1000",
        LIVECHAT_DAILY_TOKEN_BUDGET="10000000",
    )
    for key in ("GROQ_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        env.pop(key, None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in ("memory", "usage", "inference", "gateway"):
            own = {"LIVECHAT_NATS_USER": service, "LIVECHAT_NATS_PASSWORD": PASSWORDS[service]}
            processes[service] = subprocess.Popen(
                [sys.executable, "-m", service], env={**env, **own}, cwd=tmp_path
            )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, processes)
        # The containers' healthchecks run as the service's own user.
        for service in ("inference", "memory", "usage"):
            own = {"LIVECHAT_NATS_USER": service, "LIVECHAT_NATS_PASSWORD": PASSWORDS[service]}
            probe = [sys.executable, "-m", "devstack.ping", service]
            assert subprocess.run(probe, env={**env, **own}, timeout=30).returncode == 0, service
        with httpx.Client(base_url=url, timeout=60) as client:
            streamed = []
            with client.stream(
                "POST",
                "/v1/conversations/perm-1/messages",
                json={"content": "hello through permissions"},
                headers={"Accept": "text/event-stream"},
            ) as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    if line.startswith("event: "):
                        streamed.append(line.removeprefix("event: "))
                    if line == "event: done" or line == "event: error":
                        break
            assert streamed[-1] == "done" and "token" in streamed
            # Memory stored both messages, usage accounted the generation.
            deadline = time.monotonic() + 30
            while True:
                history = client.get("/v1/conversations/perm-1").json()
                totals = client.get("/v1/usage").json()["totals"]
                if len(history.get("messages", [])) == 2 and totals["requests"] == 1:
                    break
                assert time.monotonic() < deadline, (history, totals)
                time.sleep(0.2)
            assert history["messages"][1]["status"] == "complete"
            _stop_a_generation(client)
            assert client.get("/v1/usage/export").status_code == 200
        asyncio.run(_websocket_replays_and_signals(url))
        with httpx.Client(base_url=url, timeout=60) as client:
            # Deleting purges the conversation's subjects in the streams (memory).
            assert client.delete("/v1/conversations/perm-1").status_code == 204
            assert client.get("/v1/conversations/perm-1").status_code == 404
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    log = (secured_nats.store_dir / "nats-server.log").read_text()
    violations = [line for line in log.splitlines() if "Violation" in line]
    assert violations == []


async def test_usage_replaces_the_consumer_of_an_older_version(login: Connect) -> None:
    # An older usage service's consumer (the one subject of before only), past a report a
    # newer worker stored on its reply's own subject: the upgraded service replaces it,
    # as its own user, to start at that report.
    await _ensure_as_services(login)
    usage, errors = await login("usage")
    inference, _ = await login("inference")
    js = usage.jetstream(timeout=5.0)
    older = dataclasses.replace(consumers.USAGE, filter_subject=subjects.USAGE_REPORTED, also=())
    await js.add_consumer(topology.USAGE_STREAM, older.config(ack_wait=30))
    first = await inference.jetstream().publish(subjects.usage_reported("c1", "r1"), b"{}")
    await inference.jetstream().publish(subjects.USAGE_REPORTED, b"{}")
    await ensure_report_topology(js, UsageSettings())
    info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
    assert info.config.filter_subjects == [subjects.USAGE_REPORTED_ALL, subjects.USAGE_REPORTED]
    assert info.config.opt_start_seq == first.seq
    assert errors == []


async def test_usage_writes_the_budget_bucket_in_atomic_batches(login: Connect) -> None:
    usage, errors = await login("usage")
    js = usage.jetstream()
    await topology.ensure_buckets(js)

    assert await allow_atomic_batches(js)

    assert (await js.stream_info(f"KV_{topology.BUDGET_BUCKET}")).config.allow_atomic
    assert errors == []


async def test_the_gateway_may_watch_the_budget_bucket(login: Connect) -> None:
    usage, _ = await login("usage")
    await topology.ensure_buckets(usage.jetstream())
    budget = await usage.jetstream().key_value(topology.BUDGET_BUCKET)
    await budget.put("some-user.2026-01-01", b"42")
    gateway, errors = await login("gateway")
    watch = BudgetWatch(gateway, gateway.jetstream(), topology.BUDGET_BUCKET, confirm_seconds=0.05)
    watch.start()
    try:
        deadline = time.monotonic() + 10
        # Current: its consumer was created and confirmed (consumer info) as this user.
        while watch.spent("some-user.2026-01-01", "2026-01-01") != 42:
            assert time.monotonic() < deadline, errors
            await asyncio.sleep(0.01)
    finally:
        await watch.aclose()
    assert errors == []


async def test_a_worker_may_watch_the_cancel_bucket(login: Connect) -> None:
    gateway, _ = await login("gateway")
    await topology.ensure_buckets(gateway.jetstream())
    stops = await gateway.jetstream().key_value(topology.CANCEL_BUCKET)
    await stops.put("some-conversation.some-user", b"{}")
    inference, errors = await login("inference")
    watch = BucketWatch(
        inference, inference.jetstream(), topology.CANCEL_BUCKET, confirm_seconds=0.05
    )
    watch.start()
    try:
        deadline = time.monotonic() + 10
        # Current: its consumer was created and confirmed (consumer info) as this user.
        while not (watch.current and watch.get("some-conversation.some-user") == b"{}"):
            assert time.monotonic() < deadline, errors
            await asyncio.sleep(0.01)
    finally:
        await watch.aclose()
    assert errors == []
