"""Helpers shared by the transfer tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLATYBUS = [sys.executable, "-m", "platybus"]


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``platybus transfer`` with a config and return what it printed."""
    return subprocess.run([*PLATYBUS, "transfer", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=60, check=False)
