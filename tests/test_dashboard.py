"""The dashboard at `/` in a real browser (Playwright driving Debian's chromium) against a real `krx serve` on a free
loopback port, on a temporary home; the CLI checks what the page did, and the page shows what the CLI did.

Without chromium these tests skip with the reason, except under CI (CI set): there a missing browser fails them,
so a green CI run always drove a browser. `make test` installs chromium first (scripts/ensure_tools.sh --browser).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import krx
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from trading_servers import ProcessServer, free_port

from common import locks, operators, switches
from common.home import Home
from nas.trading import db

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 120_000  # how long a page may take to answer on a busy machine: a readiness wait, not an assertion


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    why = ("chromium is not installed (Debian: apt-get install chromium; `make test` installs it when it runs as "
           "root or with password-less sudo)")
    if os.environ.get("CI"):  # CI must drive a browser: a skip there would hide a missing install step
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright's browser: Debian's chromium (Playwright's own download is not reachable here)."""
    return {**browser_type_launch_args, "executable_path": chromium(), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """This module's, not the plugin's session-wide one: while it runs, Playwright's sync API keeps an asyncio loop
    running in the main thread, and a later module's asyncio.run (the API's load test) would fail."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright, browser_type_launch_args: dict) -> Iterator[Browser]:
    launched = playwright.chromium.launch(**browser_type_launch_args)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict:
    """The plugin's asks for its session-wide Playwright (devices); the page needs no device emulation."""
    return {"viewport": {"width": 1280, "height": 1000}}


@pytest.fixture
def served(home: Home) -> Iterator[ProcessServer]:
    db.init_db(home)
    port = free_port()
    # these tests post more forms in a second than a person does in a minute: a roomier POST bucket (the limit
    # itself is tested in test_ops_api_guard.py)
    srv = ProcessServer(["serve", "--port", str(port)], port,
                        {"KRX_HOME": str(home.root), "KRX__APP__API__POST_BURST": "1000"})
    yield srv
    srv.close()


def sign_in(url: str, token: str) -> tuple[httpx.Client, str]:
    """An httpx client holding a session cookie, and the CSRF token the page's forms carry."""
    client = httpx.Client(base_url=url, timeout=60)
    answer = client.post("/login", data={"token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    return client, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_sign_in_stop_run_and_the_cli_agrees(served: ProcessServer, home: Home, page: Page, tmp_path: Path) -> None:
    _op, token = operators.add(home, "alice")
    page.set_default_timeout(WAIT_MS)
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/login")
    page.fill("#token", "not-a-token")
    page.click("#sign-in")
    expect(page.locator("#error")).to_contain_text("UNKNOWN_OPERATOR")

    page.fill("#token", token)
    page.click("#sign-in")
    expect(page.locator("#operator")).to_have_text("alice")
    expect(page.locator("#estop-state")).to_have_text("off (running)")
    expect(page.locator("#gate-effective")).to_have_text("DRY_RUN")
    expect(page.locator("#sender-state")).to_have_text("OFF")
    expect(page.locator("#event-log-state")).to_have_text("intact")
    expect(page.locator("#queue-pending")).to_have_text("0")
    cookie = next(c for c in page.context.cookies() if c["name"] == "krx_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    # a change without a reason is refused by the core and changes nothing (the browser's own check bypassed)
    page.locator("#estop-reason").evaluate("e => e.removeAttribute('required')")
    page.click("#estop-on")
    expect(page.locator("#error")).to_contain_text("reason is required")
    assert not switches.emergency_stop(home).on

    page.fill("#estop-reason", "broker maintenance <b>tonight</b>")
    page.click("#estop-on")
    expect(page.locator("#estop-state")).to_have_text("STOPPED")
    expect(page.locator("#estop")).to_contain_text("broker maintenance <b>tonight</b>")  # escaped, shown as text
    shot = tmp_path / "dashboard-stopped.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cli = krx("ops", "estop", home=home)
    assert cli.returncode == 0, cli.stderr
    assert "emergency_stop: ON" in cli.stdout and "set by: alice" in cli.stdout
    assert "reason: broker maintenance <b>tonight</b>" in cli.stdout

    page.click("#cycle-run")  # stopped: the cycle runs its preflight and is blocked, as `krx ops cycle` would be
    expect(page.locator("#cycle-result")).to_contain_text("BLOCKED")
    expect(page.locator("#cycle-steps")).to_contain_text("emergency_stop")
    receipt = json.loads((home.reports / "ops/daily/ops_report_latest.json").read_text(encoding="utf-8"))
    assert (receipt["result"], receipt["reason"]) == ("BLOCKED", "STOPPED")
    page.click("#cycle a")  # the receipt, through the API's resolver
    assert json.loads(page.inner_text("body"))["run_id"] == receipt["run_id"]
    page.go_back()

    page.fill("#sender-reason", "weekly live fire prep")
    page.select_option("select[name=channel]", "SLACK")
    page.click("#sender-on")
    expect(page.locator("#sender-state")).to_have_text("ON (SLACK)")
    cli = krx("ops", "sender", home=home)
    assert "sender: ON" in cli.stdout and "channel: SLACK" in cli.stdout

    # the reverse: what the CLI changes, the page shows
    cli = krx("ops", "estop", "off", "--reason", "maintenance over", home=home, env={operators.TOKEN_ENV: token})
    assert cli.returncode == 0, cli.stdout
    page.goto(served.url + "/")
    expect(page.locator("#estop-state")).to_have_text("off (running)")
    expect(page.locator("#estop")).to_contain_text("maintenance over")

    page.click("#sign-out")
    expect(page).to_have_url(served.url + "/login")
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/login")


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(served: ProcessServer, home: Home) -> None:
    _op, alice = operators.add(home, "alice")
    _op, bob = operators.add(home, "bob")
    client, csrf = sign_in(served.url, alice)
    _other, bobs_csrf = sign_in(served.url, bob)
    shown = client.get("/")  # and the page may not be framed by another site (a stolen click on its buttons)
    assert shown.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
    form = {"state": "on", "reason": "forged"}
    for extra in ({}, {"csrf": ""}, {"csrf": csrf[:-2] + "xx"}, {"csrf": bobs_csrf}):
        answer = client.post("/dashboard/emergency_stop", data={**form, **extra})
        assert answer.status_code == 403 and answer.json()["code"] == "CSRF_INVALID", extra
    assert client.post("/dashboard/cycle", data={}).status_code == 403
    for body in (b"reason=" + b"x" * 20_000, "&".join(f"f{i}=1" for i in range(30)).encode()):  # bounded forms
        answer = client.post("/dashboard/emergency_stop", content=body + f"&state=on&csrf={csrf}".encode(),
                             headers={"content-type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 422 and answer.json()["code"] == "BAD_REQUEST"
    assert client.post("/logout", data={}).status_code == 403
    nobody = httpx.post(f"{served.url}/dashboard/emergency_stop", data={**form, "csrf": csrf}, timeout=60)
    assert nobody.status_code == 401 and nobody.json()["code"] == "SESSION_REQUIRED"
    assert not switches.emergency_stop(home).on
    assert "emergency_stop: OFF" in krx("ops", "estop", home=home).stdout
    assert not (home.reports / "ops/daily/ops_report_latest.json").exists()  # no cycle ran either

    answer = client.post("/dashboard/emergency_stop", data={**form, "csrf": csrf})
    assert answer.status_code == 303 and switches.emergency_stop(home).by == "alice"


def test_a_removed_operators_session_stops_at_once(served: ProcessServer, home: Home) -> None:
    _op, token = operators.add(home, "bob")
    client, csrf = sign_in(served.url, token)
    out = krx("ops", "operator", "remove", "bob", home=home)
    assert out.returncode == 0, out.stdout
    page = client.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    answer = client.post("/dashboard/sender", data={"state": "on", "reason": "x", "csrf": csrf})
    assert answer.status_code == 401 and not switches.sender(home).on


def test_signing_out_ends_a_copied_cookie_too(served: ProcessServer, home: Home) -> None:
    _op, token = operators.add(home, "carol")
    client, csrf = sign_in(served.url, token)
    copy = httpx.Client(base_url=served.url, cookies=dict(client.cookies), timeout=60)
    assert copy.get("/").status_code == 200
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert copy.get("/").headers.get("location") == "/login"
    assert copy.post("/dashboard/emergency_stop", data={"state": "on", "reason": "x", "csrf": csrf}).status_code == 401
    assert not switches.emergency_stop(home).on


def test_a_cycle_already_running_is_refused_on_the_page(served: ProcessServer, home: Home) -> None:
    _op, token = operators.add(home, "dave")
    client, csrf = sign_in(served.url, token)
    with locks.job_lock(home, "daily"):
        answer = client.post("/dashboard/cycle", data={"csrf": csrf})
    assert answer.status_code == 409 and "CYCLE_RUNNING" in answer.text
    assert not (home.reports / "ops/daily/ops_report_latest.json").exists()


def test_without_chromium_the_browser_tests_skip_but_fail_under_ci(tmp_path: Path) -> None:
    """The skip is impossible under CI: there a missing browser is a failing test, not a quiet green run."""
    import subprocess
    import sys

    no_browser = tmp_path / "bin"  # a PATH on which no chromium is found (the tests start python by its full path)
    no_browser.mkdir()
    target = f"{Path(__file__).resolve()}::test_sign_in_stop_run_and_the_cli_agrees"
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "PATH")}
    runs = {ci: subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", target],
                               env={**base, "PATH": str(no_browser), **({"CI": "true"} if ci else {})},
                               cwd=tmp_path, capture_output=True, text=True, timeout=300) for ci in (False, True)}
    assert runs[False].returncode == 0 and "1 skipped" in runs[False].stdout, runs[False].stdout[-2000:]
    assert "chromium is not installed" in runs[False].stdout
    failed = runs[True]
    assert failed.returncode != 0 and "CI: chromium is not installed" in failed.stdout, failed.stdout[-2000:]


def test_a_viewer_sees_the_page_but_cannot_change_anything(served: ProcessServer, home: Home) -> None:
    _op, token = operators.add(home, "wall", role=operators.VIEWER)
    client, csrf = sign_in(served.url, token)
    page = client.get("/")
    assert "viewer: read only" in page.text and 'id="estop-on" disabled' in page.text
    answer = client.post("/dashboard/emergency_stop", data={"state": "on", "reason": "x", "csrf": csrf})
    assert answer.status_code == 403 and answer.json()["code"] == "ACTION_NOT_ALLOWED"
    assert not switches.emergency_stop(home).on
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303


def test_served_remotely_the_page_needs_a_sign_in_and_the_api_still_its_token(home: Home) -> None:
    """`api.allow_remote`: a browser signs in once with its token; the cookie opens the page and the resolver's
    links, never an API change (those still need the Bearer token)."""
    from trading_servers import ThreadServer

    from faces.cli.serve import create_app

    db.init_db(home)
    srv = ThreadServer(create_app(home, db.load_config(home), remote=True))
    try:
        _op, token = operators.add(home, "erin")
        anonymous = httpx.Client(base_url=srv.url, timeout=60)
        assert anonymous.get("/api/status").status_code == 401
        assert anonymous.get("/").headers["location"] == "/login" and anonymous.get("/login").status_code == 200
        client, csrf = sign_in(srv.url, token)
        assert client.get("/api/status").json()["emergency_stop"]["enabled"] is False
        api_change = client.post("/api/emergency_stop", json={"enabled": True, "reason": "via the cookie"})
        assert api_change.status_code == 401 and not switches.emergency_stop(home).on
        form = client.post("/dashboard/emergency_stop", data={"state": "on", "reason": "page", "csrf": csrf})
        assert form.status_code == 303 and switches.emergency_stop(home).on
    finally:
        srv.close()


def test_the_page_shows_a_real_day_window_keys_alert_and_backtest(served: ProcessServer, home: Home) -> None:
    env = {"KRX__APP__SAMPLE__TICKERS": "30"}
    for step in (("ingest", "--start", "2025-01-02", "--end", "2025-11-28", "--tickers", "30"),
                 ("scan", "--date", "2025-11-28", "--apply"), ("alert", "--date", "2025-11-28"),
                 ("backtest", "--strategy", "momentum_topN_v1", "--start", "2025-06-02", "--end", "2025-11-28",
                  "--out", "reports/done/bt-page")):
        out = krx(*step, home=home, env=env)
        assert out.returncode == 0, (step, out.stderr[-2000:])
    from common import window

    _op, alice = operators.add(home, "alice")
    operators.add(home, "bob")
    view = window.request(home, 30, "weekly live fire", "alice")
    window.approve(home, view["approval"]["id"], 1, "alice")
    window.approve(home, view["approval"]["id"], 2, "bob")
    switches.set_gate(home, switches.REAL_ENABLED, "live fire", operator="alice")

    client, _csrf = sign_in(served.url, alice)
    page = client.get("/").text
    text = {k: re.search(rf'id="{k}"[^>]*>(.*?)</', page, re.S).group(1).strip()
            for k in ("gate-effective", "window-state", "window-ttl", "approval-key-1", "approval-key-2",
                      "queue-done")}
    assert text["gate-effective"] == "REAL_ENABLED" and text["window-state"] == "ACTIVE"
    assert re.fullmatch(r"\d\dm \d\ds", text["window-ttl"]), text
    assert "alice" in re.search(r'id="approval-key-1".*?</dd>', page, re.S).group(0)
    assert "bob" in re.search(r'id="approval-key-2".*?</dd>', page, re.S).group(0)
    assert text["queue-done"] == "1"
    alert = re.search(r'<section id="alert">.*?</section>', page, re.S).group(0)
    assert "2025-11-28" in alert and "reports/outbox/20251128.json" in alert
    assert "EOD store&#39;s last day: 2025-11-28" in page or "EOD store's last day: 2025-11-28" in page
    report = re.search(r'href="(/api/backtests/bt-page/report.html)"', page).group(1)
    answer = client.get(report)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    result = re.search(r'href="(/api/ops/resolve\?ref=[^"]*bt-page[^"]*result.json)"', page).group(1)
    assert client.get(result.replace("&amp;", "&")).json()["status"]


def test_damaged_state_reads_stopped_and_says_so(served: ProcessServer, home: Home) -> None:
    _op, token = operators.add(home, "alice")
    client, _csrf = sign_in(served.url, token)
    (home.state / switches.ESTOP_FILE).write_text("{not json", encoding="utf-8")
    receipt = home.reports / "ops/daily/ops_report_latest.json"
    receipt.parent.mkdir(parents=True, exist_ok=True)
    receipt.write_text("[1, 2", encoding="utf-8")
    log = home.state / "events.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    edited = lines[0].replace('"operator_added"', '"operator_gone"')
    assert edited != lines[0]
    lines[0] = edited
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page = client.get("/")
    assert page.status_code == 200
    estop = re.search(r'<section id="estop">.*?</section>', page.text, re.S).group(0)
    assert "STOPPED" in estop and "unreadable" in estop  # fail closed, and why
    assert re.search(r'id="event-log-state">TAMPERED<', page.text)
    assert "unreadable" in re.search(r'<section id="cycle".*?</section>', page.text, re.S).group(0)
