"""The README's SigV4 example runs as written against the local setup (the router behind its local endpoint)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from local.localrun import LocalWorld

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Calling the router") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README lost its example"
    return match.group(1)


def test_readme_sigv4_example_reaches_the_router(world: LocalWorld) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_example(), str(README), "exec"), {"api_url": world.url})  # our own README, run as written
    # The in-process router prints its EMF metric lines too; the example's own line is the last.
    target, _, output = printed.getvalue().strip().splitlines()[-1].partition(" ")
    assert target.startswith("claude-sonnet/provisioned/us-east-1"), printed.getvalue()
    assert "message" in output
