"""The embedded sample market: a deterministic, seeded, KRX-like synthetic market.

Every ticker's traits come from a generator seeded by (seed, ticker number) and every day's shocks from one
seeded by (seed, day), and prices are compounded from the market's first day, so a given day's data never
depends on which range was asked for: incremental ingest and a full backfill store the same rows.

A few tickers have splits and reverse splits (SPLITS), as KRX shows them: on the day, the raw prices move by
1 / factor, the volume by the factor, the market cap does not move, and the row's base price (what KRX computes
the change against, common.store `base`) is the previous close / factor rounded to the won.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from common.calendar import TradingCalendar

MAX_TICKERS = 3000
ETF_TICKER = "069500"
_PREFIX = ["한빛", "대한", "동방", "새한", "미래", "코리아", "서울", "태평", "삼양", "금강", "청운", "누리"]
_SUFFIX = ["전자", "화학", "바이오", "건설", "증권", "제약", "식품", "중공업", "소재", "통신", "게임", "에너지"]


class Split(NamedTuple):
    ticker: str
    day: dt.date   # a trading day: the first session at the new share count
    factor: float  # new shares per old share: 50.0 for 1 share into 50, 0.1 for 10 shares into 1


# The sample market's corporate actions, whatever the seed (a market of fewer tickers lacks the later ones).
SPLITS = (
    Split("091990", dt.date(2023, 5, 4), 50.0),   # a high-priced stock, like 005930 on 2018-05-04
    Split("093370", dt.date(2024, 5, 16), 0.1),   # a cheap one merged 10 into 1
    Split("094480", dt.date(2020, 7, 1), 2.0),
    Split("094480", dt.date(2025, 6, 12), 5.0),   # the same stock again: factors compound
    Split("095660", dt.date(2021, 11, 10), 1.5),  # a bonus issue of half a share per share
    Split("097770", dt.date(2026, 2, 12), 0.1),
)
RUN_UP = dt.timedelta(days=210)  # the run-up: the days before a split
RUN_UP_DRIFT = 0.005  # a day, on top of the stock's own drift
# The split tickers: their position in the market and the traits that make them useful to test with (listed
# from the first day and never delisted, liquid above the strategy's value floor, a price for their ratios).
_SPLIT_TRAITS = {
    "091990": {"k": 3, "start_price": 1_600_000.0, "volume": 4e4, "drift": 0.0009, "vol": 0.022},
    "093370": {"k": 5, "start_price": 900.0, "volume": 4e6, "drift": 0.0009, "vol": 0.022},
    "094480": {"k": 8, "start_price": 60_000.0, "volume": 5e5, "drift": 0.0004, "vol": 0.022},
    "095660": {"k": 11, "start_price": 12_000.0, "volume": 8e5, "drift": 0.0003, "vol": 0.022},
    "097770": {"k": 14, "start_price": 2_000.0, "volume": 3e6, "drift": -0.0004, "vol": 0.022},
}


class SampleSource:
    name = "sample"

    def __init__(self, calendar: TradingCalendar, seed: int = 42, tickers: int = 300,
                 first_date: dt.date = dt.date(2019, 1, 2)):
        if not 10 <= tickers <= MAX_TICKERS:
            raise ValueError(f"sample market: tickers must be between 10 and {MAX_TICKERS}, got {tickers}")
        self.calendar, self.seed, self.n = calendar, seed, tickers
        self.first_date = first_date
        self._traits = _traits(seed, tickers)
        col = {t: i for i, t in enumerate(self._traits["ticker"])}
        self.splits = [a for a in SPLITS if a.ticker in col]
        self._split_cols = [col[a.ticker] for a in self.splits]
        self._days: list[dt.date] = []
        self._pos: dict[dt.date, int] = {}
        self._path = np.empty((0, tickers + 1))  # unrounded closes, the ETF last
        self._halted = np.empty((0, tickers), dtype=bool)

    def fetch_day(self, day: dt.date) -> pd.DataFrame | None:
        """The normalized frame of one day (common.store.COLUMNS), or None when the market was closed."""
        return self.fetch_days([day]).get(day)

    def fetch_days(self, days: Sequence[dt.date]) -> dict[dt.date, pd.DataFrame]:
        wanted = [d for d in days if d >= self.first_date and self.calendar.is_trading_day(d)]
        if not wanted:
            return {}
        self._simulate_until(max(wanted))
        return {d: self._frame(self._pos[d], d) for d in wanted}

    # --- simulation ------------------------------------------------------------------------------------------

    def _simulate_until(self, end: dt.date) -> None:
        """Extend the simulated price path up to `end`, compounding from the last simulated close."""
        if self._days and self._days[-1] >= end:
            return
        after = self._days[-1] + dt.timedelta(days=1) if self._days else self.first_date
        days = self.calendar.sessions(after, end)
        if not days:
            return
        t, n = self._traits, self.n
        shocks = [_day_shocks(self.seed, d, n) for d in days]
        market = np.array([s["market"] for s in shocks])
        halted = np.stack([s["halted"] for s in shocks])
        rets = t["drift"] + t["beta"] * market[:, None] + t["vol"] * np.stack([s["idio"] for s in shocks])
        for split, col in zip(self.splits, self._split_cols, strict=True):
            # splits follow run-ups, which is also what puts the stock among the strategy's picks through its split
            rets[[split.day - RUN_UP <= d < split.day for d in days], col] += RUN_UP_DRIFT
        rets = np.clip(rets, -0.25, 0.25)
        rets[halted] = 0.0  # a halted day keeps its close
        etf = np.clip(market + 0.0005 * np.array([s["etf"] for s in shocks]), -0.25, 0.25)
        rets = np.column_stack([rets, etf])
        # the unrounded path carries on; the stored close is its rounding
        base = self._path[-1] if len(self._path) else np.r_[t["start_price"], 30000.0]
        self._path = np.vstack([self._path, base * np.cumprod(1 + rets, axis=0)])
        self._halted = np.vstack([self._halted, halted])
        self._pos.update({d: len(self._days) + i for i, d in enumerate(days)})
        self._days.extend(days)

    def _multiple(self, day: dt.date) -> np.ndarray:
        """Shares per original share on `day` (the product of the factors of the splits up to it), the ETF last."""
        out = np.ones(self.n + 1)
        for split, col in zip(self.splits, self._split_cols, strict=True):
            if split.day <= day:
                out[col] *= split.factor
        return out

    def _frame(self, i: int, day: dt.date) -> pd.DataFrame:
        t, s = self._traits, _day_shocks(self.seed, day, self.n)
        # the path is the value of one original share; a row's prices are per share of the day
        multiple = self._multiple(day)
        close = np.maximum(np.round(self._path[i] / multiple), 50)
        if i:
            before = self._multiple(self._days[i - 1])
            prev = np.maximum(np.round(self._path[i - 1] / before), 50)
            # KRX's base price: the previous close, divided by the factor on a split's day
            base = np.where(multiple != before, np.round(prev * before / multiple), prev)
        else:
            base = close
        # listing and delisting are offsets in trading days from the market's first day
        alive = np.r_[(t["listed"] <= i) & (i < t["delisted"]), True]
        halted = np.r_[self._halted[i], False]
        # a listing day has no previous close of its own
        first_day = np.r_[t["listed"] == i, i == 0]
        base = np.where(first_day, close, base)
        open_ = np.round(base * (1 + 0.3 * (close / base - 1) + 0.002 * s["open"]))
        high = np.maximum(open_, close) * (1 + 0.01 * np.abs(s["high"]))
        low = np.minimum(open_, close) * (1 - 0.01 * np.abs(s["low"]))
        volume = np.round(np.r_[t["volume"], 4e6] * np.exp(0.4 * s["volume"]) * multiple).astype(np.int64)
        frame = pd.DataFrame({
            "date": day,
            "ticker": np.append(t["ticker"], ETF_TICKER),
            "name": np.append(t["name"], "KODEX 200"),
            "market": np.append(t["market"], "ETF"),
            "open": np.round(open_).astype(np.int64),
            "high": np.round(high).astype(np.int64),
            "low": np.round(low).astype(np.int64),
            "close": close.astype(np.int64),
            "volume": volume,
            "value": (volume * close).astype(np.int64),
            "change_pct": np.round((close / base - 1) * 100, 2),
            "base": base.astype(np.int64),
            "market_cap": (close * np.r_[t["shares"], 1e8] * multiple).astype(np.int64),
            "halted": halted,
        })
        frame.loc[halted, ["open", "high", "low", "volume", "value"]] = 0
        return frame[alive].reset_index(drop=True)


def _traits(seed: int, n: int) -> dict[str, np.ndarray]:
    """Per-ticker traits, each drawn from a generator of its own so ticker k is the same whatever n is."""
    rows = []
    used = {ETF_TICKER, *_SPLIT_TRAITS}
    planned = {v["k"]: {"ticker": code, **v} for code, v in _SPLIT_TRAITS.items()}
    for k in range(n):
        rng = np.random.default_rng([seed, 1, k])
        code = int(rng.integers(1, 99999)) * 10 if k % 40 else int(rng.integers(1, 9999)) * 100
        ticker = f"{code:06d}"[-6:]
        if k % 97 == 13:  # a few tickers carry a letter, like 00104K
            ticker = ticker[:5] + "KLMN"[k % 4]
        while ticker in used:
            ticker = f"{(int(ticker[:5]) + 1) % 100000:05d}{ticker[5]}"
        used.add(ticker)
        listed = rng.random() < 0.12
        delisted = rng.random() < 0.05
        rows.append({
            "ticker": ticker,
            "name": f"{_PREFIX[k % len(_PREFIX)]}{_SUFFIX[(k // len(_PREFIX)) % len(_SUFFIX)]}{k // 144 or ''}",
            "market": "KOSPI" if rng.random() < 0.4 else "KOSDAQ",
            "drift": rng.normal(0.0002, 0.0006),
            "beta": rng.uniform(0.5, 1.5),
            "vol": rng.uniform(0.008, 0.03),
            "start_price": float(np.exp(rng.uniform(np.log(1000), np.log(300000)))),
            "volume": float(np.exp(rng.uniform(np.log(2e4), np.log(5e6)))),
            "shares": float(np.exp(rng.uniform(np.log(1e6), np.log(1e8)))),
            "listed": int(rng.integers(60, 1500)) if listed else 0,
            "delisted": int(rng.integers(300, 2500)) if delisted else 10**6,
        })
        if k in planned:
            rows[-1].update({key: planned[k][key] for key in ("ticker", "start_price", "volume", "drift", "vol")},
                            listed=0, delisted=10**6)
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


def _day_shocks(seed: int, day: dt.date, n: int) -> dict:
    rng = np.random.default_rng([seed, 2, day.toordinal()])
    # draw for MAX_TICKERS so ticker k's shock does not depend on how many tickers the market has
    return {
        "market": rng.normal(0.0005, 0.011),
        "etf": rng.normal(),
        "idio": rng.standard_normal(MAX_TICKERS)[:n],
        "halted": (rng.random(MAX_TICKERS) < 0.002)[:n],
        "open": rng.standard_normal(MAX_TICKERS + 1)[: n + 1],
        "high": rng.standard_normal(MAX_TICKERS + 1)[: n + 1],
        "low": rng.standard_normal(MAX_TICKERS + 1)[: n + 1],
        "volume": rng.standard_normal(MAX_TICKERS + 1)[: n + 1],
    }
