"""Python automation loaded by docs/examples/automation.yaml (``scripts:``)."""

from __future__ import annotations

from platybus.automation.scripts import ScriptContext, cron, hook, procedure


@hook({"type": "file.created", "data.path": {"$glob": "*.csv"}})
def on_csv(event, ctx: ScriptContext) -> None:
    """Log how many digits the name of a new CSV file has, through a procedure."""
    rows = ctx.call("procedure.digits", text=event.data["path"])
    ctx.call("log.info", message=f"csv {event.data['path']}: {rows} digits in its name")


@procedure
def digits(text: str) -> int:
    """How many digits a text has."""
    return sum(ch.isdigit() for ch in text)


@cron("*/30 * * * * *")
def heartbeat(ctx: ScriptContext) -> None:
    """Every 30 seconds, say so."""
    ctx.call("log.debug", message=f"alive at {ctx.cron['slot'] if ctx.cron else '?'}")
