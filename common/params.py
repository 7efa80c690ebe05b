"""The strategy's parameters and its schedule: what `configs/strategies.yaml` says, resolved and checked, and on
which KRX sessions the strategy acts (common.strategy re-exports these names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from common import config
from common.home import Home

NAME = "momentum_topN_v1"

def default_params(home: Home | None = None) -> dict:
    """The strategy's parameters from the home's configs/strategies.yaml (the shipped file when it has none)."""
    return config.load("strategies", home)["strategies"][NAME]


def resolve_params(params: Mapping | None = None, base: Mapping | None = None, *, home: Home | None = None,
                   source: str = "<params>") -> dict:
    """Overrides merged into the config's parameters and validated (config.ConfigError names a bad key).

    Keys the overrides omit (benchmark, daily_limit_pct, rebalance_every_n, ...) come from the config file,
    so a partial dict such as the parity parameters is a complete run."""
    return config.check_strategy_params(dict(params or {}), base if base is not None else default_params(home),
                                        source)


def min_history(params: Mapping) -> int:
    """Trading days a ticker must have been listed (rows since its first close): default the longest lookback."""
    return int(params["filters"]["min_history_days"] or max(params["lookbacks"]))


def warmup_rows(params: Mapping, margin: int = 5) -> int:
    """Rows of history the strategy needs before its first full decision: the longest lookback, filter window
    or moving average in use (RSI's included: Wilder's needs about ten periods to settle), plus a margin."""
    need = [max(params["lookbacks"])]
    filters, regime, sell = params["filters"], params["regime"], params["sell_rules"]
    if filters["enabled"]:
        need += [filters["value_window"], min_history(params)]
    if regime["enabled"]:
        need.append(regime["sma_days"])
    if sell["enabled"]:
        need += [sell["trend_sma_days"], sell["rsi_days"] * 10]
    return int(max(need)) + margin


def schedule(days: pd.DatetimeIndex, params: Mapping, sessions: pd.DatetimeIndex | None = None,
             inception: Any = None) -> np.ndarray:
    """True on the rebalance days among `days`, judged with `sessions` (the KRX calendar's trading days; default
    `days` themselves, whose last day then never rebalances since its next session is unknown).

    month_end / week_end: the next session is in another calendar month / Monday-to-Sunday week. every_n: every
    n-th session counted from `inception` (the portfolio's first session; default the first of `days`)."""
    sessions = days if sessions is None else pd.DatetimeIndex(sessions)
    days = pd.DatetimeIndex(days)
    out = np.zeros(len(days), dtype=bool)
    if not len(days) or not len(sessions):
        return out
    rule = params["rebalance"]
    pos = sessions.searchsorted(days, side="right")  # the position of each day's next session
    has_next = pos < len(sessions)
    nxt = sessions[np.minimum(pos, len(sessions) - 1)]
    if rule == "month_end":
        def month(ix: pd.DatetimeIndex) -> np.ndarray:
            return ix.values.astype("datetime64[M]").astype(np.int64)

        out = has_next & (month(nxt) != month(days))
    elif rule == "week_end":
        def week(ix: pd.DatetimeIndex) -> np.ndarray:  # 1970-01-01 was a Thursday: +3 starts weeks on Mondays
            return (ix.values.astype("datetime64[D]").astype(np.int64) + 3) // 7

        out = has_next & (week(nxt) != week(days))
    elif rule == "every_n":
        n = int(params["rebalance_every_n"])
        start = sessions.searchsorted(pd.Timestamp(inception if inception is not None else days[0]))
        count = sessions.searchsorted(days) - start + 1  # the day's number among the sessions since inception
        out = (count >= 1) & (count % n == 0)
    else:
        raise ValueError(f"rebalance: expected month_end, week_end or every_n, got {rule!r}")
    return out


def next_rebalance(after: Any, params: Mapping, sessions: pd.DatetimeIndex, inception: Any = None) -> Any:
    """The first rebalance day after `after` among `sessions` (None when the calendar ends first)."""
    sessions = pd.DatetimeIndex(sessions)
    ahead = sessions[sessions.searchsorted(pd.Timestamp(after), side="right"):][:400]
    hit = np.flatnonzero(schedule(ahead, params, sessions, inception))
    return ahead[hit[0]].date() if len(hit) else None


def pick_weight(params: Mapping) -> float:
    """The target fraction of equity of each TopN pick."""
    core = sum(h["weight"] for h in params["core_holdings"])
    return max(params["invest_fraction"] - core, 0.0) / params["top_n"] if params["top_n"] else 0.0
