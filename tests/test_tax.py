"""The securities transaction tax: every stock sell of a 2023-2026 backtest on the sample market pays the rate of
the day it settles (T+2 sessions) and of its market, to the won; ETF sells and buys pay none. The expected rates
are written here from the law, not read from the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from common import calendar
from common.home import Home, init_home
from pc import backtest

# bps of the sell value by settlement year, KOSPI and KOSDAQ alike (rural special tax included)
LAW = {2023: 20.0, 2024: 18.0, 2025: 15.0, 2026: 20.0}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    h, _ = init_home(tmp_path_factory.mktemp("tax") / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    proc = subprocess.run([sys.executable, "-m", "faces.cli", "ingest", "--start", "2022-03-02", "--end",
                           "2026-06-30", "--tickers", "120"], env={**env, "KRX_HOME": str(h.root)}, cwd=h.root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return h


def test_each_sell_pays_the_rate_of_its_settlement_date_and_market(home: Home, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX_HOME", str(home.root))
    request = {"id": "tax", "strategy": "momentum_topN_v1", "start": "2023-01-02", "end": "2026-06-30",
               "params": {"top_n": 10, "regime": {"enabled": False},
                          "core_holdings": [{"ticker": "069500", "weight": 0.2}]}}
    backtest.run_request(request, tmp_path / "o", home)
    trades = pd.read_csv(tmp_path / "o" / "trades.csv", dtype={"ticker": str}, parse_dates=["date"])
    markets = pd.read_parquet(home.data / "eod" / "tickers.parquet").set_index("ticker")["market"]
    sessions = calendar.load(home).index
    sells = trades[trades["side"] == "SELL"]
    assert (trades.loc[trades["side"] == "BUY", "tax"] == 0).all()
    seen = set()
    for t in sells.itertuples(index=False):
        settle = sessions[sessions.searchsorted(t.date) + 2].date()
        market = markets[t.ticker]
        rate = 0.0 if market == "ETF" else LAW[settle.year]
        assert abs(t.tax - t.value * rate / 1e4) < 1.0, (t.date, t.ticker, market, settle, t.tax)
        seen.add((settle.year, market))
    # the run really crossed every year and both stock markets, and sold the ETF (a core trim) untaxed
    assert {y for y, m in seen if m != "ETF"} == {2023, 2024, 2025, 2026}
    assert {m for _, m in seen} >= {"KOSPI", "KOSDAQ", "ETF"}
