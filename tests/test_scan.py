from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from conftest import krx

from common.calendar import TradingCalendar
from common.home import Home
from common.store import EodStore, validate_day
from nas import scan as scanner

END = dt.date(2025, 11, 28)
SMALL = {  # a strategy small enough for a 300-row market built by hand
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__LOOKBACKS": "[20, 60]",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__WEIGHTS": "[0.5, 0.5]",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__TOP_N": "3",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__FILTERS__MIN_AVG_VALUE": "0",
}


def build_market(home: Home, cal: TradingCalendar, paths: dict[str, np.ndarray], *, halted: dict | None = None) -> list:
    """Store a hand-made market: ticker -> closes over the last len(path) trading days up to END (NaN: no row)."""
    n = max(len(p) for p in paths.values())
    days = cal.sessions(END - dt.timedelta(days=2 * n), END)[-n:]
    frames = []
    last: dict[str, int] = {}  # the previous close: KRX's base price on a day without a corporate action
    for i, day in enumerate(days):
        rows = []
        for ticker, path in paths.items():
            close = path[i - (n - len(path))] if i >= n - len(path) else np.nan
            if np.isnan(close):
                continue
            base = last.get(ticker, int(close))
            last[ticker] = int(close)
            stop = bool(halted and halted.get(ticker) == day)
            rows.append({"date": day, "ticker": ticker, "name": f"name-{ticker}",
                         "market": "ETF" if ticker == "069500" else "KOSPI",
                         "open": 0 if stop else int(close), "high": 0 if stop else int(close),
                         "low": 0 if stop else int(close), "close": int(close), "volume": 0 if stop else 1000,
                         "value": 0 if stop else int(close) * 1000, "change_pct": 0.0, "base": base,
                         "market_cap": int(close) * 10**6, "halted": stop})
        frames.append(validate_day(pd.DataFrame(rows), day, "test"))
    EodStore.for_home(home).write(frames)
    return days


def trend(start: float, daily: float, n: int = 300) -> np.ndarray:
    """A steady trend with a zigzag on top, so RSI stays off its extremes."""
    t = np.arange(n)
    return np.round(start * (1 + daily) ** t * (1 + 0.015 * (-1) ** t))


def run_scan(home: Home, *args: str, env: dict | None = None) -> tuple[dict | None, str, int]:
    out = krx("scan", *args, home=home, env={**SMALL, **(env or {})})
    files = sorted((home.reports / "signals").glob("signals_*.json"))
    return (json.loads(files[-1].read_text()) if files else None), out.stderr, out.returncode


def test_scan_picks_top_n_and_explains(home: Home, cal: TradingCalendar) -> None:
    paths = {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004), "000020": trend(1000, 0.003),
             "000030": trend(1000, 0.002), "000040": trend(1000, 0.001), "000050": trend(1000, -0.001)}
    build_market(home, cal, paths)
    result, err, rc = run_scan(home)
    assert rc == 0, err
    assert result["schema"] == "scan_result/1" and result["asof"] == END.isoformat()
    assert result["next_trading_day"] == "2025-12-01" and result["regime"] == "ON"
    assert result["universe_size"] == 6
    buys = [(r["ticker"], r["rank"]) for r in result["rows"] if r["state"] == "BUY"]
    assert buys == [("000010", 1), ("000020", 2), ("000030", 3)]
    assert all(r["name"] == f"name-{r['ticker']}" and r["reason"] and r["close"] for r in result["rows"])
    assert "SCAN_DONE" in err and "BUY=3" in err


