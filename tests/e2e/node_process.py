"""Helpers for tests that run ``platybus run`` as a real process."""

from __future__ import annotations

import subprocess
import time


def wait_ready(process: subprocess.Popen[str], timeout: float = 30) -> list[str]:
    """Read the node's log until it says it is ready; return the lines read."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if " ready in " in line:
            return lines
    raise AssertionError("node never became ready:\n" + "".join(lines))
