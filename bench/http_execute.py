"""HTTP ``POST /execute`` of a trivial action (``node.ping``) beside a bare aiohttp handler.

Both servers run as their own processes and take the same load in the same run:
10 keep-alive connections from ``wrk`` when it is installed, otherwise from a
Python load generator (aiohttp client, in two separate processes so that it is
less of a bottleneck; its figures are then a floor, not the servers' ceiling).
The servers are measured in alternating rounds and the median round is shown,
because a shared machine drifts between runs.

Run: ``python -m bench.http_execute [--seconds 3] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BODY = b'{"action":"node.ping"}'
CONNECTIONS = 10

BARE_SERVER = """
import sys
import msgspec
from aiohttp import web

encoder = msgspec.json.Encoder()

async def execute(request):
    spec = msgspec.json.decode(await request.read())
    body = encoder.encode({"request_id": "", "output": {"pong": True, "action": spec["action"]},
                           "error": None, "duration": 0.0})
    return web.Response(body=body, content_type="application/json")

async def health(request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_post("/execute", execute)
app.router.add_get("/health", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            handle_signals=True)
"""

# The node always requires a token; the bare baseline gets the same header, unread.
TOKEN = "bench-token"
AUTH = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}

WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY.decode()}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {TOKEN}"
"""


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until ``GET /health`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not become healthy in {timeout:g}s")


def start_node(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``platybus run`` with only the http backend; return it and its port."""
    port = free_port()
    config = workdir / "config.yaml"
    config.write_text(
        f"node:\n  id: bench-http\n  data_dir: {workdir / 'data'}\n  log_level: warning\n"
        f"backends:\n  http:\n    host: 127.0.0.1\n    port: {port}\n    token: {TOKEN}\n",
        encoding="utf-8",
    )
    process = subprocess.Popen([sys.executable, "-m", "platybus", "run", "-c", str(config)],
                               stdout=subprocess.DEVNULL)
    wait_healthy(port, process)
    return process, port


def start_bare(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the bare aiohttp handler; return it and its port."""
    port = free_port()
    script = workdir / "bare_server.py"
    script.write_text(BARE_SERVER, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(port)],
                               stdout=subprocess.DEVNULL)
    wait_healthy(port, process)
    return process, port


def check_execute(port: int) -> None:
    """Make sure the node really runs the action before measuring it."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/execute", data=BODY,
                                     headers=AUTH)
    with urllib.request.urlopen(request, timeout=5) as reply:
        answer = json.loads(reply.read())
    if answer.get("error") or not answer.get("output", {}).get("pong"):
        raise RuntimeError(f"node.ping did not answer as expected: {answer}")


# -- load generators -------------------------------------------------------------


def run_wrk(port: int, seconds: float, script: Path) -> tuple[float, float]:
    """Return (req/s, p50 ms) measured by wrk with 10 connections."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}/execute"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s50%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p50 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p50


def _python_worker(port: int, seconds: float, connections: int,
                   results: multiprocessing.Queue[tuple[int, list[float]]]) -> None:
    import aiohttp

    async def main() -> tuple[int, list[float]]:
        latencies: list[float] = []
        url = f"http://127.0.0.1:{port}/execute"
        headers = AUTH
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            end = time.perf_counter() + seconds

            async def one_connection() -> None:
                while time.perf_counter() < end:
                    began = time.perf_counter()
                    async with session.post(url, data=BODY, headers=headers) as reply:
                        await reply.read()
                        if reply.status != 200:
                            raise RuntimeError(f"status {reply.status}")
                    latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(one_connection() for _ in range(connections)))
        return len(latencies), latencies

    results.put(asyncio.run(main()))


def run_python(port: int, seconds: float) -> tuple[float, float]:
    """Return (req/s, p50 ms) from two load-generator processes of 5 connections each."""
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[int, list[float]]] = context.Queue()
    workers = [context.Process(target=_python_worker,
                               args=(port, seconds, CONNECTIONS // 2, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    collected = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join(10)
    count = sum(c for c, _ in collected)
    latencies = sorted(x for _, lat in collected for x in lat)
    return count / seconds, latencies[len(latencies) // 2] * 1000


# -- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Measure both servers in alternating rounds and print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server")
    parser.add_argument("--python-load", action="store_true",
                        help="use the Python load generator even if wrk is installed")
    args = parser.parse_args(argv)
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        workdir = Path(tmp)
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT, encoding="utf-8")

        def measure(port: int, seconds: float) -> tuple[float, float]:
            return run_wrk(port, seconds, script) if use_wrk else run_python(port, seconds)

        bare, bare_port = start_bare(workdir)
        node, node_port = start_node(workdir)
        try:
            check_execute(node_port)
            measure(bare_port, 1.0)  # warm-up: connections, caches, CPU frequency
            measure(node_port, 1.0)
            rounds: dict[str, list[tuple[float, float]]] = {"bare": [], "node": []}
            for _ in range(args.rounds):
                rounds["bare"].append(measure(bare_port, args.seconds))
                rounds["node"].append(measure(node_port, args.seconds))
        finally:
            for process in (bare, node):
                process.terminate()
            for process in (bare, node):
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    bare_rps = statistics.median(r for r, _ in rounds["bare"])
    node_rps = statistics.median(r for r, _ in rounds["node"])
    bare_p50 = statistics.median(p for _, p in rounds["bare"])
    node_p50 = statistics.median(p for _, p in rounds["node"])
    tool = "wrk -t1 -c10" if use_wrk else "Python aiohttp client, 2 processes x 5 connections"
    print(f"http POST /execute node.ping: {CONNECTIONS} keep-alive connections, load from {tool}")
    print(f"  median of {args.rounds} alternating rounds of {args.seconds:g}s "
          f"on {os.cpu_count()} cores")
    print(f"  {'server':34} {'req/s':>10} {'p50':>10}")
    print(f"  {'bare aiohttp handler (baseline)':34} {bare_rps:>10,.0f} {bare_p50:>8.3f}ms")
    print(f"  {'platybus http backend':34} {node_rps:>10,.0f} {node_p50:>8.3f}ms")
    print(f"  ratio {node_rps / bare_rps:.0%} of the bare handler (target >= 70%), "
          f"p50 {node_p50:.3f} ms (target <= 1.5 ms); Platypush 1.3.39: 185 req/s, p50 5.2 ms")


if __name__ == "__main__":
    main()
