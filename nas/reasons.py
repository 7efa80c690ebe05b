"""Why: the scanner's sentences for each state and exclusion of a decision (the strategy decides, this explains).

`states(decision)` and `excluded(decision)` are the tables the scan result and the alert are made of.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from common.rules import (
    BUY,
    CUT_STOPLOSS,
    EXCLUSIONS,
    HOLD,
    HOLD_CORE,
    NONE,
    NOT_LISTED,
    OK,
    SELL_REPLACE,
    SELL_RSI,
    SELL_TREND,
    STATE_ORDER,
    STATES,
)
from common.strategy import Decision, min_history


def states(decision: Decision) -> pd.DataFrame:
    """One row per ticker with a state: index ticker; columns state, score, rank (None when unranked),
    reason, close, weight; in the order a reader acts on them (BUY, sells, HOLD_CORE, HOLD), then rank."""
    cols = np.flatnonzero(decision.state != NONE)
    order = {s: k for k, s in enumerate(STATE_ORDER)}
    cols = sorted(cols, key=lambda j: (order[int(decision.state[j])], decision.rank[j] == 0, decision.rank[j],
                                       str(decision.ctx.tickers[j])))
    recs = [{
        "ticker": str(decision.ctx.tickers[j]),
        "state": STATES[decision.state[j]],
        "score": None if np.isnan(decision.score[j]) else float(decision.score[j]),
        "rank": int(decision.rank[j]) or None,
        "reason": reason(decision, j),
        "close": None if np.isnan(decision.ctx.price[decision.row, j]) else float(decision.ctx.price[decision.row, j]),
        "weight": float(decision.weight[j]),
    } for j in cols]
    frame = pd.DataFrame(recs, columns=["ticker", "state", "score", "rank", "reason", "close", "weight"])
    return frame.set_index("ticker")


def excluded(decision: Decision) -> pd.DataFrame:
    """Tickers of the universe left out (listed by the row, not a candidate, no state): index ticker;
    columns code (EXCLUSIONS key) and reason (text). Not-yet-listed tickers are not part of it."""
    mask = (decision.exclusion != OK) & (decision.exclusion != NOT_LISTED) & (decision.state == NONE)
    cols = np.flatnonzero(mask)
    codes = decision.exclusion[cols]
    texts = np.array(exclusion_texts(decision.ctx.params), dtype=object)
    return pd.DataFrame({"code": np.array(EXCLUSIONS, dtype=object)[codes], "reason": texts[codes]},
                        index=pd.Index(decision.ctx.tickers[cols].astype(str), name="ticker"))


def partial_text(tickers: int, source: str = "Naver") -> str:
    """Why a partial day (common.store: KRX failed, a fallback source filled in a few tickers) buys nothing."""
    return f"partial data (KRX failed; {source} for {tickers} tickers): no new buys"


def is_partial(decision: Decision) -> bool:
    return decision.ctx.partial is not None and bool(decision.ctx.partial[decision.row])


def reason(decision: Decision, j: int) -> str:
    """Why ticker column j has its state, in a sentence a person acts on."""
    p, ctx, i = decision.ctx.params, decision.ctx, decision.row
    s, r, n = int(decision.state[j]), int(decision.rank[j]), p["top_n"]
    close = ctx.price[i, j]
    halted = ctx.halted is not None and ctx.halted[i, j]
    is_core = j in set(ctx.core.tolist())
    if s in (HOLD, HOLD_CORE) and is_partial(decision) and not halted and not np.isnan(close):
        return f"{partial_text(int(ctx.present[i].sum()))}; kept, not resized"
    if s == HOLD_CORE:
        if halted:
            return "core holding (halted today: kept)"
        w = decision.weight[j]
        if decision.rebalance and w == w:  # a rebalance day sets it back to its weight
            return f"core holding, kept at its {w:.0%} weight (sell rules do not apply)"
        return "core holding: sell rules do not apply"
    if s == BUY:
        return "core holding, not held" if is_core else f"new entry: rank {r} of the top {n}"
    if s == CUT_STOPLOSS:
        drop = (1 - close / decision.entry[j]) * 100
        return f"close {close:,.0f} is {drop:.1f}% below entry {decision.entry[j]:,.0f} " \
               f"(stop {p['sell_rules']['stop_loss_pct']:g}%)"
    if s == SELL_TREND:
        days = p["sell_rules"]["trend_sma_days"]
        return f"close {close:,.0f} under its {days}-day SMA {ctx.trend_sma(i, i + 1, np.array([j]))[0, 0]:,.0f}"
    if s == SELL_RSI:
        days = p["sell_rules"]["rsi_days"]
        return f"RSI{days} {ctx.rsi(i, i + 1, np.array([j]))[0, 0]:.1f} over {p['sell_rules']['rsi_overbought']:g}"
    if s == SELL_REPLACE:
        by = int(decision.replaced_by[j])
        where = f"rank {r}" if r else exclusion_texts(p)[decision.exclusion[j]]
        return f"{where}, outside the top {n}: slot taken by {ctx.tickers[by]} (rank {decision.rank[by]})"
    if s == HOLD:
        if halted:
            return "halted today: cannot trade, kept"
        if np.isnan(close):
            return "no price today: cannot trade, kept at its last close"
        if not decision.rebalance:
            return "held until the next rebalance" + (f" (rank {r} today)" if r else "")
        if r and r <= n:
            off = " (regime OFF: not resized)" if decision.regime == "OFF" else ""
            return f"rank {r}, still in the top {n}{off}"
        where = f"rank {r}" if r else exclusion_texts(p)[decision.exclusion[j]]
        return f"{where}, outside the top {n}: kept, no better candidate"
    return ""


def exclusion_texts(p: Mapping) -> list[str]:
    """The text of each exclusion code (rules.EXCLUSIONS)."""
    f = p["filters"]
    return ["", "not listed yet", "no price today (delisted or no row)", "halted",
        f"abnormal data (close <= 0 or a move beyond {p['daily_limit_pct']:g}%)",
        f"too little history (listed < {min_history(p)} trading days)",
        f"{f['value_window']}-day mean traded value under {f['min_avg_value']:,.0f} KRW",
        "score undefined (a close in the lookback is missing)"]
