"""The Slack daily summary: the real `krx ops daily-summary` process and the real slack-sdk client against the
local Slack server. One message a day with the alert headline, the cycle, the risks, the queue, the latest backtest
and the signed checkpoint; under the same switches as every external send; `--force` sends it again."""

from __future__ import annotations

import json
import re

from conftest import krx
from slack_server import SlackServer
from test_alert import DAY, TOKEN, make_scan

from common import atomic, switches
from common.home import Home


def _summary(home: Home, server: SlackServer, *args: str):
    return krx("ops", "daily-summary", *args, home=home,
               env={"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_URL": server.api_url, "KRX__NOTIFY__DELIVERY_POLICY": "SLACK",
                    "KRX__NOTIFY__ERROR_LOG_TO_SLACK": "false"})


def _posts(server: SlackServer) -> list:
    return [r for r in server.requests if r.path.endswith("chat.postMessage")]


def test_one_summary_a_day_with_the_days_facts(home: Home, server: SlackServer) -> None:
    make_scan(home, next_rebalance="2026-01-30")
    atomic.write_json(home.queue("done") / "bt-1" / "result.json",
                      {"id": "bt-1", "metrics": {"total_return": 0.1234, "cagr": 0.05, "mdd": -0.2}})
    switches.set_sender(home, True, "tests send to the local server")

    first = _summary(home, server)
    assert first.returncode == 0, first.stderr
    posts = _posts(server)
    assert len(posts) == 1 and posts[0].body["channel"] == "#invest_ops"
    text = json.dumps(posts[0].body["blocks"], ensure_ascii=False)
    assert "KRX daily summary 2026-01-05" in text
    assert "BUY 2 · SELL 3 · HOLD 1 · HOLD_CORE 1" in text and "next rebalance 2026-01-30" in text
    assert "Backtest bt-1: return +12.34%" in text and "pending 0" in text
    # the event log's newest signed checkpoint goes off the box with it (set_sender above wrote events)
    assert re.search(r"event log checkpoint: seq \d+ hash [0-9a-f]{16} at \S+ mac [0-9a-f]{16}", text), text
    assert TOKEN not in first.stdout + first.stderr

    again = _summary(home, server)  # the cycle reran: nothing new goes out
    assert again.returncode == 0 and len(_posts(server)) == 1 and "already sent" in again.stderr
    forced = _summary(home, server, "--force")
    assert forced.returncode == 0 and len(_posts(server)) == 2
    record = json.loads((home.reports / "ops/daily_summary" / f"{DAY:%Y%m%d}.json").read_text())
    assert len(record["sends"]) == 2


def test_the_summary_obeys_the_switches(home: Home, server: SlackServer) -> None:
    make_scan(home)
    off = _summary(home, server)  # the sender switch is off on a fresh home
    assert off.returncode == 0 and "sender switch is off" in off.stderr and _posts(server) == []
    switches.set_sender(home, True, "on")
    switches.set_emergency_stop(home, True, "nothing leaves the machine")
    stopped = _summary(home, server)
    assert stopped.returncode == 0 and "emergency stop is on" in stopped.stderr and _posts(server) == []
    assert "KRX daily summary" in stopped.stdout  # printed all the same
