"""Take docs/images/console.png: a demo node in a temporary folder, seen in Chromium.

Run from the repository: ``.venv/bin/python docs/images/make_console_png.py``
(needs the dev extra, for Playwright, and Debian's ``chromium``). Nothing is
downloaded; the node listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent / "console.png"
TOKEN = secrets.token_urlsafe(16)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def demo_config(folder: Path) -> dict[str, object]:
    """A node like the README's, with a hook that fails, so every page has something."""
    return {
        "node": {"id": "living-room", "data_dir": str(folder / "data")},
        "plugins": {"variable": {}},
        "discovery": {"interfaces": ["127.0.0.1"]},
        "backends": {"http": {"port": 0, "token": TOKEN},
                     "file_monitor": {"paths": [{"path": str(folder / "watched"),
                                                 "create": True}]}},
        "hooks": {
            "count-files": {"if": {"type": "file.created"},
                            "then": [{"action": "variable.increment",
                                      "args": {"name": "files_created"}}]},
            "lights-on": {"if": {"type": "motion.detected", "data.room": "hall"},
                          "then": [{"action": "variable.set",
                                    "args": {"name": "hall_light", "value": "on"}}]},
        },
    }


def publish(port: int, type_: str, data: dict[str, object]) -> None:
    """POST one event to the node."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/events", body=json.dumps({"type": type_, "data": data}),
                 headers={"Authorization": f"Bearer {TOKEN}",
                          "Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()


def main() -> int:
    """Start the demo node, fill it with a few events, take the screenshot."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(demo_config(folder)), encoding="utf-8")
        log_path = folder / "node.log"
        with open(log_path, "wb") as log:
            # This interpreter running platybus on a config written just above.
            node = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "platybus", "run", "-c", str(config)],
                cwd=folder, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while " ready in " not in (text := log_path.read_text(errors="replace")):
                if node.poll() is not None or time.monotonic() > deadline:
                    print(text, file=sys.stderr)
                    return 1
                time.sleep(0.05)
            found = re.search(r"http API on http://127\.0\.0\.1:(\d+)/", text)
            assert found, text
            port = int(found.group(1))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=ARGS)
                page = browser.new_page(viewport={"width": 1200, "height": 720},
                                        color_scheme="light")
                page.goto(f"http://127.0.0.1:{port}/#token={TOKEN}")
                page.locator("#console").wait_for()
                time.sleep(0.5)
                for name in ("holiday.jpg", "notes.txt", "invoice.pdf"):
                    (folder / "watched" / name).write_text("demo")
                    time.sleep(0.15)
                publish(port, "motion.detected", {"room": "kitchen", "level": 3})
                publish(port, "motion.detected", {"room": "hall", "level": 7})
                publish(port, "garden.watered", {"zone": "roses", "litres": 12.5})
                page.locator("#event-rows .row[data-type='garden.watered']").wait_for()
                motion = page.locator("#event-rows .row[data-type='motion.detected']")
                motion.locator(".row-head").first.click()
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=15)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
