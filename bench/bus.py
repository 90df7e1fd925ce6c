"""Local bus throughput and latency beside a raw deque+Condition thread hand-off.

Throughput: N typed events from one publishing thread to one subscriber.
Latency: events offered at a fixed rate; p50/p99 from publish to handler.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import deque

import msgspec

from platybus.bus import Bus, BusConfig
from platybus.messages import Event


class Reading(msgspec.Struct, frozen=True):
    """Data of the benchmark's typed event."""

    sensor: str
    value: float


class SensorRead(Event, tag="event", frozen=True, kw_only=True):
    """A typed event like the ones backends publish."""

    type: str = "sensor.read"
    data: Reading


def raw_handoff(n: int) -> float:
    """Hand ``n`` objects between two threads with deque + Condition, batch drain."""
    queue: deque[object] = deque()
    cond = threading.Condition()
    received = 0
    done = threading.Event()
    payload = [SensorRead(data=Reading("s", float(i))) for i in range(1000)]

    def consume() -> None:
        nonlocal received
        local = 0
        while local < n:
            with cond:
                while not queue:
                    cond.wait()
                batch = list(queue)
                queue.clear()
            for _item in batch:
                local += 1
        received = local
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    start = time.perf_counter()
    for i in range(n):
        with cond:
            queue.append(payload[i % 1000])
            cond.notify()
    done.wait()
    elapsed = time.perf_counter() - start
    thread.join()
    assert received == n
    return n / elapsed


def bus_throughput(n: int) -> float:
    """Publish ``n`` typed events to one subscriber; return events/s."""
    bus = Bus("bench", BusConfig(queue_size=200_000))
    count = 0
    done = threading.Event()

    def handler(event: Event) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    bus.subscribe("sensor.read", handler)
    bus.start()
    events = [SensorRead(data=Reading("s", float(i))) for i in range(1000)]
    start = time.perf_counter()
    publish = bus.publish
    for i in range(n):
        publish(events[i % 1000])
    done.wait(120)
    elapsed = time.perf_counter() - start
    bus.stop()
    assert count == n, f"delivered {count} of {n}"
    return n / elapsed


def bus_latency(rate: int, seconds: float) -> tuple[float, float, int]:
    """Offer events at ``rate``/s; return p50 and p99 latency in ms and the count."""
    bus = Bus("bench")
    samples: list[float] = []
    bus.subscribe("sensor.read", lambda e: samples.append(time.perf_counter() - e.data.value))
    bus.start()
    n = int(rate * seconds)
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(n):
        # Sleep (releasing the GIL) like a producer waiting on I/O; never spin.
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        bus.publish(SensorRead(data=Reading("s", time.perf_counter())))
    deadline = time.monotonic() + 10
    while len(samples) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    bus.stop()
    samples.sort()
    return samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99)] * 1000, len(samples)


def main(argv: list[str] | None = None) -> None:
    """Run the bus benchmark and print figures beside the raw baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1_000_000, help="events for throughput")
    parser.add_argument("--rate", type=int, default=10_000, help="offered events/s for latency")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    raw = raw_handoff(args.n)
    ours = bus_throughput(args.n)
    p50, p99, count = bus_latency(args.rate, args.seconds)
    print(f"bus: {args.n:,} typed events, one publisher thread -> one subscriber")
    print(f"  raw deque+Condition hand-off  {raw:>12,.0f} msg/s   (baseline)")
    print(f"  platybus bus                  {ours:>12,.0f} events/s  = {ours / raw:.0%} of raw"
          f"  (target >= 50%)")
    print(f"  latency at {args.rate:,}/s offered ({count:,} events): p50 {p50:.3f} ms, "
          f"p99 {p99:.3f} ms  (target p99 <= 1 ms)")


if __name__ == "__main__":
    main()
