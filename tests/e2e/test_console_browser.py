"""The web console in a real browser (system Chromium) against a real node process."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from console_browser import NodeProcess, launch_browser

pytestmark = pytest.mark.slow
PlaywrightTimeout = pytest.importorskip(
    "playwright.sync_api",
    reason="BROWSER TESTS SKIPPED: playwright is not installed (pip install -e '.[dev]')",
).TimeoutError

TOKEN = "browser-admin-token"
ROWS = 200

HOOKS = {
    "count-files": {"if": {"type": "file.created"},
                    "then": [{"action": "variable.increment", "args": {"name": "files"}}]},
    # Fails on purpose: its step passes a text where a number is expected.
    "breaks": {"if": {"type": "demo.break"},
               "then": [{"action": "variable.increment", "args": {"name": "n", "by": "lots"}}]},
    "picky": {"if": {"type": "demo.break", "data.level": {"$gt": 5}},
              "then": [{"action": "log.info", "args": {"message": "high"}}]},
}


def node_config(directory: Path) -> dict[str, Any]:
    return {
        "node": {"id": f"console-{uuid.uuid4().hex[:6]}", "data_dir": str(directory / "data"),
                 "stop_timeout": 5},
        "plugins": {"variable": {}},
        "discovery": {"interfaces": ["127.0.0.1"]},
        "backends": {
            "http": {"port": 0, "token": TOKEN, "console_rows": ROWS},
            "file_monitor": {"paths": [{"path": str(directory / "watched"), "create": True}]},
        },
        "hooks": HOOKS,
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright, chromium = launch_browser()
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory = tmp_path_factory.mktemp("console-node")
    process = NodeProcess(directory, node_config(directory))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


def publish(node: NodeProcess, type_: str, data: dict[str, Any] | None = None) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        conn.request("POST", "/events", body=json.dumps({"type": type_, "data": data or {}}),
                     headers={"Authorization": f"Bearer {TOKEN}",
                              "Content-Type": "application/json"})
        reply = conn.getresponse()
        body = json.loads(reply.read())
        assert reply.status == 202, body
        event_id: str = body["id"]
        return event_id
    finally:
        conn.close()


def sign_in(page: Any, node: NodeProcess) -> None:
    """Open the link ``platybus console`` prints, and wait for the live stream."""
    page.goto(f"{node.url}/#token={TOKEN}")
    page.locator("#console").wait_for(state="visible")
    assert "token=" not in page.url  # the token left the address bar
    # The stream is subscribed once an event published now shows up.
    marker = f"warm-{uuid.uuid4().hex[:6]}"
    row = page.locator(f"#event-rows .row[data-type='demo.{marker}']")
    deadline = time.monotonic() + 20
    while not row.count():
        assert time.monotonic() < deadline, "the event stream never delivered"
        publish(node, f"demo.{marker}")
        try:
            row.first.wait_for(timeout=1000)
        except PlaywrightTimeout:
            continue  # not subscribed yet: publish again


def test_sign_in_with_a_token_and_a_wrong_token_is_refused(
        page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{node.url}/")
    page.screenshot(path=tmp_path / "sign-in.png")
    page.get_by_label("Token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("refused")
    expect(page.get_by_label("Token")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=tmp_path / "sign-in-refused.png")
    assert page.evaluate("sessionStorage.getItem('platybus.token')") is None

    page.get_by_label("Token").fill(TOKEN)
    page.get_by_label("Token").press("Enter")
    expect(page.locator("#console")).to_be_visible()
    expect(page.locator("#node-name")).to_contain_text("console-")
    # Kept for this tab only, and no cookie was set.
    assert page.evaluate("sessionStorage.getItem('platybus.token')") == TOKEN
    assert page.context.cookies() == []
    page.reload()
    expect(page.locator("#console")).to_be_visible()


def test_a_created_file_shows_up_and_the_selector_filters_it(
        page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, node)
    watched = node.directory / "watched"
    name = f"seen-{uuid.uuid4().hex[:6]}.txt"
    (watched / name).write_text("hello")
    row = page.locator("#event-rows .row[data-type='file.created']", has_text=name)
    expect(row).to_be_visible(timeout=1000)
    row.locator(".row-head").click()
    expect(row.locator("pre")).to_contain_text('"relative": "' + name)
    page.screenshot(path=tmp_path / "events.png")

    # Filtered in: only file events.
    selector = page.get_by_label("Selector")
    selector.fill(f"type=file.created and data.relative={name.split('-', maxsplit=1)[0]}-*")
    selector.press("Enter")
    page.get_by_role("button", name="Clear").click()
    second = f"seen-{uuid.uuid4().hex[:6]}.txt"
    time.sleep(0.3)  # the new stream subscribes; a file made before that is not expected
    (watched / second).write_text("again")
    expect(page.locator("#event-rows .row", has_text=second).first).to_be_visible(timeout=5000)
    expect(page.locator("#event-rows .row:not([data-type='file.created'])")).to_have_count(0)

    # Filtered out: a selector for other events; a marker published after the file proves
    # the file's event would have arrived by then.
    selector.fill("type=demo.marker")
    selector.press("Enter")
    page.get_by_role("button", name="Clear").click()
    hidden = f"hidden-{uuid.uuid4().hex[:6]}.txt"
    marker_row = page.locator("#event-rows .row[data-type='demo.marker']")
    deadline = time.monotonic() + 20
    while not marker_row.count():
        assert time.monotonic() < deadline
        (watched / hidden).write_text("x")
        publish(node, "demo.marker")
        try:
            marker_row.first.wait_for(timeout=1000)
        except PlaywrightTimeout:
            continue  # the new stream was not subscribed yet
    expect(page.locator("#event-rows .row[data-type='file.created']")).to_have_count(0)

    # A bad selector: the parser's message with its position, and a caret under it.
    selector.fill("type=file.* and (")
    selector.press("Enter")
    error = page.locator("#selector-error")
    expect(error).to_contain_text("at position 17")
    expect(error.locator(".caret")).to_contain_text(" " * 17 + "^")
    expect(selector).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=tmp_path / "events-bad-selector.png")


def test_run_node_ping_from_its_form_and_a_mistyped_argument(
        page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, node)
    page.get_by_role("tab", name="Actions").click()
    page.get_by_label("Find an action").fill("node.ping")
    ping = page.locator(".action[data-name='node.ping']")
    ping.locator("summary").click()
    ping.get_by_role("button", name="Run node.ping").click()
    expect(ping.locator(".action-result")).to_contain_text('"pong": true')
    page.screenshot(path=tmp_path / "actions.png")

    page.get_by_label("Find an action").fill("variable.increment")
    increment = page.locator(".action[data-name='variable.increment']")
    increment.locator("summary").click()
    increment.get_by_label("name").fill("visits")
    increment.get_by_label("by").fill("three")
    increment.get_by_role("button", name="Run variable.increment").click()
    field = increment.locator("[data-field=by]")
    expect(field.locator(".field-error")).to_contain_text("argument 'by'")
    expect(field.locator("input")).to_have_attribute("aria-invalid", "true")
    expect(increment.locator("[data-field=name] .field-error")).to_be_empty()
    page.screenshot(path=tmp_path / "actions-field-error.png")

    increment.get_by_label("by").fill("3")
    increment.get_by_role("button", name="Run variable.increment").click()
    expect(increment.locator(".action-result")).to_have_text("3")


def test_a_failing_hook_shows_in_runs_and_explain_says_why_another_did_not_match(
        page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, node)
    publish(node, "demo.break", {"level": 1})
    page.get_by_role("tab", name="Runs").click()
    failed = page.locator(".run[data-name='breaks'][data-outcome='error']").first
    expect(failed).to_be_visible(timeout=10000)
    expect(failed.locator(".run-error")).to_contain_text("argument 'by'")
    # Failed runs come first.
    expect(page.locator("#run-list .run").first).to_have_attribute("data-outcome", "error")
    failed.locator("summary").click()
    expect(failed.locator("td.bad")).to_contain_text("ArgumentError")
    # The reasons of the event itself: picky did not match because of the level.
    reason = page.locator("#reason-list [data-hook='picky']").first
    expect(reason).to_contain_text("not matched because")
    page.screenshot(path=tmp_path / "runs.png", full_page=True)

    page.get_by_label("Event (JSON with type and data)").fill(
        '{"type": "demo.break", "data": {"level": 2}}')
    page.get_by_role("button", name="Explain").click()
    explained = page.locator("#explain-result")
    expect(explained.locator("[data-hook='breaks']")).to_contain_text("would run")
    picky = explained.locator("[data-hook='picky']")
    expect(picky).to_contain_text("would not run because")
    expect(picky).to_contain_text("level")
    page.screenshot(path=tmp_path / "runs-explain.png", full_page=True)


def test_nodes_and_data_pages(page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, node)
    page.get_by_role("tab", name="Nodes").click()
    expect(page.locator("#this-node")).to_contain_text("console-")
    expect(page.locator("pb-nodes")).to_contain_text("config hash")
    expect(page.locator("pb-nodes")).to_contain_text("published")
    page.screenshot(path=tmp_path / "nodes.png", full_page=True)

    page.get_by_role("tab", name="Data").click()
    page.get_by_label("New variable").fill("mode")
    page.get_by_label("Value (JSON, or plain text)").fill('{"away": true}')
    page.get_by_role("button", name="Set").click()
    row = page.locator("[data-variable='mode']")
    expect(row.locator("input")).to_have_value('{"away":true}')
    expect(page.locator("#outbox-rows")).to_contain_text("The outbox is empty")
    page.screenshot(path=tmp_path / "data.png", full_page=True)
    row.get_by_role("button", name="Delete mode").click()
    expect(row).to_have_count(0)


def test_keyboard_moves_between_pages_and_a_narrow_window_reads(
        page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, node)
    page.get_by_role("tab", name="Events").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Runs")).to_be_focused()
    expect(page.get_by_role("tab", name="Runs")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Data")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Home")
    expect(page.locator("#page-events")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 800})
    # Nothing wider than the window: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=tmp_path / "narrow.png")


FLOOD_RATE = 1000      # events per second
FLOOD_SECONDS = 10.0   # for this long, and no more than rate x seconds events


def flood(url: str, sent: list[int], stop: threading.Event) -> None:
    """Publish ``FLOOD_RATE`` events a second over one websocket, bounded in count and time."""
    async def run() -> None:
        total = int(FLOOD_RATE * FLOOD_SECONDS)
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{url}/ws?filter=type=nothing.at.all",
                headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            started = time.monotonic()
            while sent[0] < total and not stop.is_set():
                due = int((time.monotonic() - started) * FLOOD_RATE)
                if time.monotonic() - started > FLOOD_SECONDS * 3:
                    break  # a loaded machine: stop at three times the planned time
                for _ in range(min(due, total) - sent[0]):
                    await ws.send_str(json.dumps({"kind": "event", "type": "flood.tick",
                                                  "data": {"n": sent[0]}}))
                    sent[0] += 1
                await asyncio.sleep(0.01)

    asyncio.run(run())


@pytest.mark.timeout(120)
def test_a_thousand_events_a_second_keep_the_page_responsive_and_rows_capped(
        page: Any, node: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Long tasks (over 50 ms on the main thread) and how long clicks waited to be handled.
    page.add_init_script("""
        window.__longTasks = [];
        new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
        }).observe({type: 'longtask', buffered: true});
        window.__clickDelays = [];
        addEventListener('click',
            (e) => window.__clickDelays.push(performance.now() - e.timeStamp), true);
    """)
    sign_in(page, node)
    sent = [0]
    stop = threading.Event()
    publisher = threading.Thread(target=flood, args=(node.url, sent, stop), name="flood")
    publisher.start()
    pause = page.get_by_role("button", name="Pause")
    clicks = 0
    try:
        while publisher.is_alive():
            # The page still handles a click in the middle of the flood.
            page.locator("#pause").click()
            expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
            page.locator("#pause").click()
            expect(page.locator("#pause")).to_have_attribute("aria-pressed", "false")
            clicks += 2
            assert page.locator("#event-rows > .row").count() <= ROWS
            publisher.join(1.0)
    finally:
        stop.set()
        publisher.join()
    expect(pause).to_have_attribute("aria-pressed", "false")
    # Everything sent has been received (or the row cap would hide a stalled stream).
    status = page.locator("#event-status")
    expect(status).to_contain_text(f"{ROWS} shown", timeout=20000)
    rows = page.locator("#event-rows > .row")
    assert rows.count() == ROWS
    received = int(page.evaluate(
        "Number(/(\\d+) received/.exec(document.getElementById('event-status').textContent)[1])"))
    long_tasks = page.evaluate("window.__longTasks")
    delays = page.evaluate("window.__clickDelays")
    report = {"sent": sent[0], "received": received, "rows": rows.count(), "clicks": clicks,
              "long_tasks": len(long_tasks), "long_task_ms_total": round(sum(long_tasks), 1),
              "long_task_ms_max": round(max(long_tasks, default=0), 1),
              "click_delay_ms_max": round(max(delays, default=0), 1)}
    (tmp_path / "flood.json").write_text(json.dumps(report, indent=2))
    print("console under 1,000 events/s:", report)
    page.screenshot(path=tmp_path / "events-flood.png")
    assert sent[0] > 0
    assert clicks >= 2
