"""The node's counters in the Prometheus text exposition format."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from platybus.node import Node


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(node: Node) -> str:
    """Render bus, backend and per-action counters of a node."""
    stats = node.bus.stats()
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP platybus_{name} {help_}")
        lines.append(f"# TYPE platybus_{name} {kind}")
        for labels, value in samples:
            lines.append(f"platybus_{name}{labels} {value}")

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
    hooks = node.automation.hooks
    lanes = [(h.name, h.lane) for h in hooks.hooks if h.lane is not None]
    metric("hook_runs_total", "counter", "Hook runs started or accepted.", [("", hooks.runs)])
    metric("hook_runs_dropped_total", "counter",
           "Hook runs dropped because max_queued (set in the config) was reached.",
           [(f'{{hook="{_escape(name)}"}}', lane.dropped) for name, lane in lanes])
    metric("hook_runs_waiting", "gauge", "Hook runs waiting for room (memory and journal).",
           [(f'{{hook="{_escape(name)}"}}', len(lane.pending) + lane.parked)
            for name, lane in lanes])
    metric("hook_runs_repeated_total", "counter",
           "Deliveries of a message the journal had already accepted (not run again).",
           [("", hooks.duplicates)])
    metric("hook_runs_resumed_total", "counter",
           "Unfinished runs taken up again from the journal at start.", [("", hooks.resumed)])
    journal = node.automation.journal
    if journal is not None:
        metric("journal_accepted_total", "counter", "Runs written to the intake journal.",
               [("", journal.accepted)])
        metric("journal_finished_total", "counter", "Journal runs marked done.",
               [("", journal.finished)])
    return "\n".join(lines) + "\n"
