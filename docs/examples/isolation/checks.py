"""Python that hooks run in worker processes (see docs/automation/hooks.md)."""

import hashlib
import os
from pathlib import Path

from platybus.automation.scripts import hook


def digest(path: str) -> dict[str, object]:
    """Hash a file; called by the YAML hook's run: step."""
    data = Path(path).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pid": os.getpid()}


@hook({"type": "file.created", "data.path": {"$glob": "*.bin"}}, isolation="process",
      timeout=10)
def inspect_binary(event):
    """A hook run in a worker: a hang or a crash here cannot take the node down."""
    return {"path": event.data["path"], "pid": os.getpid()}
