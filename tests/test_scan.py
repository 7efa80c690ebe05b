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
    # 2025-11-28 is November's last session: a rebalance day; December's last is the 30th (the 31st is closed)
    assert result["rebalance_day"] is True and result["next_rebalance"] == "2025-12-30"
    assert result["execution"] == "next_open"
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
    held = [("000060", 900), ("000070", 5000), ("000010", 1000)]  # core under its SMA; stop-loss hit; still top
    (home.state / "portfolio.json").write_text(json.dumps(portfolio("2025-11-27", held)))
    result, err, rc = run_scan(home, "--apply", env=core_env)
    assert rc == 0, err
    state = {r["ticker"]: r["state"] for r in result["rows"]}
    assert state["000060"] == "HOLD_CORE"            # a core holding under its SMA is never sold
    assert state["069500"] == "BUY"                  # a core holding not held is bought
    assert state["000070"] == "CUT_STOPLOSS"
    assert state["000010"] == "HOLD"
    assert [t for t, s in state.items() if s == "BUY" and t != "069500"] == ["000020", "000030"]
    # decided at the close, traded at the next open: the orders wait in the model portfolio, sized on the close
    saved = json.loads((home.state / "portfolio.json").read_text())
    assert sorted(p["ticker"] for p in saved["positions"]) == ["000010", "000060", "000070"]
    orders = {o["ticker"]: o["shares"] for o in saved["pending"]}
    assert orders["000070"] == 0 and orders["000020"] > 0 and orders["069500"] > 0
    assert {r["ticker"]: r["order"] for r in result["rows"]}["000070"] == -10
    equity = saved["equity"]
    assert orders["069500"] == np.floor(0.1 * equity / paths["069500"][-1])


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
    assert rc == 3 and "schema: expected 'portfolio/2'" in err and "--reset" in err
    bad = portfolio("2025-11-27", [("1", 5)])
    (home.state / "portfolio.json").write_text(json.dumps(bad))
    _, err, rc = run_scan(home)
    assert rc == 3 and "positions[0]" in err
    assert not list((home.reports / "signals").glob("*.json"))


def test_empty_store(home: Home) -> None:
    with pytest.raises(scanner.ScanError, match="krx ingest"):
        scanner.scan(home)


def test_apply_is_idempotent_per_day_fills_at_the_next_open_and_never_moves_back(home: Home,
                                                                                   cal: TradingCalendar) -> None:
    paths = {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004), "000020": trend(1000, 0.003),
             "000030": trend(1000, 0.002), "000040": trend(1000, 0.001)}
    days = build_market(home, cal, paths)
    month_end = "2025-10-31"
    first, err, rc = run_scan(home, "--date", month_end, "--apply")
    assert rc == 0, err
    assert [r["ticker"] for r in first["rows"] if r["state"] == "BUY"] == ["000010", "000020", "000030"]
    saved = json.loads((home.state / "portfolio.json").read_text())
    again, _, _ = run_scan(home, "--date", month_end, "--apply")  # a rerun of the same day changes nothing
    assert again["rows"] == first["rows"]
    assert json.loads((home.state / "portfolio.json").read_text())["pending"] == saved["pending"]
    assert saved["positions"] == [] and saved["before"] is None and saved["asof"] == month_end
    # the next session: yesterday's orders fill at its open, then everything holds (not a rebalance day)
    nxt, err, rc = run_scan(home, "--date", "2025-11-03", "--apply")
    assert rc == 0, err
    assert {r["ticker"]: r["state"] for r in nxt["rows"]} == {"000010": "HOLD", "000020": "HOLD", "000030": "HOLD"}
    k = days.index(dt.date(2025, 11, 3))
    assert {f["ticker"]: f["price"] for f in nxt["fills"]} == {t: paths[t][k] for t in ("000010", "000020", "000030")}
    assert nxt["rebalance_day"] is False and nxt["next_rebalance"] == END.isoformat()
    # never back in time, unless asked to start again (the old portfolio is kept)
    _, err, rc = run_scan(home, "--date", month_end, "--apply")
    assert rc == 3 and "move it back in time" in err and "--reset" in err
    _, err, rc = run_scan(home, "--date", month_end, "--apply", "--reset")
    assert rc == 0, err
    assert json.loads((home.state / "portfolio_2025-11-03_replaced.json").read_text())["asof"] == "2025-11-03"
    assert json.loads((home.state / "portfolio.json").read_text())["asof"] == month_end


def portfolio(asof: str, held: list[tuple[str, float]], cash: float = 90_000_000.0) -> dict:
    """A saved model portfolio (portfolio/2) holding 10 shares of each ticker at its entry price."""
    return {"schema": "portfolio/2", "asof": asof, "inception": "2025-01-02", "cash": cash, "equity": cash,
            "positions": [{"ticker": t, "shares": 10, "entry_date": "2025-01-02", "entry_price": px,
                           "last_price": px} for t, px in held],
            "pending": [], "pending_day": None}


def test_a_holding_absent_from_the_day_is_sold_at_its_last_close_and_leaves(home: Home, cal: TradingCalendar) -> None:
    gone = trend(1000, 0.002)
    gone[-1] = np.nan  # no row on the last day: delisted
    paths = {"069500": trend(30000, 0.001), "000010": trend(1000, 0.004), "000070": gone}
    days = build_market(home, cal, paths)
    (home.state / "portfolio.json").write_text(json.dumps(portfolio(days[-2].isoformat(), [("000070", 900)])))
    result, err, rc = run_scan(home, "--apply")
    assert rc == 0, err
    row = {r["ticker"]: r for r in result["rows"]}["000070"]
    assert row["state"] == "DELISTED" and row["close"] == paths["000070"][-2]
    assert result["fills"] == [{"ticker": "000070", "name": "name-000070", "side": "SELL", "shares": 10.0,
                                "price": paths["000070"][-2], "reason": "DELISTED"}]
    saved = json.loads((home.state / "portfolio.json").read_text())
    assert saved["positions"] == [] and saved["cash"] > 90_000_000
    alert = krx("alert", home=home, env=SMALL)
    assert alert.returncode == 0, alert.stderr
    assert "[DELISTED]" in alert.stdout
