"""Counters in the Prometheus text exposition format: the one place that writes it.

:class:`PrometheusText` writes metric families; :func:`render_metrics` renders a
node's bus, backend and per-action counters with it, from plain values the node
passes in (this module knows nothing of the node). Components with counters of
their own (the http backend) write them with the same :class:`PrometheusText`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from platybus.actions import ActionSpec
    from platybus.bus import BusStats

PREFIX = "platybus_"

Sample = tuple[Mapping[str, object], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


class PrometheusText:
    """Collects metric families and returns them as Prometheus text."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str, samples: Iterable[Sample]) -> None:
        """Add one family ``platybus_<name>`` of ``kind`` (counter, gauge) with its samples."""
        full = PREFIX + name
        lines = self._lines
        lines.append(f"# HELP {full} {help_}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            lines.append(f"{full}{_labels(labels)} {value}")

    def value(self, name: str, kind: str, help_: str, value: float) -> None:
        """Add a family with one unlabelled sample."""
        self.metric(name, kind, help_, [({}, value)])

    def text(self) -> str:
        """The families added so far, one line each, ending in a newline."""
        return "\n".join(self._lines) + "\n" if self._lines else ""


def render_metrics(stats: BusStats, backend_events: Mapping[str, int],
                   actions: Iterable[ActionSpec]) -> str:
    """Render bus counters, events per backend and per-action counters."""
    out = PrometheusText()
    out.value("bus_published_total", "counter", "Messages published on the bus.",
              stats.published)
    out.value("bus_delivered_total", "counter", "Handler deliveries.", stats.delivered)
    out.value("bus_rejected_total", "counter", "Messages refused by back-pressure.",
              stats.rejected)
    out.value("bus_handler_errors_total", "counter", "Handlers that raised.",
              stats.handler_errors)
    out.value("bus_queue_depth", "gauge", "Messages waiting for the dispatcher.",
              stats.queue_depth)
    out.value("bus_pending_replies", "gauge", "Requests waiting for a response.",
              stats.pending_replies)
    out.metric("bus_dispatch_latency_seconds", "gauge",
               "Queue-to-dispatch latency over recent messages.",
               [({"quantile": "0.5"}, stats.latency_p50_ms / 1000),
                ({"quantile": "0.99"}, stats.latency_p99_ms / 1000)])
    out.metric("backend_events_total", "counter", "Events each backend published.",
               [({"backend": name}, count) for name, count in backend_events.items()])
    specs = list(actions)
    out.metric("action_calls_total", "counter", "Calls of each action.",
               [({"action": s.name}, s.stats.calls) for s in specs])
    out.metric("action_errors_total", "counter", "Failed calls of each action.",
               [({"action": s.name}, s.stats.errors) for s in specs])
    out.metric("action_seconds_total", "counter", "Time spent in each action.",
               [({"action": s.name}, round(s.stats.seconds, 6)) for s in specs])
    return out.text()


def render_hook_metrics(counters: Mapping[str, Any]) -> str:
    """Render hook runs (dropped, waiting, repeated, resumed) and the journal's counters."""
    out = PrometheusText()
    lanes = counters["lanes"]
    out.value("hook_runs_total", "counter", "Hook runs started or accepted.", counters["runs"])
    out.metric("hook_runs_dropped_total", "counter",
               "Hook runs dropped because a max_queued set in the config was reached.",
               [({"hook": name}, dropped) for name, dropped, _ in lanes])
    out.metric("hook_runs_waiting", "gauge",
               "Hook runs waiting for room (in memory and in the journal).",
               [({"hook": name}, waiting) for name, _, waiting in lanes])
    out.value("hook_runs_repeated_total", "counter",
              "Deliveries of a message the journal had already accepted (not run again).",
              counters["repeated"])
    out.value("hook_runs_resumed_total", "counter",
              "Unfinished runs taken up again from the journal at start.", counters["resumed"])
    if counters["journal"] is not None:
        accepted, finished = counters["journal"]
        out.value("journal_accepted_total", "counter", "Runs written to the intake journal.",
                  accepted)
        out.value("journal_finished_total", "counter", "Journal runs marked done.", finished)
    return out.text()
