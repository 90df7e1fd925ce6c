"""The node's counters in the Prometheus text exposition format."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from platybus.node import Node


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_metric(name: str, kind: str, help_: str,
                  samples: list[tuple[str, float]]) -> list[str]:
    """Return the lines of one metric: its help, its type and one line per sample."""
    lines = [f"# HELP platybus_{name} {help_}", f"# TYPE platybus_{name} {kind}"]
    lines += [f"platybus_{name}{labels} {value}" for labels, value in samples]
    return lines


def render_metrics(node: Node) -> str:
    """Render bus, backend and per-action counters of a node."""
    stats = node.bus.stats()
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.extend(format_metric(name, kind, help_, samples))

    metric("bus_published_total", "counter", "Messages published on the bus.",
           [("", stats.published)])
    metric("bus_delivered_total", "counter", "Handler deliveries.", [("", stats.delivered)])
    metric("bus_rejected_total", "counter", "Messages refused by back-pressure.",
           [("", stats.rejected)])
    metric("bus_handler_errors_total", "counter", "Handlers that raised.",
           [("", stats.handler_errors)])
    metric("bus_queue_depth", "gauge", "Messages waiting for the dispatcher.",
           [("", stats.queue_depth)])
    metric("bus_pending_replies", "gauge", "Requests waiting for a response.",
           [("", stats.pending_replies)])
    metric("bus_dispatch_latency_seconds", "gauge",
           "Queue-to-dispatch latency over recent messages.",
           [('{quantile="0.5"}', stats.latency_p50_ms / 1000),
            ('{quantile="0.99"}', stats.latency_p99_ms / 1000)])
    metric("backend_events_total", "counter", "Events each backend published.",
           [(f'{{backend="{_escape(name)}"}}', b.events_sent)
            for name, b in node.backends.items()])
    specs = node.actions.specs()
    metric("action_calls_total", "counter", "Calls of each action.",
           [(f'{{action="{_escape(s.name)}"}}', s.stats.calls) for s in specs])
    metric("action_errors_total", "counter", "Failed calls of each action.",
           [(f'{{action="{_escape(s.name)}"}}', s.stats.errors) for s in specs])
    metric("action_seconds_total", "counter", "Time spent in each action.",
           [(f'{{action="{_escape(s.name)}"}}', round(s.stats.seconds, 6)) for s in specs])
    text = "\n".join(lines) + "\n"
    # Each backend adds its own counters (the link's, the HTTP server's).
    return text + "".join(backend.render_metrics() for backend in node.backends.values())
