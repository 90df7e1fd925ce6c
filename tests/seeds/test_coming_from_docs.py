"""Each docs/coming-from/ page shows its example file as it is, and the example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGES = Path(__file__).resolve().parents[2] / "docs" / "coming-from"
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, Path]]:
    """(page, example file) of every page."""
    found = []
    for page in sorted(PAGES.glob("*.md")):
        match = EXAMPLE.search(page.read_text())
        assert match, f"{page.name} has no runnable example"
        found.append((page.name, page.parent / match.group(1)))
    return found


def test_every_system_has_a_page() -> None:
    assert [name for name, _ in examples()] == [
        "e3-core.md", "filetransfer.md", "ftrack.md", "platypush.md", "sftpplus.md"]


@pytest.mark.slow
@pytest.mark.parametrize(("page", "script"), examples(), ids=lambda v: getattr(v, "name", v))
def test_the_example_is_shown_as_it_is_and_runs(page: str, script: Path, redis_url: str,
                                                no_leaked_processes: None) -> None:
    text = (PAGES / page).read_text()
    assert EXAMPLE.search(text).group(2) == script.read_text()  # type: ignore[union-attr]
    env = {**os.environ, "PLATYBUS_REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    expected = re.search(r"```python\n.*?```\n\n```\n(.*?)```", text, re.DOTALL)
    assert expected is not None
    first_words = [line.split()[0] for line in expected.group(1).splitlines() if line]
    assert [line.split()[0] for line in done.stdout.splitlines() if line] == first_words
