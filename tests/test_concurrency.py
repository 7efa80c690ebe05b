"""Findings 5 and 6: the same daily job started twice at once. Real `krx` processes (one of them under the real
cron wrapper), a real slack-sdk client against the local Slack server, the real Parquet store."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from slack_server import SlackServer
from test_alert import TOKEN, make_scan

from common import calendar, switches
from common.home import Home

REPO = Path(__file__).resolve().parent.parent
WRAPPER = REPO / "scripts/linux/jobs/run_report_eod.sh"


def _env(home: Home, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_", "KRX_LOCK"))}
    env.update({"KRX_HOME": str(home.root), **extra})
    return env


def test_two_alerts_at_once_post_exactly_once(home: Home, server: SlackServer) -> None:
    make_scan(home)
    switches.set_sender(home, True, "concurrency test")
    server.delay_s = 0.5  # both runs are in flight while the first post is answered
    env = _env(home, SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=server.api_url, KRX__NOTIFY__DELIVERY_POLICY="SLACK",
               KRX__NOTIFY__ERROR_LOG_TO_SLACK="false")
    runs = [  # the cron wrapper (its lock `alert`) and a run by hand, plus a second one by hand
        subprocess.Popen(["bash", str(WRAPPER)], env=env, cwd=home.root, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True),
        *(subprocess.Popen([sys.executable, "-m", "faces.cli", "alert"], env=env, cwd=home.root,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)),
    ]
    results = [(p.wait(timeout=120), p.communicate()) for p in runs]
    for rc, (out, err) in results:
        assert rc == 0, out + err
    posts = [r for r in server.requests if r.path.endswith("chat.postMessage")]
    assert len(posts) == 1
    box = json.loads((home.reports / "outbox" / "20260105.json").read_text(encoding="utf-8"))
    assert len(box["sends"]) == 1
    assert sum("ALERT_SUPPRESSED" in err for _, (_, err) in results) == 2


def test_a_cycle_started_while_another_runs_does_nothing(home: Home) -> None:
    from common import locks

    with locks.job_lock(home, "daily"):
        proc = subprocess.run([sys.executable, "-m", "faces.cli", "ops", "cycle"], env=_env(home), cwd=home.root,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "another ops cycle is running" in proc.stderr
    assert not (home.reports / "ops/daily/ops_report_latest.json").exists()


def test_concurrent_ingests_over_different_ranges_keep_every_day(home: Home, cal: calendar.TradingCalendar) -> None:
    # six runs at once, half a year of the full sample market each: the old code lost days from the manifest (and
    # from the year files) in every trial
    ranges = [(f"{y}-01-02", f"{y}-06-30") for y in (2021, 2022, 2023)] + \
        [(f"{y}-07-01", f"{y}-12-28") for y in (2021, 2022, 2023)]
    runs = [subprocess.Popen([sys.executable, "-m", "faces.cli", "ingest", "--source", "sample", "--start", a,
                              "--end", b], env=_env(home), cwd=home.root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for a, b in ranges]
    for p in runs:
        assert p.wait(timeout=600) == 0, p.communicate()
    expected = {d for a, b in ranges for d in cal.sessions(dt.date.fromisoformat(a), dt.date.fromisoformat(b))}
    manifest = json.loads((home.data / "eod/manifest.json").read_text(encoding="utf-8"))
    assert {d.isoformat() for d in expected} <= set(manifest["dates"])
    stored = set()
    for year in (2021, 2022, 2023):
        stored |= set(pq.read_table(home.data / f"eod/{year}.parquet", columns=["date"]).column("date").to_pylist())
    assert expected <= stored
