"""The backtest engine: trades a strategy's decisions at the close of rebalance days, vectorised over tickers.

The engine knows no strategy rule: it builds `common.strategy.Indicators` once for the panel, asks
`common.strategy.decide` on each rebalance day (the scanner's very call) and `Indicators.sell_codes` for daily
sell checks, and turns target weights into trades. It loops over event days only (rebalance days, the last
trading day of a held ticker, a day a daily sell rule fires on a holding); between events shares are fixed and
equity is cash + the closes block x shares, one matrix product per stretch.

Accounting at the close of an event day e (prices: the close of e):
- V = cash + sum(shares x close) before trading (a held ticker without a close today: its last close);
- target shares = weight x V / close (floored to whole shares unless fractional_shares); weight NaN keeps the
  shares; a halted ticker or one without a close today is not traded;
- sells first, then buys; costs in basis points of traded value: commission on both sides, sell tax on stocks
  (ETFs in `is_etf` exempt), slippage on both sides, all paid from cash; when buys and their costs exceed the
  cash at hand every buy is scaled down by the same factor, so cash never goes negative;
- then a held ticker whose last close in the panel is today (and today is not the panel's last row) is sold at
  that close, halted or not: a delisting;
- equity[e] = cash + sum(shares x close[e]).
Before the first trade equity is initial_cash. With the parity parameters of issue 3 this is exactly that
definition (fee = commission x sum |target - current|, cash = V - sum(targets) - fee).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common import strategy

TRADE_COLUMNS = ["date", "ticker", "side", "shares", "price", "value", "commission", "tax", "slippage", "reason"]
POSITION_COLUMNS = ["ticker", "shares", "entry_date", "entry_price", "close", "value"]
DELISTED = "DELISTED"


@dataclass
class EngineResult:
    equity: pd.Series        # on the panel's index
    cash: pd.Series
    exposure: pd.Series      # invested value / equity
    trades: pd.DataFrame     # TRADE_COLUMNS; reason: the decision's state for the ticker, or DELISTED
    positions: pd.DataFrame  # final holdings: POSITION_COLUMNS
    params: dict             # the full parameters used (config defaults filled in)
    rebalances: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]))  # rebalance days run
    notes: list[str] = field(default_factory=list)  # what the strategy could not apply (e.g. no value panel)


def rebalance_rows(index: pd.DatetimeIndex, rule: str, every_n: int = 21) -> np.ndarray:
    """Row positions of the rebalance days; the last row never rebalances.

    month_end: rows whose next row is in another calendar month; week_end: rows whose next row is in another
    Monday-to-Sunday week (the last trading day of the week); every_n: every n-th row (rows n-1, 2n-1, ...)."""
    n = len(index)
    if n < 2:
        return np.array([], dtype=np.int64)
    days = index.values.astype("datetime64[D]").astype(np.int64)
    if rule == "month_end":
        key = index.year.to_numpy() * 12 + index.month.to_numpy()
    elif rule == "week_end":
        key = (days + 3) // 7  # 1970-01-01 was a Thursday: +3 puts week boundaries on Mondays
    elif rule == "every_n":
        rows = np.arange(every_n - 1, n - 1, every_n, dtype=np.int64)
        return rows
    else:
        raise ValueError(f"rebalance: expected month_end, week_end or every_n, got {rule!r}")
    return np.flatnonzero(key[1:] != key[:-1]).astype(np.int64)


class _Book:
    """Cash, shares, entry prices and the trade log during one run."""

    def __init__(self, ctx: strategy.Indicators, is_etf: np.ndarray):
        p = ctx.params
        self.ctx, self.close = ctx, ctx.close
        n = len(ctx.tickers)
        self.cash = float(p["initial_cash"])
        self.shares = np.zeros(n)
        self.entry = np.full(n, np.nan)
        self.entry_row = np.full(n, -1, dtype=np.int64)
        self.last_px = np.full(n, np.nan)
        self.comm, self.tax, self.slip = p["commission_bps"] / 1e4, p["sell_tax_bps"] / 1e4, p["slippage_bps"] / 1e4
        self.fractional = bool(p["fractional_shares"])
        self.is_etf = is_etf
        self.log: list[tuple] = []

    def held(self) -> np.ndarray:
        return np.flatnonzero(self.shares != 0)

    def prices(self, e: int, cols: np.ndarray) -> np.ndarray:
        px = self.close[e, cols]
        return np.where(np.isfinite(px), px, self.last_px[cols])

    def value(self, e: int) -> tuple[float, float]:
        """(equity, invested value) at the close of row e."""
        cols = self.held()
        invested = float(self.prices(e, cols) @ self.shares[cols]) if len(cols) else 0.0
        return self.cash + invested, invested

    def mark(self, a: int, b: int) -> np.ndarray:
        """Invested value on rows a..b-1 (shares fixed): the closes block x shares, gaps carried forward."""
        cols = self.held()
        if not len(cols) or b <= a:
            return np.zeros(max(b - a, 0))
        block = self.close[a:b, cols]
        gaps = ~np.isfinite(block)
        if gaps.any():
            seeded = np.vstack([self.last_px[cols], block])
            rows = np.where(np.isfinite(seeded), np.arange(len(seeded))[:, None], 0)
            np.maximum.accumulate(rows, axis=0, out=rows)
            block = seeded[rows, np.arange(len(cols))][1:]
        self.last_px[cols] = block[-1]
        return block @ self.shares[cols]

    def execute(self, e: int, cols: np.ndarray, target: np.ndarray, reasons: np.ndarray) -> None:
        """Trade `cols` to `target` shares at the close of row e: sells, then buys scaled to the cash."""
        px = self.close[e, cols]
        delta = target - self.shares[cols]
        sell, buy = delta < 0, delta > 0
        sell_value = -delta[sell] * px[sell]
        sell_tax = np.where(self.is_etf[cols[sell]], 0.0, self.tax)
        avail = self.cash + float(np.sum(sell_value * (1 - self.comm - self.slip - sell_tax)))
        buy_value = delta[buy] * px[buy]
        need = float(np.sum(buy_value)) * (1 + self.comm + self.slip)
        if need > avail:  # never reached by the parity run; keeps cash >= 0 otherwise
            scale = max(avail, 0.0) / need * (1 - 1e-12)
            scaled = delta[buy] * scale
            delta[buy] = scaled if self.fractional else np.floor(scaled)
            buy_value = delta[buy] * px[buy]
        self.cash = avail - float(np.sum(buy_value)) * (1 + self.comm + self.slip)
        traded = delta != 0
        if not traded.any():
            return
        new = self.shares[cols] + delta
        opened = traded & (self.shares[cols] == 0) & (new > 0)
        self.entry[cols[opened]] = px[opened]
        self.entry_row[cols[opened]] = e
        closed = traded & (new == 0)
        self.entry[cols[closed]] = np.nan
        self.entry_row[cols[closed]] = -1
        self.shares[cols] = new
        self.last_px[cols] = np.where(np.isfinite(px), px, self.last_px[cols])
        c, d, p, r = cols[traded], delta[traded], px[traded], reasons[traded]
        value = np.abs(d) * p
        is_sell = d < 0
        self.log.append((np.full(len(c), e), c, is_sell, np.abs(d), p, value, value * self.comm,
                         np.where(is_sell & ~self.is_etf[c], value * self.tax, 0.0), value * self.slip, r))

    def trades(self, index: pd.DatetimeIndex, tickers: pd.Index) -> pd.DataFrame:
        if not self.log:
            return pd.DataFrame({k: pd.Series(dtype=t) for k, t in zip(TRADE_COLUMNS, (
                "datetime64[ns]", object, object, float, float, float, float, float, float, object), strict=True)})
        parts = [np.concatenate(x) for x in zip(*self.log, strict=True)]
        rows, cols, is_sell, shares, price, value, comm, tax, slip, reason = parts
        return pd.DataFrame({
            "date": index[rows], "ticker": np.asarray(tickers.astype(str))[cols],
            "side": np.where(is_sell, "SELL", "BUY"), "shares": shares, "price": price, "value": value,
            "commission": comm, "tax": tax, "slippage": slip, "reason": reason,
        })

    def positions(self, index: pd.DatetimeIndex, tickers: pd.Index) -> pd.DataFrame:
        cols = self.held()
        px = self.last_px[cols]
        return pd.DataFrame({
            "ticker": np.asarray(tickers.astype(str))[cols], "shares": self.shares[cols],
            "entry_date": index[self.entry_row[cols]] if len(cols) else pd.DatetimeIndex([]),
            "entry_price": self.entry[cols], "close": px, "value": px * self.shares[cols],
        }, columns=POSITION_COLUMNS)


def run(panels: Mapping[str, pd.DataFrame], params: Mapping, *, is_etf: pd.Series | None = None,
        start: pd.Timestamp | None = None, progress: Callable[[], None] | None = None) -> EngineResult:
    """Backtest the strategy on `panels` ("close" required; "halted", "value" optional; dates x tickers).

    params: the strategy's parameters or overrides of them (config defaults fill the rest; validated).
    is_etf: ticker -> True for ETFs (exempt from the sell tax); None: every ticker is taxed as a stock.
    start: the first day the strategy may trade; earlier rows only warm the indicators up (equity stays at
    initial_cash). None: from the first row.
    progress: called once per rebalance day run."""
    ctx = strategy.Indicators.build(panels, params)
    p = ctx.params
    index, tickers = ctx.index, ctx.tickers
    n_rows = len(index)
    etf = np.zeros(len(tickers), dtype=bool)
    if is_etf is not None:
        etf = is_etf.reindex(tickers.astype(str), fill_value=False).to_numpy(dtype=bool)
    book = _Book(ctx, etf)
    reb = rebalance_rows(index, p["rebalance"], p["rebalance_every_n"])
    if start is not None:
        reb = reb[reb >= index.searchsorted(pd.Timestamp(start))]
    is_reb = np.zeros(n_rows, dtype=bool)
    is_reb[reb] = True
    # a ticker's last close before the panel's end is its delisting day
    delist = np.where(ctx.last_row < n_rows - 1, ctx.last_row, n_rows)
    daily = p["sell_rules"]["enabled"] and p["sell_rules"]["daily"]
    is_core = np.zeros(len(tickers), dtype=bool)
    is_core[ctx.core] = True
    halted = ctx.halted

    equity = np.empty(n_rows)
    cash = np.empty(n_rows)
    invested = np.empty(n_rows)
    done_reb = []
    t = -1
    while t < n_rows - 1:
        held = book.held()
        k = np.searchsorted(reb, t, side="right")
        nxt = int(reb[k]) if k < len(reb) else n_rows
        if len(held):
            due = delist[held]
            due = due[due > t]
            if len(due):
                nxt = min(nxt, int(due.min()))
        if daily and len(held):
            nc = held[~is_core[held]]
            b = min(nxt, n_rows - 1) + 1
            if len(nc) and b > t + 1:
                codes = ctx.sell_codes(t + 1, b, nc, book.entry[nc])
                if halted is not None:
                    codes[halted[t + 1:b][:, nc]] = strategy.NONE
                hit = np.flatnonzero(codes.any(axis=1))
                if len(hit):
                    nxt = min(nxt, t + 1 + int(hit[0]))
        end = min(nxt, n_rows)
        quiet = book.mark(t + 1, end)
        equity[t + 1:end] = book.cash + quiet
        cash[t + 1:end] = book.cash
        invested[t + 1:end] = quiet
        if nxt >= n_rows:
            break
        e = nxt
        held = book.held()
        book.last_px[held] = book.prices(e, held)
        if is_reb[e]:
            _rebalance(book, ctx, e)
            done_reb.append(e)
            if progress is not None:
                progress()
        elif daily:
            _daily_sells(book, ctx, e, is_core)
        held = book.held()
        gone = held[delist[held] == e]
        if len(gone):
            book.execute(e, gone, np.zeros(len(gone)), np.full(len(gone), DELISTED, dtype=object))
        equity[e], invested[e] = book.value(e)
        cash[e] = book.cash
        t = e

    with np.errstate(invalid="ignore", divide="ignore"):
        exposure = np.where(equity != 0, invested / equity, 0.0)
    return EngineResult(
        equity=pd.Series(equity, index=index, name="equity"),
        cash=pd.Series(cash, index=index, name="cash"),
        exposure=pd.Series(exposure, index=index, name="exposure"),
        trades=book.trades(index, tickers),
        positions=book.positions(index, tickers),
        params=p,
        rebalances=index[np.array(done_reb, dtype=np.int64)],
        notes=list(ctx.notes),
    )


def _rebalance(book: _Book, ctx: strategy.Indicators, e: int) -> None:
    held = book.held()
    names = np.asarray(ctx.tickers.astype(str))
    decision = strategy.decide(ctx, e, dict(zip(names[held], book.entry[held], strict=True)))
    w = decision.weight
    cols = np.flatnonzero(((w != 0) & ~np.isnan(w)) | (book.shares != 0))
    if not len(cols):
        return
    V, _ = book.value(e)
    px = ctx.close[e, cols]
    tradable = np.isfinite(px)
    if ctx.halted is not None:
        tradable &= ~ctx.halted[e, cols]
    act = tradable & ~np.isnan(w[cols])
    target = book.shares[cols].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        want = w[cols] * V / px
    if not book.fractional:
        want = np.floor(want)
    target[act] = want[act]
    reasons = np.array(strategy.STATES, dtype=object)[decision.state[cols]]
    book.execute(e, cols, target, reasons)


def _daily_sells(book: _Book, ctx: strategy.Indicators, e: int, is_core: np.ndarray) -> None:
    held = book.held()
    nc = held[~is_core[held]]
    if not len(nc):
        return
    codes = ctx.sell_codes(e, e + 1, nc, book.entry[nc])[0]
    ok = codes != strategy.NONE
    ok &= np.isfinite(ctx.close[e, nc])
    if ctx.halted is not None:
        ok &= ~ctx.halted[e, nc]
    if ok.any():
        book.execute(e, nc[ok], np.zeros(int(ok.sum())), np.array(strategy.STATES, dtype=object)[codes[ok]])
