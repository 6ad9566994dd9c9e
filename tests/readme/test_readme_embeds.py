"""The README's examples are the files of docs/examples, each shown once, with its output."""

from __future__ import annotations

from pathlib import Path

from readme_examples import Example, Receive, matches, readme_examples, run_transcript

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def _examples() -> list[Example]:
    return readme_examples((ROOT / "README.md").read_text())


def test_each_readme_example_is_its_file_word_for_word() -> None:
    examples = _examples()
    assert examples, "the README shows no tested example"
    for example in examples:
        path = ROOT / example.path
        assert path.parent == EXAMPLES, f"{example.path}: examples live in docs/examples"
        assert path.is_file(), f"the README shows {example.path}, which does not exist"
        assert example.shown == path.read_text(), (
            f"the README's copy of {example.path} differs from the file: copy the file "
            "into the README's block (or the block into the file)"
        )


def test_every_example_file_is_in_the_readme_once_and_shows_what_it_prints() -> None:
    shown = [example.path for example in _examples()]
    files = sorted(f"docs/examples/{path.name}" for path in EXAMPLES.iterdir())
    assert sorted(shown) == files, "each file of docs/examples appears once in the README"
    for example in _examples():
        if not example.path.endswith(".ws"):  # a transcript holds its own output
            assert example.output is not None, f"{example.path}: no `<!-- output -->` block"


def test_the_comparison_rules_hold_what_they_promise() -> None:
    shown = 'id: 1796425850064001\n{"id":"a3…","at":"2026-12-04T23:12:05Z"}\n…\nend\n'
    printed = (
        "id: 1796425850069999\n"
        '{"id":"a3f0","at":"2026-12-05T01:02:03.456+00:00"}\n'
        "one\ntwo\nend   \n\n"
    )
    assert matches(shown, printed)
    assert matches("a …\nend", "a b\nend")  # `…` alone on a line may stand for no line
    assert matches("t 12.5 ms", "t 3.25 ms")
    assert matches("GET http://127.0.0.1:8000/x", "GET http://127.0.0.1:5123/x", "127.0.0.1:5123")
    assert not matches(shown, printed.replace("end", "stop"))
    assert not matches("id: 1796425850064001", "id: 12")  # an event id has 16 digits
    assert not matches('"model":"auto"', '"model":"demo"')
    assert not matches("a …\nend", "b\nend")


async def test_a_transcript_holds_only_when_each_client_receives_what_it_shows() -> None:
    transcript = (
        'A → {"type": "ping"}\n'
        'A ← {"type":"start","event_id":1796426477457001}\n'
        "A ← …\n"
        'A ← {"type":"done","at":"2026-12-04T23:12:14Z"}\n'
        'B ← {"type":"pong"}\n'
    )
    start = '{"type":"start","event_id":1796400000000007}'
    done = '{"type":"done","at":"2026-12-05T00:00:00.5Z"}'
    sent: list[tuple[str, str]] = []

    async def send(client: str, frame: str) -> None:
        sent.append((client, frame))

    def receiving(frames: dict[str, list[str]]) -> Receive:
        async def receive(client: str) -> str:
            return frames[client].pop(0)

        return receive

    def inbox(b_gets: str = '{"type":"pong"}') -> dict[str, list[str]]:
        return {"A": [start, '{"type":"token"}', done], "B": [b_gets]}

    assert await run_transcript(transcript, send, receiving(inbox())) is None
    assert sent == [("A", '{"type": "ping"}')]
    difference = await run_transcript(transcript, send, receiving(inbox('{"type":"error"}')))
    assert difference is not None and difference.startswith("line 5: shows")
    unskipped = transcript.replace("A ← …\n", "")
    difference = await run_transcript(unskipped, send, receiving(inbox()))
    assert difference is not None and difference.startswith("line 3: shows")
