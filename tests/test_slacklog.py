"""The Slack ERROR log: non-blocking, loop-free, rate-limit aware, folding, redacting, flushed at exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_server import SlackServer, unused_port

from common import log as krxlog
from common import slack
from common.home import Home, init_home
from common.slacklog import SlackErrorHandler
from faces.cli import attach_error_log

TOKEN = "xoxb-1111111111-2222222222222-TESTtokenSECRETvalue"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_leftover_sinks() -> Iterator[None]:
    yield
    for h in krxlog.error_sinks():
        h.close()


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, server: SlackServer, tmp_path: Path) -> SlackServer:
    home, _ = init_home(tmp_path / "home")
    monkeypatch.setenv("KRX_HOME", str(home.root))
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("SLACK_API_URL", server.api_url)
    return server


def _handler(**kw) -> SlackErrorHandler:
    sender = slack.sender("#invest_ops", timeout_s=3, rate_limit_retries=1)
    assert sender is not None
    h = SlackErrorHandler(lambda text: sender.post(text=text), job="test", **kw)
    krxlog.add_error_sink(h)
    return h


def _wait(pred, timeout: float = 30.0) -> bool:  # a deadline: a passing test returns at once
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_error_records_go_to_the_channel_redacted(env: SlackServer) -> None:
    h = _handler()
    lg = krxlog.get("scan")
    lg.info("fine")
    lg.warning("a warning")
    krxlog.event(lg, "SCAN_FAILED", f"bad data; token was {TOKEN}", rc=3, level=logging.ERROR)
    assert _wait(lambda: len(env.delivered) == 1)
    h.close()
    [req] = env.requests
    assert req.body["channel"] == "#invest_ops"
    text = req.body["text"]
    assert "[ERROR] [SCAN_FAILED] rc=3 details=bad data; token was ***" in text and "test@" in text
    assert TOKEN not in str(req.body)
    assert h.stats()["sent"] == 1


def test_repeats_within_a_minute_fold_into_one_message_with_a_count(env: SlackServer) -> None:
    h = _handler()
    lg = krxlog.get("ingest")
    for _ in range(5):
        lg.error("source timed out")
    lg.error("another problem")
    assert _wait(lambda: len(env.delivered) == 2)
    time.sleep(0.2)
    assert len(env.delivered) == 2  # the 4 repeats wait for the window (60 s) or the exit
    h.close()
    texts = [r.body["text"] for r in env.delivered]
    assert len(texts) == 3
    assert "source timed out" in texts[0] and "repeated" not in texts[0]
    assert "another problem" in texts[1]
    assert "repeated 4 more times within 60s" in texts[2] and "source timed out" in texts[2]
    assert h.stats()["folded"] == 4


def test_fold_window_expiry_sends_the_count_without_exit(env: SlackServer) -> None:
    h = _handler(fold_window_s=0.3)
    lg = krxlog.get("ingest")
    lg.error("flaky")
    lg.error("flaky")
    assert _wait(lambda: len(env.delivered) == 2)
    assert "repeated 1 more time within 0.3s" in env.delivered[1].body["text"]
    lg.error("flaky")  # a new window: sent at once
    assert _wait(lambda: len(env.delivered) == 3)
    h.close()


def test_full_queue_drops_and_counts_without_blocking() -> None:
    release = threading.Event()
    posted: list[str] = []

    def slow_post(text: str) -> None:
        release.wait(10)
        posted.append(text)

    h = SlackErrorHandler(slow_post, queue_size=3)
    krxlog.add_error_sink(h)
    lg = krxlog.get("scan")
    for i in range(200):
        lg.error("distinct error %d", i)
    # the job never waits for Slack: all 200 records were handled while the one post in flight is still stuck
    assert not release.is_set() and posted == []
    stats = h.stats()
    assert stats["dropped"] >= 196 and stats["queued"] <= 3
    release.set()
    h.close(timeout_s=5)
    assert 1 <= len(posted) <= 4 and h.stats()["dropped"] + len(posted) == 200


@pytest.mark.parametrize("mode", ["http500", "unreachable"])
def test_failing_slack_never_loops_and_never_blocks(env: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                                    mode: str) -> None:
    if mode == "http500":
        env.script = [(500, {}, "boom")] * 50
    else:
        monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{unused_port()}/api/")
    answer, gate = env._answer, threading.Event()

    def held_answer(path: str, body: dict):  # the server answers only once the test lets it
        gate.wait(10)
        return answer(path, body)

    monkeypatch.setattr(env, "_answer", held_answer)
    h = _handler()
    krxlog.get("alert").error("send failed")
    if mode == "http500":  # error() returned while Slack has not answered yet: the job never waits
        assert h.stats()["failed"] == 0 and h.stats()["sent"] == 0
    gate.set()
    assert _wait(lambda: h.stats()["failed"] == 1)
    time.sleep(0.5)  # give a loop the chance to show itself
    h.close()
    assert h.stats() == {"sent": 0, "failed": 1, "dropped": 0, "folded": 0, "suppressed": 0, "queued": 0}
    if mode == "http500":
        assert len(env.requests) == 2  # one record, one retry chain (slack-sdk's single 500 retry)


def test_rate_limit_retry_after_then_one_message(env: SlackServer) -> None:
    env.script = [(429, {"Retry-After": "1"}, '{"ok": false, "error": "ratelimited"}')]
    h = _handler()
    krxlog.get("worker").error("job failed")
    assert _wait(lambda: h.stats()["sent"] == 1)
    h.close()
    assert [r.status for r in env.requests] == [429, 200] and len(env.delivered) == 1


def test_own_and_http_stack_records_are_filtered(env: SlackServer) -> None:
    h = _handler()
    for name in ("krx.slacklog", "krx.slack", "slack_sdk.web.base_client", "urllib3.connectionpool"):
        logging.getLogger(name).error("would loop")
    krxlog.get("scan").error("a real error")  # queued after them: once it is out, they would have been too
    assert _wait(lambda: h.stats()["sent"] == 1)
    h.close()
    assert [r.body["text"] for r in env.requests if "would loop" in r.body["text"]] == []
    assert len(env.requests) == 1 and "a real error" in env.requests[0].body["text"] and h.stats()["sent"] == 1


def test_attached_only_when_configured(env: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX__NOTIFY__ERROR_LOG_TO_SLACK", "false")
    home = Home.from_env()
    attach_error_log(home, "scan")
    assert krxlog.error_sinks() == []
    monkeypatch.delenv("KRX__NOTIFY__ERROR_LOG_TO_SLACK")
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    attach_error_log(home, "scan")
    assert krxlog.error_sinks() == []
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("KRX__NOTIFY__DELIVERY_POLICY", "CONSOLE_ONLY")  # independent of the alert policy
    attach_error_log(home, "scan")
    first = krxlog.error_sinks()[0]
    attach_error_log(home, "alert")
    assert isinstance(first, SlackErrorHandler) and first.job == "alert"
    assert krxlog.error_sinks() == [first]
    first.close()
    assert krxlog.error_sinks() == []


_JOB = """
import sys
from common import log
from common.home import Home
from faces.cli import attach_error_log
log.setup_logging("demo", Home.from_env())
attach_error_log(Home.from_env(), "demo")
lg = log.get("demo")
lg.info("working")
lg.error("disk full on %s", "/volume1")
lg.error("disk full on %s", "/volume1")
print("job output")
sys.exit(3)
"""


def _run_job(home: Path, api_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KRX")) or k == "KRX_EVENT_LOG_KEY_FILE"}
    env.update(KRX_HOME=str(home), SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=api_url)
    return subprocess.run([sys.executable, "-c", _JOB], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=30)


def test_a_job_process_flushes_at_exit_and_a_dead_slack_changes_nothing(env: SlackServer, tmp_path: Path) -> None:
    home = Path(os.environ["KRX_HOME"])
    ok = _run_job(home, env.api_url)
    texts = [r.body["text"] for r in env.delivered]
    assert len(texts) == 2 and "disk full on /volume1" in texts[0] and "repeated 1 more time" in texts[1]
    assert all(r.body["channel"] == "#invest_ops" for r in env.delivered)

    dead = _run_job(home, f"http://127.0.0.1:{unused_port()}/api/")  # the exit flush gives up, the job ends
    env.script = [(500, {}, "boom")] * 10
    before = len(env.requests)
    failing = _run_job(home, env.api_url)
    assert len(env.requests) - before <= 4  # two distinct messages, each one retry chain at most
    for run in (ok, dead, failing):
        assert run.returncode == 3 and run.stdout == "job output\n"
        assert [ln.split("] ", 1)[1] for ln in run.stderr.splitlines()] == \
            [ln.split("] ", 1)[1] for ln in ok.stderr.splitlines()]
        assert TOKEN not in run.stdout + run.stderr
    logs = "".join(p.read_text() for p in (home / "logs").glob("*.log"))
    assert "disk full" in logs and TOKEN not in logs


def test_the_emergency_stop_silences_the_error_log(env: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from common import switches
    from common.home import Home

    home = Home.from_env()
    switches.set_emergency_stop(home, True, "test: nothing leaves the machine")
    attach_error_log(home, "scan")
    handler = krxlog.error_sinks()[0]
    logging.getLogger("krx.scan").error("disk on fire")
    assert _wait(lambda: handler.stats()["suppressed"] == 1)
    (home.state / "emergency_stop.json").write_text("{garbage")  # unreadable: stopped, still silent
    logging.getLogger("krx.scan").error("still on fire")
    assert _wait(lambda: handler.stats()["suppressed"] == 2)
    switches.set_emergency_stop(home, False, "test: resume")
    logging.getLogger("krx.scan").error("a third thing")
    assert _wait(lambda: handler.stats()["sent"] == 1)
    assert [r.body.get("text", "") for r in env.requests if "third" in str(r.body)] and len(env.requests) == 1
