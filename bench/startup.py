"""Start-up time of ``platybus run`` to ready, and idle memory of the default config.

Baseline: ``python -c pass`` started the same way in the same run.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("platybus", "backends", "plugins", "notifiers")


def python_pass() -> float:
    """Seconds to start and finish ``python -c pass``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def health_url(config: Path) -> str | None:
    """The /health URL of the config's HTTP backend, if it has one."""
    import yaml

    data = yaml.safe_load(config.read_text()) or {}
    http = (data.get("backends") or {}).get("http")
    if http is None:
        return None
    host = (http or {}).get("host", "127.0.0.1")
    port = (http or {}).get("port", 8008)
    return f"http://{host}:{port}/health"


def start_node(config: Path, cwd: Path) -> tuple[float, int]:
    """Start a node; return seconds until ready and its RSS in kB after 2 s idle."""
    url = health_url(config)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "platybus", "run", "-c", str(config)],
        cwd=cwd, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        if url is None:
            while " ready in " not in process.stderr.readline():
                if process.poll() is not None:
                    raise RuntimeError("node exited before it was ready")
        else:
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    if process.poll() is not None:
                        raise RuntimeError("node exited before it was ready") from None
                    time.sleep(0.005)
        ready = time.perf_counter() - started
        time.sleep(2.0)
        rss = 0
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return ready, rss
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        if process.stderr is not None:
            process.stderr.close()


def main(argv: list[str] | None = None) -> None:
    """Measure start-up to ready and idle RSS of the default config."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-c", "--config", default=str(ROOT / "config.yaml"))
    args = parser.parse_args(argv)
    # As a regular install does (pip compiles what it installs), so that the figure is not
    # the compiler's: this machine may run Python with PYTHONDONTWRITEBYTECODE set.
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1)
    baseline = statistics.median(python_pass() for _ in range(args.runs))
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        shutil.copy(args.config, workdir / "config.yaml")
        readies, rsses = [], []
        for _ in range(args.runs):
            ready, rss = start_node(workdir / "config.yaml", workdir)
            readies.append(ready)
            rsses.append(rss)
    print(f"start-up: platybus run -> ready (default config, median of {args.runs}, "
          f"bytecode compiled, pid {os.getpid()})")
    print(f"  python -c pass                {baseline:8.3f} s   (baseline)")
    print(f"  platybus run -> ready         {statistics.median(readies):8.3f} s   "
          f"(target <= 0.5 s)")
    print(f"  idle RSS after 2 s            {statistics.median(rsses) / 1024:8.1f} MB  "
          f"(target <= 45 MB)")


if __name__ == "__main__":
    main()
