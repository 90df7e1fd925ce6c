"""Fixtures shared by the plugin tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from platybus.config import load_config
from platybus.node import Node


@pytest.fixture
def start_node() -> Iterator[Callable[[Path], Node]]:
    """Start embedded nodes from config files; stop them after the test."""
    nodes: list[Node] = []

    def start(config: Path) -> Node:
        node = Node(load_config(config))
        node.start(embedded=True)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
