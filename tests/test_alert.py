"""`krx alert`: rendering, the outbox, the safety switches, once-a-day sending, failures; real slack-sdk against a
local HTTP server, and the CLI as a real subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_server import SlackServer

from common import atomic, config, events, slack, switches
from common import log as krxlog
from common.home import Home, init_home
from nas import alert

TOKEN = "xoxb-1111111111-2222222222222-TESTtokenSECRETvalue"
REPO = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 1, 5)

ROWS = [
    {"ticker": "005930", "name": "삼성전자", "state": "BUY", "score": 0.2512, "rank": 1,
     "reason": "rank 1 of top 5", "close": 71200.0},
    {"ticker": "00104K", "name": "CJ우", "state": "BUY", "score": 0.1804, "rank": 3,
     "reason": "rank 3 of top 5", "close": 60100.0},
    {"ticker": "000660", "name": "SK하이닉스", "state": "HOLD", "score": 0.2101, "rank": 2,
     "reason": "held, rank 2", "close": 180500.0},
    {"ticker": "069500", "name": "KODEX 200", "state": "HOLD_CORE", "score": None, "rank": None,
     "reason": "core holding (weight 0.2)", "close": 35500.0},
    {"ticker": "035420", "name": "NAVER", "state": "SELL_TREND", "score": -0.05, "rank": 88,
     "reason": "close 180000 under SMA200 195000", "close": 180000.0},
    {"ticker": "035720", "name": "카카오", "state": "CUT_STOPLOSS", "score": -0.2, "rank": 140,
     "reason": "-12.0% from entry 45000 (stop 10%)", "close": 39600.0},
    {"ticker": "051910", "name": "LG화학 <&>", "state": "SELL_REPLACE", "score": 0.01, "rank": 9,
     "reason": "out of top 5; 005930 takes the slot", "close": 300000.0},
]


def make_scan(home: Home, day: dt.date = DAY, rows: list[dict] | None = None, **over) -> Path:
    scan = {
        "schema": "scan_result/1", "strategy": "momentum_topN_v1", "asof": day.isoformat(),
        "next_trading_day": (day + dt.timedelta(days=1)).isoformat(), "regime": "ON",
        "universe_size": 2700, "after_filters": 1834, "rows": ROWS if rows is None else rows,
        "excluded": [{"ticker": "900110", "reason": "halted"}, {"ticker": "123450", "reason": "too little history"},
                     {"ticker": "123460", "reason": "too little history"}],
        "correlation_id": events.correlation_id(day, "momentum_topN_v1"),
    }
    scan.update(over)
    return atomic.write_json(home.reports / "signals" / f"signals_{day:%Y%m%d}.json", scan)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SlackServer) -> Iterator[Home]:
    h, _ = init_home(tmp_path / "home")
    monkeypatch.setenv("KRX_HOME", str(h.root))
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("SLACK_API_URL", server.api_url)
    monkeypatch.setenv("KRX__NOTIFY__ERROR_LOG_TO_SLACK", "false")  # these tests count the alert's requests only
    for var in [v for v in os.environ if v.startswith("KRX__") and v != "KRX__NOTIFY__ERROR_LOG_TO_SLACK"]:
        monkeypatch.delenv(var)
    yield h
    for sink in krxlog.error_sinks():
        sink.close()


def run_alert(capsys: pytest.CaptureFixture, *, date: dt.date | None = None, force: bool = False
              ) -> tuple[int, str, str]:
    home = Home.from_env()
    krxlog.setup_logging("alert", home)
    rc = alert.deliver(home, date, force=force, notify=config.load("notify", home))
    out, err = capsys.readouterr()
    return rc, out, err


def slack_policy(monkeypatch: pytest.MonkeyPatch, home: Home, sender_on: bool = True) -> None:
    monkeypatch.setenv("KRX__NOTIFY__DELIVERY_POLICY", "SLACK")
    if sender_on:
        switches.set_sender(home, True, "tests send to the local server")


def everything(home: Home, *texts: str) -> str:
    """Every file of the home (logs, outbox, events, state) and the given outputs, as one text."""
    parts = list(texts)
    for p in home.root.rglob("*"):
        if p.is_file():
            parts.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def test_render_header_and_sections(home: Home) -> None:
    a = alert.render(alert.load_scan(make_scan(home)))
    lines = a.text.splitlines()
    assert lines[0] == "KRX alert 2026-01-05 (for 2026-01-06)"
    assert "regime ON" in lines[1] and "universe 2,700" in lines[1] and "candidates after filters 1,834" in lines[1]
    order = [a.text.index(f"\n{name} (") for name in ("BUY", "SELL", "HOLD_CORE", "HOLD")]
    assert order == sorted(order)
    assert "  - 삼성전자 (005930) score +0.2512 #1 — rank 1 of top 5" in lines
    assert "  - [CUT_STOPLOSS] 카카오 (035720) score -0.2000 #140 — -12.0% from entry 45000 (stop 10%)" in lines
    assert "  - KODEX 200 (069500) score n/a — core holding (weight 0.2)" in lines
    assert "excluded 3: too little history 2, halted 1" in lines
    assert a.blocks[0]["type"] == "header" and a.blocks[0]["text"]["text"] == lines[0]
    sell = next(b["text"]["text"] for b in a.blocks if b["type"] == "section" and b["text"]["text"].startswith("*SELL"))
    assert "*LG화학 &lt;&amp;&gt;*" in sell and "[SELL_TREND]" in sell and "[SELL_REPLACE]" in sell
    off = alert.render(alert.load_scan(make_scan(home, regime="OFF", rows=[])))
    assert "regime OFF (no new buys)" in off.text and "BUY (0)\n  none" in off.text


@pytest.mark.parametrize(("change", "field"), [
    ({"regime": "MAYBE"}, "regime"),
    ({"rows": [{**ROWS[0], "state": "STRONG_BUY"}]}, "rows[0].state"),
    ({"rows": [{k: v for k, v in ROWS[0].items() if k != "score"}]}, "rows[0].score"),
    ({"universe_size": "many"}, "universe_size"),
    ({"schema": "scan_result/0"}, "schema"),
    ({"asof": "05/01/2026"}, "asof"),
])
def test_malformed_scan_names_file_and_field(home: Home, capsys: pytest.CaptureFixture, change: dict,
                                             field: str) -> None:
    path = make_scan(home, **change)
    rc, out, err = run_alert(capsys)
    assert rc == 3 and out == ""
    assert "[ERROR] [ALERT_FAILED]" in err and str(path) in err and f": {field}: " in err


def test_missing_or_broken_scan_file(home: Home, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = run_alert(capsys)
    assert rc == 3 and "no scan file yet" in err
    rc, _, err = run_alert(capsys, date=DAY)
    assert rc == 3 and "signals_20260105.json" in err and "no such scan file" in err
    atomic.write_text(home.reports / "signals" / "signals_20260105.json", "{not json")
    rc, _, err = run_alert(capsys, date=DAY)
    assert rc == 3 and "signals_20260105.json: <file>: valid JSON" in err


def test_console_only_writes_the_outbox_exactly_as_sent(home: Home, server: SlackServer,
                                                        capsys: pytest.CaptureFixture) -> None:
    make_scan(home, DAY - dt.timedelta(days=3))
    make_scan(home)  # the latest is the default
    rc, out, err = run_alert(capsys)
    assert rc == 0 and out.startswith("KRX alert 2026-01-05") and server.requests == []
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    a = alert.render(alert.load_scan(home.reports / "signals" / "signals_20260105.json"))
    sender = slack.sender("#invest_ops")
    assert box["payloads"] == sender.payloads(slack.build_messages(a.blocks, a.text))
    assert box["payloads"][0]["text"] == out.rstrip("\n") and box["payloads"][0]["channel"] == "#invest_ops"
    assert box["sent"] is False and box["sends"] == [] and "CONSOLE_ONLY" in box["reason"]
    # what the outbox holds is byte for byte what goes over the wire once the policy is SLACK
    os.environ["KRX__NOTIFY__DELIVERY_POLICY"] = "SLACK"
    try:
        switches.set_sender(home, True, "go")
        rc, _, _ = run_alert(capsys)
    finally:
        del os.environ["KRX__NOTIFY__DELIVERY_POLICY"]
    assert rc == 0 and [r.body for r in server.requests] == box["payloads"]
    assert [e["event"] for e in events.read(home) if e["event"].startswith("alert")] == \
        ["alert_rendered", "alert_rendered", "alert_sent"]
    assert {e["correlation_id"] for e in events.read(home) if e["event"].startswith("alert")} == \
        {"20260105-momentum_topN_v1"}


def test_slack_sends_once_a_day_unless_forced(home: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    slack_policy(monkeypatch, home)
    make_scan(home)
    rc, out, err = run_alert(capsys)
    assert rc == 0 and "[ALERT_SENT]" in err
    [req] = server.requests
    assert req.path == "/api/chat.postMessage" and req.body["channel"] == "#invest_ops"
    assert req.body["blocks"][0]["type"] == "header" and req.body["text"] == out.rstrip("\n")
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    assert box["sent"] is True and box["sends"][0]["ts"] == ["1700000000.000001"]
    assert box["sends"][0]["channel"] == "#invest_ops" and box["sends"][0]["sent_at"]

    rc, out2, err = run_alert(capsys)
    assert rc == 0 and out2 == out and len(server.requests) == 1
    assert "[WARNING] [ALERT_SUPPRESSED]" in err and "already sent" in err and "--force" in err
    monkeypatch.setenv("KRX__NOTIFY__DELIVERY_POLICY", "CONSOLE_ONLY")  # a console run keeps the send record
    run_alert(capsys)
    monkeypatch.setenv("KRX__NOTIFY__DELIVERY_POLICY", "SLACK")
    rc, _, _ = run_alert(capsys)
    assert rc == 0 and len(server.requests) == 1
    rc, _, err = run_alert(capsys, force=True)
    assert rc == 0 and len(server.requests) == 2 and "[ALERT_SENT]" in err
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    assert [s["forced"] for s in box["sends"]] == [False, True]
    # a damaged outbox may hide a send: fail closed
    (home.reports / "outbox" / "20260105.json").write_text("{torn")
    rc, _, err = run_alert(capsys)
    assert rc == 0 and len(server.requests) == 2 and "already sent" in err


@pytest.mark.parametrize("state", ["estop_on", "estop_unreadable", "sender_off", "gate_mock_only"])
def test_no_external_send_unless_switches_allow(home: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture, state: str) -> None:
    slack_policy(monkeypatch, home, sender_on=state != "sender_off")
    if state == "estop_on":
        switches.set_emergency_stop(home, True, "drill")
    elif state == "estop_unreadable":
        (home.state / switches.ESTOP_FILE).write_bytes(b"\x00garbage")
    elif state == "gate_mock_only":
        switches.set_gate(home, "MOCK_ONLY", "tests")
    make_scan(home)
    rc, out, err = run_alert(capsys)
    assert rc == 0 and out.startswith("KRX alert 2026-01-05") and server.requests == []
    assert "[WARNING] [ALERT_SUPPRESSED]" in err and "not sent" in err
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    assert box["sent"] is False and box["reason"].startswith("not sent: ") and box["payloads"]
    assert events.read(home)[-1]["event"] == "alert_suppressed"


@pytest.mark.parametrize("failure", ["http500", "unreachable"])
def test_failed_send_exit_3_one_error_no_token(home: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture, failure: str) -> None:
    slack_policy(monkeypatch, home)
    make_scan(home)
    rc, ok_out, _ = run_alert(capsys, force=True)
    assert rc == 0
    if failure == "http500":
        server.script = [(500, {}, '{"ok": false, "error": "internal_error"}')] * 5
    else:
        server.close()
    rc, out, err = run_alert(capsys, force=True)
    assert rc == 3 and out == ok_out  # the alert is still printed
    errors = [ln for ln in err.splitlines() if "[ERROR]" in ln]
    assert len(errors) == 1 and "[ALERT_SEND_FAILED] rc=3" in errors[0]
    assert ("HTTP 500" in errors[0]) if failure == "http500" else ("Connection refused" in errors[0])
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    assert box["reason"].startswith("send failed") and len(box["sends"]) == 1
    assert events.read(home)[-1]["event"] == "alert_send_failed"
    assert TOKEN not in everything(home, out, err)


# 400 holdings: an alert too long for one Slack message
LONG_ROWS = [{"ticker": f"{i:06d}", "name": f"종목{i}", "state": "HOLD", "score": 0.1, "rank": i,
              "reason": "held and still in the top N " + "·" * 40, "close": 1000.0} for i in range(400)]


def test_long_alert_is_split_and_delivered_in_order(home: Home, server: SlackServer,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    slack_policy(monkeypatch, home)
    make_scan(home, rows=LONG_ROWS)
    rc, out, _ = run_alert(capsys)
    assert rc == 0 and len(server.requests) >= 2
    texts = "\n".join(b["text"]["text"] for r in server.requests for b in r.body["blocks"] if b["type"] == "section")
    assert all(f"({i:06d})" in texts for i in range(400))
    assert all(len(r.body["blocks"]) <= 50 for r in server.requests)
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    assert len(box["sends"][0]["ts"]) == len(server.requests) and box["payloads"] == [r.body for r in server.requests]


def test_cli_subprocess_sends_to_the_local_server(home: Home, server: SlackServer) -> None:
    switches.set_sender(home, True, "subprocess test")
    make_scan(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KRX")) or k == "KRX_EVENT_LOG_KEY_FILE"}
    env.update(KRX_HOME=str(home.root), SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=server.api_url,
               KRX__NOTIFY__DELIVERY_POLICY="SLACK")
    cmd = [str(REPO / ".venv/bin/python"), "-m", "faces.cli", "alert", "--date", "2026-01-05"]
    if not Path(cmd[0]).exists():
        cmd[0] = sys.executable
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("KRX alert 2026-01-05") and "[ALERT_SENT]" in proc.stderr
    [req] = server.requests
    assert req.body["channel"] == "#invest_ops" and req.body["blocks"]
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and len(server.requests) == 1 and "already sent" in again.stderr
    assert TOKEN not in everything(home, proc.stdout, proc.stderr, again.stdout, again.stderr)


@pytest.mark.parametrize("sends", [None, "2026-01-05T16:20:00", {"sent_at": "x"}])
def test_outbox_with_a_damaged_sends_field_fails_closed(home: Home, server: SlackServer,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture, sends: object) -> None:
    """`sends` is the record of what went out: when it is not a list it may hide a send, so it counts as one
    (null was a TypeError traceback, a string or an object was read as 'never sent' and sent again)."""
    slack_policy(monkeypatch, home)
    make_scan(home)
    atomic.write_json(home.reports / "outbox" / "20260105.json", {"schema": "alert_outbox/1", "date": "2026-01-05",
                                                                  "sends": sends})
    rc, _, err = run_alert(capsys)
    assert rc == 0 and server.requests == [] and "already sent" in err


def test_a_partly_sent_alert_records_the_parts_that_went_out(home: Home, server: SlackServer,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Part 1 delivered, part 2 failed: the outbox records part 1, so a rerun does not post it a second time."""
    slack_policy(monkeypatch, home)
    make_scan(home, rows=LONG_ROWS)
    ok = json.dumps({"ok": True, "channel": "C0INVESTOPS", "ts": "1700000000.000777"})
    server.script = [(200, {}, ok)] + [(500, {}, '{"ok": false, "error": "internal_error"}')] * 5
    rc, _, err = run_alert(capsys)
    assert rc == 3 and "[ALERT_SEND_FAILED]" in err
    assert len(server.delivered) == 1
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text())
    assert box["sent"] is True and box["sends"][-1]["ts"] == ["1700000000.000777"]
    rc, _, err = run_alert(capsys)
    assert rc == 0 and len(server.delivered) == 1 and "already sent" in err
