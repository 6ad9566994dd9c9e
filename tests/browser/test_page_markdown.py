"""The page's markdown (static/js/markdown.js), run by node as the browser runs it: the
time is linear in the answer's length, whatever the answer holds (it is rendered again
on every animation frame while an answer streams)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.protocols.page import STATIC_DIR

MODULE = (Path(STATIC_DIR) / "js" / "markdown.js").resolve()
LENGTH = 400_000  # ten times the 40,000 "[" that took seconds when it was quadratic

# Answers built to make a backtracking pattern retry from every position.
HOSTILE = {
    "brackets": "[" * LENGTH,
    "unclosed link texts": "[a" * (LENGTH // 2),
    "unclosed link urls": "[a](http://x" * (LENGTH // 12),
    "link openings": "[a](" * (LENGTH // 4),
    "stars": "*" * LENGTH,
    "underscores": "_" * LENGTH,
    "backticks": "`" * LENGTH,
    "strong openings": "**a" * (LENGTH // 3),
    "emphasis openings": " *a" * (LENGTH // 3),
    "fences": "```\n" * (LENGTH // 4),
}

_SCRIPT = """
import { renderMarkdown } from %s;
const inputs = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => (data += chunk));
  process.stdin.on("end", () => resolve(data));
}));
const out = {};
for (const [name, text] of Object.entries(inputs)) out[name] = renderMarkdown(text).length;
out.link = renderMarkdown("see [the docs](https://example.com/a?b=1) now");
process.stdout.write(JSON.stringify(out));
"""


def test_hostile_answers_render_in_linear_time() -> None:
    node = shutil.which("node")
    assert node, "node is needed to run the page's modules"
    script = _SCRIPT % json.dumps(MODULE.as_uri())
    try:
        # Linear: well under a second each. Quadratic, as before: minutes for the lot.
        result = subprocess.run(
            [node, "--input-type=module", "-e", script],
            input=json.dumps(HOSTILE),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("rendering hostile answers did not end: the markdown is super-linear")
    rendered = json.loads(result.stdout)
    for name, text in HOSTILE.items():
        assert rendered[name] >= len(text.replace("\n", "")), name  # all of it is shown
    assert rendered["link"] == (
        '<p>see <a href="https://example.com/a?b=1" target="_blank" '
        'rel="noopener noreferrer nofollow">the docs</a> now</p>'
    )
