"""The engine: steps a book through trading sessions with the strategy's decisions, vectorised over tickers.

Both uses of the strategy run here, so what the user is alerted on is what was backtested: `krx backtest` steps a
fresh book through a window, and `krx scan --apply` steps the saved model portfolio through the sessions since
its last day. The engine knows no strategy rule: it asks `common.strategy` for the schedule (`schedule`), the
decision (`decide_cols`: `decide` for the book's columns) and whether and where it sells between rebalances
(`Indicators.sells_between_rebalances`, `Indicators.daily_sells`), and `common.book.Book` turns target weights
into trades.

A session e, in this order (only sessions where something can happen are visited; between them the shares are
fixed and equity is cash + closes x shares, one matrix product per stretch):
1. corporate actions effective on e multiply the held shares (and the orders waiting) by their factor;
2. orders decided at the previous close fill at e's open (execution next_open); a ticker without an open,
   halted or absent that day is not traded;
3. a holding absent from e's market data is sold at its last close (DELISTED): nothing looks at later rows;
4. on a rebalance day, or when a daily sell rule fires, the strategy decides at e's close; the orders are sized
   at that close (weight x equity / close, whole shares) and fill at the next open (next_open) or at once at
   the close (close);
5. equity[e] = cash + shares x closes of e (a holding without a price that day: its last good close).
Before the window's first session equity is the book's cash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common import strategy
from common.book import POSITION_COLUMNS, TRADE_COLUMNS, Book
from common.errors import AlertorError
from common.rules import STATES

__all__ = ["POSITION_COLUMNS", "TRADE_COLUMNS", "EngineError", "EngineResult", "run"]
_STATE_NAMES = np.array(STATES, dtype=object)


class EngineError(AlertorError, ValueError):
    """A run that would report a wrong number (equity not finite): names the day and the ticker."""


@dataclass
class EngineResult:
    equity: pd.Series        # on the panel's index
    cash: pd.Series
    exposure: pd.Series      # invested value / equity
    trades: pd.DataFrame     # TRADE_COLUMNS; reason: the decision's state for the ticker, or DELISTED
    positions: pd.DataFrame  # final holdings: POSITION_COLUMNS
    params: dict             # the full parameters used (config defaults filled in)
    book: Book               # the book after the last row (pending orders included)
    rebalances: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]))  # rebalance days run
    decision: strategy.Decision | None = None  # the strategy's decision at the last row's close
    notes: list[str] = field(default_factory=list)  # what the strategy could not apply, prices missing, ...


def run(panels: Mapping[str, pd.DataFrame], params: Mapping, *, markets: pd.Series | None = None,
        start: pd.Timestamp | None = None, sessions: pd.DatetimeIndex | None = None,
        book_state: Mapping[str, Any] | None = None, progress: Callable[[], None] | None = None,
        partial: pd.Series | None = None) -> EngineResult:
    """Step a book through `panels` ("close" required; "open", "base", "halted", "value" optional; dates x
    tickers) with the strategy's parameters (or overrides of them: config defaults fill the rest).

    markets: ticker -> market (KOSPI, KOSDAQ, KONEX, ETF) for the sell tax; None: every ticker pays the table's
    highest rate. start: the first session the book trades; earlier rows only warm the indicators up.
    sessions: the KRX calendar's trading days, for the schedule and settlement dates (default: the panel's rows).
    book_state: a saved book (common.book.check_state) to continue from instead of a fresh one in cash.
    progress: called once per rebalance day run. partial: bool per date, the partial days (no new buys)."""
    if book_state is not None:
        panels = _with_columns(panels, [pos["ticker"] for pos in book_state["positions"]])
    ctx = strategy.Indicators.build(panels, params, partial=partial)
    p, index = ctx.params, ctx.index
    if p["execution"] == "next_open" and ctx.open is None:
        raise ValueError("execution: next_open fills at the next open, and the panel has no open prices "
                         "(load the 'open' field, or set execution: close)")
    n = len(index)
    mk = None if markets is None else markets.reindex(ctx.tickers.astype(str)).fillna("").to_numpy(dtype=object)
    first = int(index.searchsorted(pd.Timestamp(start))) if start is not None else 0
    if book_state is not None:
        book, _ = Book.from_state(book_state, ctx.tickers, p, mk)
        for j in book.held():  # the store's last good close before the first session is the one to trust
            seen = ctx.price[:first, j]
            seen = seen[np.isfinite(seen)]
            if len(seen):
                book.last_px[j] = seen[-1]
    else:
        book = Book(ctx.tickers, p, mk)
        book.inception = index[first].date() if first < n else None
    sessions = index if sessions is None else pd.DatetimeIndex(sessions)
    reb = strategy.schedule(index, p, sessions, book.inception)
    reb[:first] = False
    ctx.prepare(np.flatnonzero(reb))
    run_ = _Run(ctx, book, reb, _settlement(index, sessions), progress)
    run_.equity[:first] = book.cash if not len(book.held()) else np.nan
    run_.loop(first)
    decision = run_.decision
    if decision is None and n:
        held = book.held()
        decision = strategy.decide_cols(ctx, n - 1, held, book.entry[held], rebalance=bool(reb[-1]))
    notes = list(ctx.notes) + run_.notes()
    with np.errstate(invalid="ignore", divide="ignore"):
        exposure = np.where(run_.equity != 0, run_.invested / run_.equity, 0.0)
    return EngineResult(
        equity=pd.Series(run_.equity, index=index, name="equity"),
        cash=pd.Series(run_.cash, index=index, name="cash"),
        exposure=pd.Series(exposure, index=index, name="exposure"),
        trades=book.trades(), positions=book.positions(), params=p, book=book,
        rebalances=index[np.array(run_.rebalanced, dtype=np.int64)], decision=decision, notes=notes,
    )


class _Run:
    """One pass of the engine over the rows of a panel."""

    def __init__(self, ctx: strategy.Indicators, book: Book, reb: np.ndarray, settle: np.ndarray,
                 progress: Callable[[], None] | None):
        self.ctx, self.book, self.reb, self.settle, self.progress = ctx, book, reb, settle, progress
        self.days = ctx.index.values.astype("datetime64[D]")
        n = len(ctx.index)
        self.equity, self.cash, self.invested = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        self.rebalanced: list[int] = []
        self.decision: strategy.Decision | None = None
        self.daily = ctx.sells_between_rebalances  # the strategy's to say; when not, no row is checked for them
        self.next_open = ctx.params["execution"] == "next_open"
        self.unpriced: set[int] = set()  # holdings valued at an old close on some day

    def loop(self, first: int) -> None:
        n = len(self.ctx.index)
        reb_rows = np.flatnonzero(self.reb)
        t = first - 1
        while t < n - 1:
            k = np.searchsorted(reb_rows, t, side="right")
            nxt = self._next_event(t, int(reb_rows[k]) if k < len(reb_rows) else n)
            self._quiet(t + 1, nxt)
            if nxt >= n:
                break
            self._session(nxt)
            t = nxt

    def _next_event(self, t: int, nxt: int) -> int:
        """The first row after t where the book can change: a rebalance, orders to fill, a corporate action or
        an absence of a holding, a daily sell."""
        book, ctx = self.book, self.ctx
        if book.pending:
            return t + 1
        held = book.held()
        if not len(held) or nxt <= t + 1:
            return nxt
        a, b = t + 1, min(nxt, ctx.next_action(t, held))
        gone = ctx.absent(a, b, held).any(axis=1)
        if gone.any():
            b = a + int(np.argmax(gone))
        if self.daily and b > a:
            sells = ctx.daily_sells(a, b, held, book.entry[held]).any(axis=1)
            if sells.any():
                b = a + int(np.argmax(sells))
        return b

    def _quiet(self, a: int, b: int) -> None:
        """Rows a..b-1 where nothing trades: cash plus the fixed shares at each close."""
        b = min(b, len(self.ctx.index))
        if b <= a:
            return
        invested, gaps = self.book.mark(self.ctx.price[a:b])
        self.unpriced |= gaps
        equity = self.book.cash + invested
        self.equity[a:b] = equity
        self.cash[a:b] = self.book.cash
        self.invested[a:b] = invested
        if not np.isfinite(equity).all():
            self._fail(a + int(np.argmin(np.isfinite(equity))))

    def _session(self, e: int) -> None:
        ctx, book = self.ctx, self.book
        day, settle = self.days[e].item(), self.settle[e].item()  # datetime.date, converted on event rows only
        factors = ctx.factors(e)
        if factors is not None:
            book.corporate_actions(day, factors)
        if book.pending:
            can_open = ~ctx.absent(e, e + 1, slice(None))[0] & (~ctx.halted[e] if ctx.halted is not None else True)
            book.fill_pending(day, settle, ctx.open_at(e), can_open)
        held = book.held()
        gone = ctx.absent(e, e + 1, held)[0]
        if gone.any():
            book.delist(day, settle, held[gone])
            held = book.held()
        px = ctx.price[e, held]
        priced = np.isfinite(px)
        if priced.all():
            book.last_px[held] = px
        else:
            book.last_px[held[priced]] = px[priced]
            self.unpriced.update(held[~priced].tolist())
        reb = bool(self.reb[e])
        if reb or (self.daily and bool(ctx.daily_sells(e, e + 1, held, book.entry[held]).any())):
            decision = strategy.decide_cols(ctx, e, held, book.entry[held], rebalance=reb)
            if e == len(ctx.index) - 1:
                self.decision = decision
            cols, target, codes = book.orders(decision.weight, decision.state, ctx.price[e], decision.tradable)
            reasons = _STATE_NAMES[codes]
            if self.next_open:
                book.pending = {int(j): (float(q), str(r)) for j, q, r in zip(cols, target, reasons, strict=True)}
                book.pending_day = day if book.pending else None
            else:
                book.execute(day, settle, cols, target, ctx.price[e], reasons)
            if reb:
                self.rebalanced.append(e)
                if self.progress is not None:
                    self.progress()
        self.equity[e], self.invested[e] = book.value(ctx.price[e])
        self.cash[e] = book.cash
        if not np.isfinite(self.equity[e]):
            self._fail(e)

    def _fail(self, e: int) -> None:
        book, ctx = self.book, self.ctx
        cols = book.held()
        px = np.where(np.isfinite(ctx.price[e, cols]), ctx.price[e, cols], book.last_px[cols])
        with np.errstate(over="ignore", invalid="ignore"):
            bad = cols[~np.isfinite(px * book.shares[cols])]
        who = ", ".join(f"{book.tickers[j]} ({book.shares[j]:g} shares at {px[list(cols).index(j)]:g})"
                        for j in bad[:3]) or f"cash {book.cash:g}"
        raise EngineError(f"equity is not a finite number on {ctx.index[e].date()}: {who}; the run is refused "
                          "rather than reported wrong (check that ticker's prices in the store)")

    def notes(self) -> list[str]:
        out = []
        if self.unpriced:
            names = ", ".join(sorted(self.book.tickers[j] for j in self.unpriced))
            out.append(f"held without a price on some days (a close of 0 or below, or none): {names}; valued at "
                       "their last good close and not traded on those days")
        for a in self.book.actions:
            out.append(f"corporate action {a['date']} {a['ticker']}: factor {a['factor']:g}, shares "
                       f"{a['shares_before']:,.0f} -> {a['shares_after']:,.0f}")
        if self.book.pending:
            names = ", ".join(self.book.tickers[j] for j in sorted(self.book.pending))
            out.append(f"orders decided on the last day fill at the next open, after the window: {names}")
        return out


def _settlement(index: pd.DatetimeIndex, sessions: pd.DatetimeIndex) -> np.ndarray:
    """Each row's settlement date (T+2 sessions, datetime64[D]): the sell tax is the rate of the day a sell
    settles."""
    pos = sessions.searchsorted(index) + 2
    inside = pos < len(sessions)
    out = np.busday_offset(index.values.astype("datetime64[D]"), 2, roll="forward")
    out[inside] = sessions.values[pos[inside]].astype("datetime64[D]")
    return out


def _with_columns(panels: Mapping[str, pd.DataFrame], tickers: list[str]) -> dict[str, pd.DataFrame]:
    """The panels with a column for each of `tickers` (a held ticker the window never saw: absent every day)."""
    missing = [t for t in tickers if t not in panels["close"].columns]
    if not missing:
        return dict(panels)
    out = {}
    for name, frame in panels.items():
        cols = frame.columns.union(pd.Index(missing))
        out[name] = frame.reindex(columns=cols, fill_value=False if name == "halted" else np.nan)
    return out
