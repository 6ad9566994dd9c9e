"""Every example of the README's tour, run as written against a started system, prints
what the README shows (the comparison rules are in tests/support/readme_examples.py).

One system, as `make dev` starts it (its data dir is `.livechat` in the folder the examples
run in, so `.livechat/nats-url` is there), with no provider key: the offline demo model,
whose text depends only on the prompt. Two settings differ from `make dev`'s: the demo
model streams faster, and tokens are not coalesced (`LIVECHAT_TOKEN_COALESCE_MS=0`), so
each word is one `token` event whatever the machine's pace. The examples run in the
README's order, each after the system has settled (every request answered, stored by
memory and recorded by usage), as a reader typing them one by one would find it.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
import websockets
from readme_examples import (
    README_ADDRESS,
    Example,
    matches,
    mismatch_report,
    readme_examples,
    run_transcript,
)
from stacks import FAST_ENV, clean_environ, running_stack

from contracts import consumers

# Starts nats-server itself (the whole system).
pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **FAST_ENV,
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "400",
    "LIVECHAT_TOKEN_COALESCE_MS": "0",
}
_EVENT_ID = re.compile(r"^id: (\d+)\nevent: token$", re.MULTILINE)


def _first_token_id(printed: dict[str, str]) -> dict[str, str]:
    [first, *_] = _EVENT_ID.findall(printed["docs/examples/send-sse.sh"])
    return {"LAST_EVENT_ID": first}


# What a reader fills in from an earlier example's output, by example.
FILLED_IN: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "docs/examples/resume.sh": _first_token_id,
}


async def _settled(nats_url: str) -> None:
    """Until no work is pending or unacked for inference, memory or usage."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for _ in range(1500):
            busy = 0
            for consumer in (consumers.INFERENCE, consumers.MEMORY, consumers.USAGE):
                info = await js.consumer_info(consumer.stream, consumer.durable)
                busy += info.num_pending + info.num_ack_pending
            if not busy:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the system never settled")
    finally:
        await nc.close()


async def _run(example: Example, folder: Path, address: str, env: dict[str, str]) -> str:
    """The example's file, with the system's address, run in `folder`; what it printed."""
    script = folder / Path(example.path).name
    script.write_text(example.shown.replace(README_ADDRESS, address))
    program = "sh" if script.suffix == ".sh" else sys.executable  # as the README says
    process = await asyncio.create_subprocess_exec(
        program,
        str(script),
        cwd=folder,
        env=clean_environ(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, f"{example.path} failed: {stderr.decode()}"
    return stdout.decode()


async def _play(example: Example, address: str) -> str | None:
    sockets: dict[str, websockets.ClientConnection] = {}

    async def socket(client: str) -> websockets.ClientConnection:
        if client not in sockets:
            sockets[client] = await websockets.connect(f"ws://{address}/v1/ws")
        return sockets[client]

    async def send(client: str, frame: str) -> None:
        await (await socket(client)).send(frame)

    async def receive(client: str) -> str:
        frame = await (await socket(client)).recv()
        return frame if isinstance(frame, str) else frame.decode()

    try:
        return await run_transcript(example.shown, send, receive, address)
    finally:
        for ws in sockets.values():
            await ws.close()


async def test_every_readme_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    examples = readme_examples((ROOT / "README.md").read_text())
    with running_stack(tmp_path / ".livechat", ENV) as stack:
        address = f"127.0.0.1:{stack.settings.http_port}"
        nats_url = (tmp_path / ".livechat" / "nats-url").read_text().strip()
        printed: dict[str, str] = {}
        problems: list[str] = []
        for example in examples:
            await _settled(nats_url)
            if example.path.endswith(".ws"):
                difference = await _play(example, address)
                if difference is not None:
                    problems.append(f"{example.path} {difference}")
                continue
            filled = FILLED_IN.get(example.path, lambda _: {})(printed)
            printed[example.path] = await _run(example, tmp_path, address, filled)
            assert example.output is not None
            if not matches(example.output, printed[example.path], address):
                report = mismatch_report(
                    example.path, example.output, printed[example.path], address
                )
                problems.append(f"{report}\n--- printed as is:\n{printed[example.path]}")
    assert not problems, "\n\n".join(problems)
