"""common.slack against a local HTTP server: real slack-sdk clients, Slack's size limits, retries, redaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from slack_server import SlackServer, unused_port

from common import slack

TOKEN = "xoxb-1111111111-2222222222222-TESTtokenSECRETvalue"


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, server: SlackServer) -> SlackServer:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("SLACK_API_URL", server.api_url)
    return server


@pytest.fixture()
def all_logs() -> Iterator[list[str]]:
    """Every log record of the process, at every level, formatted (slack_sdk, urllib3, ours)."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    cap = Capture(level=logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("slack_sdk.krx"), logging.getLogger("krx")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(cap)
    logging.getLogger().setLevel(logging.DEBUG)
    yield lines
    for lg, level in saved:
        lg.removeHandler(cap)
        lg.setLevel(level)


def _rows_blocks(n: int, width: int = 60) -> list[dict]:
    lines = "\n".join(f"• row {i:04d} " + "x" * width for i in range(n))
    return [slack.header("big"), slack.section(lines)] + [slack.section(f"block {i}") for i in range(70)]


def test_split_under_slack_limits() -> None:
    messages = slack.build_messages(_rows_blocks(400), "fallback")
    assert len(messages) >= 2
    for m in messages:
        assert 1 <= len(m.blocks) <= slack.MAX_BLOCKS
        assert len(m.text) <= 40_000
        for b in m.blocks:
            if b["type"] == "section":
                assert len(b["text"]["text"]) <= slack.MAX_SECTION_TEXT
    texts = "\n".join(b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section")
    assert all(f"row {i:04d} " in texts for i in range(400))  # nothing lost in the cuts
    assert texts.index("row 0399") < texts.index("block 0")   # order kept
    # 40k of text in many small sections also splits, by characters
    many = [slack.section("y" * 2900) for _ in range(30)]
    assert all(sum(len(b["text"]["text"]) for b in m.blocks) <= slack.MAX_TEXT
               for m in slack.build_messages(many))
    one = slack.build_messages([slack.section("hello")], "plain hello")
    assert [(m.text, m.blocks) for m in one] == [("plain hello", [slack.section("hello")])]


def test_redact_tokens_and_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    text = (f"a {TOKEN} b xoxp-123-456-abc c xapp-1-A1-xyz d https://hooks.slack.com/services/T0/B0/abc?x=1 e "
            "xoxe.xoxp-1-abcdef")
    out = slack.redact(text)
    for secret in (TOKEN, "xoxp-123", "xapp-1", "hooks.slack.com", "xoxe.xoxp"):
        assert secret not in out
    assert out.startswith("a *** b *** c")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/secret-path")
    assert slack.redact("url http://127.0.0.1:9/services/secret-path!") == "url ***!"


def test_post_arrives_in_channel_with_blocks(env: SlackServer, all_logs: list[str]) -> None:
    s = slack.sender("#invest_ops")
    assert s is not None and s.via == "web" and TOKEN not in repr(s)
    receipt = s.post([slack.header("Alert"), slack.section("*BUY* 005930")], text="Alert BUY 005930")
    assert receipt.ts == ["1700000000.000001"] and receipt.channel == "#invest_ops" and receipt.via == "web"
    [req] = env.requests
    assert req.path == "/api/chat.postMessage"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.body["channel"] == "#invest_ops" and req.body["text"] == "Alert BUY 005930"
    assert req.body["blocks"][1] == {"type": "section", "text": {"type": "mrkdwn", "text": "*BUY* 005930"}}
    assert TOKEN not in str(receipt.to_dict())
    assert not any(TOKEN in line for line in all_logs)


def test_rate_limited_then_success_delivers_once(env: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from slack_sdk.http_retry import builtin_handlers

    waits: list[float] = []

    def recorded_sleep(seconds: float) -> None:  # records the wait the client chose, then really waits
        waits.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(builtin_handlers, "time", SimpleNamespace(sleep=recorded_sleep))  # that module only
    # 2 s, not slack-sdk's 1 s default for a 429 without the header, so honouring it is what is tested
    env.script = [(429, {"Retry-After": "2"}, '{"ok": false, "error": "ratelimited"}')]
    receipt = slack.sender("#invest_ops").post(text="once")
    assert len(waits) == 1 and 2 <= waits[0] < 3  # Retry-After honoured (plus slack-sdk's jitter below 1 s)
    assert [r.status for r in env.requests] == [429, 200]
    assert len(env.delivered) == 1 and receipt.parts == 1


def test_server_error_is_one_bounded_redacted_failure(env: SlackServer, all_logs: list[str]) -> None:
    env.script = [(500, {}, "oops")] * 5
    with pytest.raises(slack.SlackSendError) as info:
        slack.sender("#invest_ops").post(text="x")
    assert info.value.status == 500 and "HTTP 500" in str(info.value)
    assert len(env.requests) == 2  # slack-sdk's one retry for 500, nothing stacked on top
    assert TOKEN not in str(info.value) and info.value.__cause__ is None and info.value.__context__ is None
    assert not any(TOKEN in line for line in all_logs)


def test_unreachable_server_fails_cleanly(monkeypatch: pytest.MonkeyPatch, all_logs: list[str]) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{unused_port()}/api/")
    with pytest.raises(slack.SlackSendError) as info:
        slack.sender("#invest_ops", timeout_s=2).post(text="x")
    assert "Connection refused" in str(info.value) or "URLError" in str(info.value)
    assert TOKEN not in str(info.value)
    assert not any(TOKEN in line for line in all_logs)


def test_webhook_when_only_webhook_url(monkeypatch: pytest.MonkeyPatch, server: SlackServer,
                                       all_logs: list[str]) -> None:
    url = server.webhook_url()
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    s = slack.sender("#invest_ops")
    assert s is not None and s.via == "webhook"
    receipt = s.post([slack.section("hook")], text="hook text")
    [req] = server.requests
    assert req.path == "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert req.body == {"text": "hook text", "blocks": [slack.section("hook")]}
    assert url not in str(receipt.to_dict())
    server.script = [(404, {"Content-Type": "text/plain"}, "no_service")]
    with pytest.raises(slack.SlackSendError) as info:
        s.post(text="again")
    assert "404" in str(info.value) and url not in str(info.value) and "XXXXXXXX" not in str(info.value)
    assert not any("XXXXXXXXXXXX" in line for line in all_logs)


def test_no_credentials_no_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "  ")
    assert slack.sender("#x") is None and not slack.configured()
