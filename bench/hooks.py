"""Events -> a declarative hook (condition + templated args) -> a no-op action.

Measures events/s through the whole path (publish, dispatch, hook matching,
templating, action call) with tracing on and off, beside the bare bus delivering
the same events to one subscriber in the same run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from platybus.actions import ActionRegistry, ActionSpec
from platybus.automation import Automation
from platybus.bus import Bus, BusConfig
from platybus.codec import Codec
from platybus.config import load_config
from platybus.extensions import NodeContext
from platybus.messages import Event

CONFIG = """
node: {{id: bench, data_dir: {data}}}
traces: {{enabled: {tracing}, disk: false, keep: 1000}}
hooks:
  new-text-file:
    durable: {durable}
    if:
      type: file.created
      data.size: {{$gt: 0}}
      data.path: {{$regex: '(?P<name>[^/]+)\\.txt$'}}
    then:
      - action: bench.noop
        args: {{message: "new file ${{name}} (${{event.data.size}} bytes)",
                size: "${{event.data.size}}"}}
"""


def events(n: int) -> list[Event]:
    """Distinct file.created events, as a file monitor would publish them."""
    return [Event(type="file.created", data={"path": f"/watched/dir/file-{i}.txt", "size": i + 1,
                                             "is_directory": False})
            for i in range(n)]


def bare_bus(batch: list[Event]) -> float:
    """The bus alone: the same events to one subscriber that counts them."""
    bus = Bus("bench", BusConfig(queue_size=len(batch) + 1))
    done = threading.Event()
    count = 0

    def handler(event: Event) -> None:
        nonlocal count
        count += 1
        if count == len(batch):
            done.set()

    bus.subscribe("file.created", handler)
    bus.start()
    start = time.perf_counter()
    for event in batch:
        bus.publish(event)
    done.wait(120)
    elapsed = time.perf_counter() - start
    bus.stop()
    assert count == len(batch), f"delivered {count} of {len(batch)}"
    return len(batch) / elapsed


def through_hook(batch: list[Event], tracing: bool, workdir: Path, durable: bool) -> float:
    """Publish the events; return events/s until the hook's action ran for every one."""
    path = workdir / f"hooks-{tracing}-{durable}.yaml"
    path.write_text(CONFIG.format(data=workdir / f"data-{tracing}-{durable}",
                                  tracing=str(tracing).lower(), durable=str(durable).lower()))
    config = load_config(path)
    bus = Bus("bench", BusConfig(queue_size=len(batch) + 1))
    actions = ActionRegistry()
    done = threading.Event()
    count = 0

    def noop(message: str, size: int) -> None:
        """Do nothing but count."""
        nonlocal count
        count += 1
        if count == len(batch):
            done.set()

    actions.add(ActionSpec.from_function("bench.noop", noop, blocking=False))
    context = NodeContext(node_id="bench", bus=bus, codec=Codec(), actions=actions,
                          data_dir=workdir / f"data-{tracing}-{durable}")
    automation = Automation(config, context)
    bus.start()
    automation.start()
    start = time.perf_counter()
    for event in batch:
        bus.publish(event)
    done.wait(120)
    elapsed = time.perf_counter() - start
    traces: list[Any] = actions.call("trace.list", {"last": 2})
    automation.stop()
    bus.stop()
    assert count == len(batch), f"ran {count} of {len(batch)}"
    if tracing:
        assert traces, "tracing on but no traces kept"
    return len(batch) / elapsed


def main(argv: list[str] | None = None) -> None:
    """Run the hook benchmark and print figures beside the bare bus."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200_000, help="events per run")
    args = parser.parse_args(argv)
    # A flood on purpose: the hook runner holding the bus back is expected, not news.
    logging.getLogger("platybus.automation").setLevel(logging.ERROR)
    batch = events(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bare = bare_bus(batch)
        off = through_hook(batch, tracing=False, workdir=workdir, durable=False)
        journal = through_hook(batch, tracing=False, workdir=workdir, durable=True)
        on = through_hook(batch, tracing=True, workdir=workdir, durable=True)
    print(f"hooks: {args.n:,} file.created events -> hook (3 conditions, regex capture, "
          "templated args) -> no-op action")
    print(f"  bare bus, one subscriber        {bare:>10,.0f} events/s  (baseline)")
    print(f"  hook, durable: false, no traces {off:>10,.0f} events/s  = {off / bare:.0%} of "
          "the bare bus")
    print(f"  hook, journal on, no traces     {journal:>10,.0f} events/s  = "
          f"{journal / bare:.0%} of the bare bus  (target >= 50,000)")
    print(f"  hook, journal on, traces on     {on:>10,.0f} events/s  = {on / bare:.0%} of "
          "the bare bus")
    print("  Platypush 1.3.39, same scenario:   130-260 events/s")


if __name__ == "__main__":
    main()
