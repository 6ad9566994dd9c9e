"""`make chaos`: a three-node NATS cluster, two or more workers, clients holding many
conversations over SSE and WebSocket, `kill -9` of every kind of process at random
moments and a provider that fails now and then; then the audit. Exit 1 on any loss or
doubling.

    python -m bench.chaos --seconds 600 --conversations 60 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.chaos.audit import (
    audit,
    describe_attempts,
    read_history,
    read_ledger,
    row_counts,
)
from bench.chaos.clients import ChatClient
from bench.chaos.faults import Killer
from bench.chaos.settle import drained, usage_reported_for
from bench.provider import running_provider
from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings

# What the services are told: a quick pace, short ack waits (a killed worker's request is
# taken over within seconds), the faulty provider first and the demo model after it.
_ENV = {
    "LIVECHAT_LOG_LEVEL": "WARNING",
    "LIVECHAT_DEMO_TTFT_MS": "50",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "100",
    "LIVECHAT_DEMO_MAX_TOKENS": "30",
    "LIVECHAT_ACK_WAIT_SECONDS": "4",
    "LIVECHAT_HEARTBEAT_SECONDS": "1",
    "LIVECHAT_MEMORY_ACK_WAIT_SECONDS": "4",
    "LIVECHAT_USAGE_ACK_WAIT_SECONDS": "4",
    "LIVECHAT_OPENAI_MODEL": "chaos-provider",
    "LIVECHAT_MODEL_ALIASES": '{"chaos": ["openai", "demo:demo"]}',
    "LIVECHAT_DEFAULT_MODEL": "chaos",
    "LIVECHAT_PROVIDER_BACKOFF_BASE_SECONDS": "0.2",
    # Every conversation is the same (auth-off) user's: the per-user cap on replies in
    # flight (8, an abuse limit) would keep most sends waiting for a slot, and a message
    # starved of one for the clients' reply timeout would count as lost.
    "LIVECHAT_MAX_IN_FLIGHT_PER_USER": "1000",
}


def _say(text: str) -> None:
    print(f"chaos: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stack(data_dir: Path, workers: int, provider_url: str, log_level: str) -> Iterator[DevStack]:
    port = free_port()
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    environ |= _ENV | {"LIVECHAT_OPENAI_BASE_URL": f"{provider_url}/v1"}
    environ["LIVECHAT_LOG_LEVEL"] = log_level
    environ |= {"LIVECHAT_HTTP_PORT": str(port), "LIVECHAT_DATA_DIR": str(data_dir)}
    settings = DevSettings(
        data_dir=data_dir,
        http_port=port,
        nats_cluster_size=3,
        inference_workers=workers,
        max_restarts=30,
        stable_seconds=10,
        startup_seconds=30,
    )
    log = data_dir / "services.log"
    _say(f"starting a 3-node NATS cluster and {workers} workers (logs: {log})")
    with log.open("ab") as output:
        stack = DevStack(settings, env=environ, output=output)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


async def _run(stack: DevStack, args: argparse.Namespace) -> tuple[int, bool]:
    """The exit code, and whether the audit listed any answer (keep the logs)."""
    gave_up: list[str] = []

    def supervise() -> None:
        try:
            stack.supervise()
        except Exception as error:  # a crash loop: nothing is restarted any more
            gave_up.append(str(error))
            _say(f"the supervisor gave up: {error}")

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    started = time.monotonic()
    stop_at = started + args.seconds
    sse = args.conversations // 2
    clients = [
        ChatClient(stack.gateway_url, "sse", sse, stop_at=stop_at, seed=1),
        ChatClient(stack.gateway_url, "ws", args.conversations - sse, stop_at=stop_at, seed=2),
    ]
    killer = Killer(stack, stop_at=stop_at, every=args.kill_every, seed=3)
    finished_at: dict[int, float] = {}

    async def watch() -> None:
        while time.monotonic() < stop_at + 300:
            now = time.monotonic()
            for client in clients:
                for ex in client.exchanges:
                    if ex.finished and id(ex) not in finished_at:
                        finished_at[id(ex)] = now
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    killing = asyncio.create_task(killer.run())

    async def progress() -> None:
        while True:
            await asyncio.sleep(30)
            done = sum(e.finished for c in clients for e in c.exchanges)
            kills = dict(killer.counts())
            _say(f"{time.monotonic() - started:.0f} s: {done} answers, kills {kills}")

    reporting = asyncio.create_task(progress())
    await asyncio.gather(*(client.run() for client in clients))
    await killing
    reporting.cancel()
    watcher.cancel()
    now = time.monotonic()
    for client in clients:
        for ex in client.exchanges:
            finished_at.setdefault(id(ex), now)
    _say("clients done; letting the last answers be stored")
    data_dir = stack.settings.data_dir
    urls = stack.nats_cluster.urls if stack.nats_cluster else []
    # Memory and usage commit what they hold (a service killed last is back by now):
    # until every consumer has acked all its stream holds and neither the history nor
    # the ledger grew for `settle` seconds, or `settle_max` seconds have passed.
    counts, steady = row_counts(data_dir), 0.0
    give_up_at = time.monotonic() + args.settle_max
    while True:
        await asyncio.sleep(1.0)
        now_counts = row_counts(data_dir)
        steady = steady + 1.0 if now_counts == counts else 0.0
        counts = now_counts
        if steady >= args.settle and await drained(urls):
            break
        if time.monotonic() > give_up_at:
            _say(f"the consumers did not catch up within {args.settle_max:.0f} s; auditing")
            break
    history = read_history(data_dir / "memory.db")
    ledger = read_ledger(data_dir / "usage.db")
    exchanges = [e for c in clients for e in c.exchanges]
    result = audit(exchanges, history, ledger, killer.kills, finished_at)
    # An answer missing from the ledger: was its usage ever reported?
    reported: set[str] | None
    try:
        reported = await usage_reported_for(urls, result.unbilled)
    except Exception as error:  # the audit stands without it
        _say(f"could not read the usage stream ({type(error).__name__})")
        reported = None
    stack.request_stop()
    supervisor.join(10)
    described = f"{args.conversations} conversations (SSE {sse}, WebSocket "
    described += f"{args.conversations - sse}), {args.workers} workers, 3 NATS nodes, "
    described += f"provider faults {args.faults:.0%}"
    print(result.table(time.monotonic() - started, described, reported), flush=True)
    for reply in result.misbilled[:20]:
        print(f"ledger of {reply}: {describe_attempts(data_dir / 'usage.db', reply)}", flush=True)
    if gave_up:
        print(f"\nchaos: the supervisor gave up restarting: {gave_up[0]}", flush=True)
    verdict = "nothing lost, nothing doubled" if result.ok else "LOST OR DOUBLED ANSWERS"
    print(f"\nchaos: {verdict}", flush=True)
    return (0 if result.ok else 1), result.has_problems


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS", 600))
    )
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=12.0, help="seconds between kills")
    parser.add_argument("--faults", type=float, default=0.1, help="fraction of provider failures")
    parser.add_argument(
        "--settle",
        type=float,
        default=8.0,
        help="seconds without a new stored row before the audit",
    )
    parser.add_argument(
        "--settle-max",
        type=float,
        default=180.0,
        help="seconds at most to wait for the consumers to catch up before the audit",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="the services' log level (INFO: a worker's resync decisions, hub resubscriptions)",
    )
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="livechat-chaos-"))
    with (
        running_provider(tokens=30, interval_ms=15, faults=args.faults) as provider,
        _stack(data_dir, args.workers, provider.url, args.log_level) as stack,
    ):
        code, listed = asyncio.run(_run(stack, args))
    if code == 0 and not listed:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        # Any answer listed (part 4's included): its logs are what explains it.
        _say(f"the services' logs and databases are kept in {data_dir}")
    sys.exit(code)


if __name__ == "__main__":
    main()
