"""An example handler: counts the words of a text file in a worker process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from platybus.isolation.handlers import Handler
from platybus.messages import Event


class WordCount(Handler):
    """Counts words; on_start/on_stop run in the node, handle() in a worker process."""

    def on_start(self, config: Any) -> None:
        print(f"word count ready in the node (pid {os.getpid()}), "
              f"minimum length {config['min_length']}")

    def on_stop(self) -> None:
        print(f"word count stopped in the node (pid {os.getpid()})")

    @staticmethod
    def handle(config: Any, event: Event) -> dict[str, Any]:
        text = Path(event.data["path"]).read_text(encoding="utf-8")
        words = [w for w in text.split() if len(w) >= config["min_length"]]
        return {"words": len(words), "worker_pid": os.getpid()}
