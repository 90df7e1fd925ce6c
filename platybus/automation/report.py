"""Plain-text rendering of traces and explanations for ``platybus trace`` and ``explain``."""

from __future__ import annotations

import json
import time
from typing import Any

from platybus.automation.trace import Trace


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call(action: str, args: Any, target: str | None = None) -> str:
    if isinstance(args, dict):
        inner = ", ".join(f"{k}={_short(v, 60)}" for k, v in args.items())
    else:
        inner = _short(args, 60)
    where = f" on {target}" if target else ""
    return f"{action}({inner}){where}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render_trace(trace: Trace) -> list[str]:
    """The lines that show one trace."""
    if trace.kind == "event":
        lines = [f"{_when(trace.ts)}  event {trace.name}  {trace.message_id}  {trace.outcome}"]
        width = max((len(c.hook) for c in trace.candidates), default=0)
        for c in trace.candidates:
            if c.matched:
                lines.append(f"    {c.hook:<{width}}  matched -> run {c.run}")
            else:
                lines.append(f"    {c.hook:<{width}}  not matched: {c.reason}")
        return lines
    head = f"{_when(trace.ts)}  {trace.kind} {trace.name}  {trace.outcome}  {_ms(trace.duration)}"
    if trace.slot:
        head += f"  (slot {trace.slot})"
    elif trace.message_id:
        head += f"  (event {trace.message_id})"
    if trace.parent:
        head += f"  called by run {trace.parent}"
    lines = [head, f"    run {trace.id}"]
    if trace.variables:
        lines.append(f"    variables: {_short(trace.variables)}")
    for a in trace.actions:
        result = "ok" if a.ok else f"FAILED {a.error}"
        tail = f" -> {_short(a.output, 80)}" if a.ok and a.output is not None else ""
        lines.append(f"    {a.step}  {_call(a.action, a.args, a.target)}  {result} "
                     f"{_ms(a.duration) if a.duration is not None else ''}{tail}")
    if trace.error:
        lines.append(f"    error: {trace.error}")
    return lines


def render_explanation(result: dict[str, Any]) -> list[str]:
    """The lines that show what ``automation.explain`` returned."""
    event = result["event"]
    lines = [f"event {event['type']} (id {event['id']})"]
    hooks = result["hooks"]
    if not hooks:
        return [*lines, "  no hooks are configured"]
    for entry in hooks:
        name = f"{entry['hook']} (priority {entry['priority']})"
        if not entry["fires"]:
            lines.append(f"  no     {name}: {entry['reason']}")
            continue
        lines.append(f"  FIRES  {name}")
        if entry.get("captures"):
            lines.append(f"           captures: {_short(entry['captures'])}")
        for step in entry["steps"]:
            if "action" not in step:
                lines.append(f"           {step['step']}  ({step['kind']} step)")
            elif "error" in step:
                lines.append(f"           {step['step']}  {step['action']}: cannot render "
                             f"yet: {step['error']}")
            else:
                lines.append(f"           {step['step']}  "
                             f"{_call(step['action'], step['args'], step.get('target'))}")
    return lines
