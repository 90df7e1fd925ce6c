"""Fixtures of the mqtt backend's tests: a broker of each test's own, outside clients, nodes."""

from tests.backends.mqtt.harness import broker, node_process, outside, start_node

__all__ = ["broker", "node_process", "outside", "start_node"]
