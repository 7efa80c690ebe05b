"""Following the alerts is the backtest: the daily scan, applied every trading day for two years of the sample
market (a split and a reverse split of held tickers in it), trades exactly what the backtest of the same window
and parameters trades: the same (day, ticker, side) and the same shares, fills at the open and delistings
included. Both run on the real store, in process."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import calendar
from common.home import Home, init_home
from nas import scan as scanner
from pc import backtest

FIRST, LAST = dt.date(2022, 7, 1), dt.date(2024, 6, 28)


@pytest.fixture(scope="module")
def sample_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home, _ = init_home(tmp_path_factory.mktemp("follow") / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    proc = subprocess.run([sys.executable, "-m", "faces.cli", "ingest", "--start", "2021-01-04", "--end",
                           LAST.isoformat()], env={**env, "KRX_HOME": str(home.root)}, cwd=home.root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return home


def _key(frame: pd.DataFrame) -> list[tuple]:
    return sorted((pd.Timestamp(r.date).date().isoformat(), r.ticker, r.side, float(r.shares))
                  for r in frame.itertuples(index=False))


def test_following_the_applied_alerts_reproduces_the_backtest(sample_home: Home, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX_HOME", str(sample_home.root))
    days = calendar.load(sample_home).sessions(FIRST, LAST)
    followed, rebalance_days, buy_or_sell_days = [], [], []
    for day in days:
        result, state, before = scanner.scan(sample_home, day)
        scanner.save_portfolio(sample_home, state, before, reset=False)
        followed += [{"date": day, "ticker": f["ticker"], "side": f["side"], "shares": f["shares"]}
                     for f in result["fills"]]
        if result["rebalance_day"]:
            rebalance_days.append(day)
        if any(r["state"] not in ("HOLD", "HOLD_CORE") for r in result["rows"]):
            buy_or_sell_days.append(day)
    # the alert acts only on the schedule: entries and exits on month-ends (daily sell rules are off)
    assert buy_or_sell_days and set(buy_or_sell_days) <= set(rebalance_days)
    assert len(rebalance_days) == 24

    request = {"id": "follow", "strategy": "momentum_topN_v1", "start": FIRST.isoformat(), "end": LAST.isoformat()}
    result = backtest.run_request(request, tmp_path / "bt", sample_home)
    trades = pd.read_csv(tmp_path / "bt" / "trades.csv", dtype={"ticker": str})
    assert result["metrics"]["trades"] == len(trades) > 40
    assert _key(pd.DataFrame(followed)) == _key(trades)
    # the window holds the sample market's 50:1 split (091990) and 1:10 reverse split (093370), both held through
    actions = [n for n in result["notes"] if n.startswith("corporate action")]
    assert any("2023-05-04 091990: factor 50" in n for n in actions), result["notes"]
    assert any("2024-05-16 093370: factor 0.1" in n for n in actions), result["notes"]
    # and the model portfolio ends where the backtest ends: same shares, same cash to the won
    saved = scanner.load_portfolio(sample_home)
    positions = pd.read_csv(tmp_path / "bt" / "equity.csv").iloc[-1]
    assert saved["cash"] == pytest.approx(positions["cash"], abs=1.0)
    assert np.isclose(saved["equity"], positions["equity"], rtol=1e-9)