def test_hold_core_and_sells_against_the_portfolio(home: Home, cal: TradingCalendar) -> None:
    falling = np.r_[trend(1000, 0.002, 250), trend(1600, -0.01, 50)]  # ends under its 200-day SMA
    paths = {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004), "000020": trend(1000, 0.003),
             "000030": trend(1000, 0.002), "000040": trend(1000, 0.001), "000060": falling,
             "000070": trend(1000, 0.0015)}
    build_market(home, cal, paths)
    core_env = {"KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__CORE_HOLDINGS":
                '[{ticker: "000060", weight: 0.2}, {ticker: "069500", weight: 0.1}]'}
    (home.state / "portfolio.json").write_text(json.dumps({"positions": [
        {"ticker": "000060", "entry_date": "2025-01-02", "entry_price": 900, "shares": 10},   # core, under SMA
        {"ticker": "000070", "entry_date": "2025-01-02", "entry_price": 5000, "shares": 10},  # stop-loss hit
        {"ticker": "000010", "entry_date": "2025-01-02", "entry_price": 1000, "shares": 10},  # still top
    ]}))
    result, err, rc = run_scan(home, "--apply", env=core_env)
    assert rc == 0, err
    state = {r["ticker"]: r["state"] for r in result["rows"]}
    assert state["000060"] == "HOLD_CORE"            # a core holding under its SMA is never sold
    assert state["069500"] == "BUY"                  # a core holding not held is bought
    assert state["000070"] == "CUT_STOPLOSS"
    assert state["000010"] == "HOLD"
    assert [t for t, s in state.items() if s == "BUY" and t != "069500"] == ["000020", "000030"]
    # top 3 plus 2 core holdings: 5 positions after applying
    portfolio = json.loads((home.state / "portfolio.json").read_text())
    assert sorted(p["ticker"] for p in portfolio["positions"]) == ["000010", "000020", "000030", "000060", "069500"]
    bought = {p["ticker"]: p for p in portfolio["positions"]}["000020"]
    assert bought["entry_date"] == END.isoformat() and bought["entry_price"] == paths["000020"][-1]
    assert bought["shares"] > 0


def test_exclusions_are_logged_by_kind(home: Home, cal: TradingCalendar) -> None:
    spike = trend(1000, 0.001)
    spike[-1] = spike[-2] * 1.5  # a move beyond the daily limit: abnormal data
    paths = {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004), "000080": spike,
             "000090": trend(1000, 0.003, 30), "000100": trend(1000, 0.002)}
    build_market(home, cal, paths, halted={"000100": END})
    result, err, rc = run_scan(home)
    assert rc == 0, err
    excluded = {e["ticker"]: e["code"] for e in result["excluded"]}
    assert excluded == {"000080": "abnormal", "000090": "short_history", "000100": "halted"}
    assert "[ERROR] [SCAN_EXCLUDED_ABNORMAL]" in err and "000080" in err
    assert "[INFO] [SCAN_EXCLUDED_SHORT_HISTORY]" in err and "[INFO] [SCAN_EXCLUDED_HALTED]" in err


def test_non_trading_day_reuses_the_last_day(home: Home, cal: TradingCalendar) -> None:
    build_market(home, cal, {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004)})
    result, err, rc = run_scan(home, "--date", "2025-11-30")  # a Sunday
    assert rc == 0, err
    assert result["asof"] == "2025-11-28" and result["next_trading_day"] == "2025-12-01"


def test_missing_day_and_broken_portfolio_fail_clearly(home: Home, cal: TradingCalendar) -> None:
    build_market(home, cal, {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004)})
    _, err, rc = run_scan(home, "--date", "2025-12-01")
    assert rc == 3 and "not in the store" in err and "krx ingest --date 2025-12-01" in err
    (home.state / "portfolio.json").write_text("{broken")
    _, err, rc = run_scan(home)
    assert rc == 3 and "portfolio.json: unreadable" in err
    (home.state / "portfolio.json").write_text(json.dumps({"positions": [{"ticker": "1", "entry_price": 5}]}))
    _, err, rc = run_scan(home)
    assert rc == 3 and "positions[0]" in err
    assert not list((home.reports / "signals").glob("*.json"))


def test_empty_store(home: Home) -> None:
    with pytest.raises(scanner.ScanError, match="krx ingest"):
        scanner.scan(home)


def test_apply_is_idempotent_per_day_and_the_next_day_holds(home: Home, cal: TradingCalendar) -> None:
    paths = {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004), "000020": trend(1000, 0.003),
             "000030": trend(1000, 0.002), "000040": trend(1000, 0.001)}
    days = build_market(home, cal, paths)
    day_before = days[-2].isoformat()
    first, err, rc = run_scan(home, "--date", day_before, "--apply")
    assert rc == 0, err
    again, _, _ = run_scan(home, "--date", day_before, "--apply")  # a rerun of the same day changes nothing
    assert [(r["ticker"], r["state"]) for r in again["rows"]] == [(r["ticker"], r["state"]) for r in first["rows"]]
    portfolio = json.loads((home.state / "portfolio.json").read_text())
    assert sorted(p["ticker"] for p in portfolio["positions"]) == ["000010", "000020", "000030"]
    assert portfolio["before"] == [] and portfolio["asof"] == day_before
    nxt, _, _ = run_scan(home, "--apply")  # the next day starts from what the day before bought
    assert {r["ticker"]: r["state"] for r in nxt["rows"]} == {"000010": "HOLD", "000020": "HOLD", "000030": "HOLD"}
