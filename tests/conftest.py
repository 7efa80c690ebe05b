"""Shared fixtures: a fresh home per test (KRX_HOME points at it), and the calendar."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import calendar
from common.home import Home, init_home

# A small market and a short strategy keep a real day (sample ingest, scan, alert, request) to a few seconds.
SMALL_DAY = {
    "KRX__APP__SAMPLE__TICKERS": "40",
    "KRX__APP__SAMPLE__FIRST_DATE": "2024-01-02",
    "KRX__APP__INGEST__HISTORY_DAYS": "60",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__LOOKBACKS": "[5, 10]",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__WEIGHTS": "[0.5, 0.5]",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__REGIME__SMA_DAYS": "10",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__SELL_RULES__TREND_SMA_DAYS": "10",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__FILTERS__MIN_AVG_VALUE": "0",
}

REPO = Path(__file__).resolve().parent.parent
# the event log's key lives outside every home (common/anchor.py); for the tests, in a temporary folder rather
# than the user's ~/.config (subprocesses inherit it)
os.environ["KRX_EVENT_LOG_KEY_FILE"] = str(Path(tempfile.mkdtemp(prefix="krx-key-")) / "event_log.key")
os.environ.pop("KRX_EVENT_LOG_KEY", None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    h, _ = init_home(tmp_path / "home")
    monkeypatch.setenv("KRX_HOME", str(h.root))
    for var in list(os.environ):
        if var.startswith("KRX__") or var.startswith("SLACK_") or var in ("KRX_ID", "KRX_PW"):
            monkeypatch.delenv(var)
    return h


@pytest.fixture(scope="session")
def cal() -> calendar.TradingCalendar:
    return calendar.TradingCalendar(calendar.config.load("app", Home(REPO))["calendar"]["extra_closures"])


def krx(*args: str, home: Home, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `krx` CLI in a subprocess against `home`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    full_env.update({"KRX_HOME": str(home.root), **(env or {})})
    return subprocess.run([sys.executable, "-m", "faces.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=home.root, timeout=timeout)


@pytest.fixture()
def server():
    """A local Slack stand-in on 127.0.0.1 (tests/slack_server.py) the real slack-sdk client talks to."""
    from slack_server import SlackServer

    srv = SlackServer()
    yield srv
    srv.close()


@contextlib.contextmanager
def rotating(path: Path, mtime: float, tmp_dir: Path | None = None) -> Iterator[None]:
    """While the block runs, replace `path` over and over with other bytes of the same size and the same old
    mtime, as a log rotator would: whatever read it a moment ago no longer matches what is on disk."""
    stop = threading.Event()

    def rotate() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            tmp = (tmp_dir or path.parent) / f".{path.name}.{n}.tmp"
            tmp.write_bytes(f"{n:020d}".encode() * 100_000)
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, path)

    writer = threading.Thread(target=rotate, daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join(10)


@pytest.fixture
def in_process_cli() -> Iterator[None]:
    """For tests that call faces.cli.main in-process (so `responses` answers the network): its setup_logging takes
    the project's root logger over; give it back afterwards, so later tests' caplog sees records again."""
    from common import log

    root = logging.getLogger(log.ROOT)
    yield
    for handler in list(root.handlers):
        if handler not in log.error_sinks():
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.NOTSET)
    root.propagate = True
