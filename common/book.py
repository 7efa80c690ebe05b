"""The book: cash, whole shares, entry prices and the orders waiting for the next open, and every way they change.

One book serves both sides: the backtest engine steps a fresh one through a window, and the scanner keeps the
model portfolio (state/portfolio.json) as a saved book that the same engine steps one session further each day.
That is why following the applied alerts gives exactly the backtest's trades.

Money follows KRX: shares are real shares at raw prices (a corporate action multiplies them by its factor on
its day, the position's value unchanged; a fraction of a share left over is paid out in cash at the base
price); costs are basis points of traded value: commission on both sides, slippage on both sides, and on
sells the securities transaction tax of the sell's settlement date (T+2) and the ticker's market (ETFs exempt).
Sells go first; when the buys and their costs exceed the cash at hand, every buy is scaled down by one factor,
so cash never goes negative.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from common import formats
from common.errors import AlertorError
from common.schemas import is_date

TRADE_COLUMNS = ["date", "ticker", "side", "shares", "price", "value", "commission", "tax", "slippage", "reason"]
POSITION_COLUMNS = ["ticker", "shares", "entry_date", "entry_price", "close", "value"]
DELISTED = "DELISTED"
ETF = "ETF"
STATE_SCHEMA = formats.PORTFOLIO
_SIDES = np.array(["BUY", "SELL"], dtype=object)


class BookStateError(AlertorError, ValueError):
    """A saved book (the model portfolio) that cannot be read: names the field and what was expected."""


class TaxTable:
    """The securities transaction tax by settlement date and market, in basis points of the sell value.

    `table`: rows {from: date, KOSPI: bps, KOSDAQ: bps, KONEX: bps} sorted by `from`; a row holds from its date
    until the next row's. ETFs pay nothing; a market the row does not name pays the row's highest rate."""

    def __init__(self, table: Sequence[Mapping[str, Any]], markets: np.ndarray):
        self.rows = list(table)
        self.starts = np.array([np.datetime64(pd.Timestamp(r["from"]).date(), "D") for r in self.rows],
                               dtype="datetime64[D]")
        self.markets = markets
        self._cache: dict[int, np.ndarray] = {}
        self._row_of: dict[Any, int] = {}  # settlement day -> row of the table

    def bps(self, day: Any) -> np.ndarray:
        """Rates per column for a sell settling on `day`."""
        if not len(self.starts):
            k = -1
        elif day in self._row_of:
            k = self._row_of[day]
        else:
            when = np.datetime64(day if type(day) is dt.date else pd.Timestamp(day).date(), "D")
            k = self._row_of[day] = int(np.searchsorted(self.starts, when, side="right")) - 1
        if k not in self._cache:
            if k < 0:
                rates = np.zeros(len(self.markets))
            else:  # one rate per distinct market, then spread over the columns
                row = {m: float(v) for m, v in self.rows[k].items() if m != "from"}
                top = max(row.values(), default=0.0)
                codes, names = pd.factorize(pd.Index(self.markets, dtype=object))
                per = np.array([0.0 if m == ETF else row.get(m, top) for m in names] + [top])
                rates = per[codes]  # code -1 (a missing market) takes the last entry: the highest rate
            self._cache[k] = rates
        return self._cache[k]


class Book:
    """Cash, shares and entries over the columns `tickers` of one panel. The shares change only through the
    methods below (they keep the list of held columns that the engine asks for several times a session)."""

    def __init__(self, tickers: pd.Index, params: Mapping[str, Any], markets: np.ndarray | None = None):
        n = len(tickers)
        self.tickers = np.asarray(pd.Index(tickers).astype(str), dtype=object)
        self.cash = float(params["initial_cash"])
        self.shares = np.zeros(n)
        self._held: np.ndarray | None = None                     # held columns, None when shares changed
        self.entry = np.full(n, np.nan)                          # raw price of the entry, in today's share basis
        self.entry_day = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
        self.last_px = np.full(n, np.nan)                        # last good close
        self.pending: dict[int, tuple[float, str]] = {}         # column -> (target shares, reason) for the next open
        self.pending_day: dt.date | None = None                  # the day those orders were decided
        self.inception: dt.date | None = None                    # the book's first session
        self.comm, self.slip = params["commission_bps"] / 1e4, params["slippage_bps"] / 1e4
        self.fractional = bool(params["fractional_shares"])
        markets = np.full(n, "", dtype=object) if markets is None else np.asarray(markets, dtype=object)
        self.is_etf = markets == ETF
        self.tax = TaxTable(params["sell_tax"], markets)
        self.log: list[tuple] = []  # per execution: (day, columns, signed shares, prices, reasons, sell tax rates)
        self.actions: list[dict] = []                            # corporate actions applied to holdings

    # --- reading

    def held(self) -> np.ndarray:
        """The held columns, ascending (read-only)."""
        if self._held is None:
            self._held = (self.shares != 0).nonzero()[0]
            self._held.flags.writeable = False
        return self._held

    def value(self, price: np.ndarray) -> tuple[float, float]:
        """(equity, invested value) with today's prices (a holding without one: its last good close)."""
        cols = self.held()
        if not len(cols):
            return self.cash, 0.0
        px = price[cols]
        finite = np.isfinite(px)
        if not finite.all():
            px = np.where(finite, px, self.last_px[cols])
        invested = float(px @ self.shares[cols])
        return self.cash + invested, invested

    def mark(self, block: np.ndarray) -> tuple[np.ndarray, set[int]]:
        """Invested value on each row of `block` (today's prices, rows x all columns) with the shares fixed; a
        holding without a price on a row is valued at its last good close. Returns (values, the columns that
        lacked a price on some row) and carries the last good closes forward."""
        cols = self.held()
        if not len(cols) or not len(block):
            return np.zeros(len(block)), set()
        sub = block[:, cols]
        finite = np.isfinite(sub)
        if finite.all():  # every holding priced on every row
            self.last_px[cols] = sub[-1]
            with np.errstate(over="ignore", invalid="ignore"):
                return sub @ self.shares[cols], set()
        gaps = ~finite
        if gaps.any():
            seeded = np.vstack([self.last_px[cols], sub])
            rows = np.where(np.isfinite(seeded), np.arange(len(seeded))[:, None], 0)
            np.maximum.accumulate(rows, axis=0, out=rows)
            sub = seeded[rows, np.arange(len(cols))][1:]
        self.last_px[cols] = np.where(np.isfinite(sub[-1]), sub[-1], self.last_px[cols])
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught by the engine, with its day
            values = sub @ self.shares[cols]
        return values, set(cols[gaps.any(axis=0)].tolist())

    # --- changes

    def corporate_actions(self, day: dt.date, factor: np.ndarray) -> None:
        """Apply the day's corporate actions to the holdings and to the orders waiting for today's open."""
        cols = self.held()
        hit = cols[factor[cols] != 1.0]
        for j in hit:
            f = float(factor[j])
            before = self.shares[j]
            new = before * f
            whole = new if self.fractional else np.floor(new + 1e-9)
            base = self.last_px[j] / f
            self.cash += (new - whole) * base  # the fraction of a share KRX pays out
            self.shares[j] = whole
            self._held = None
            self.entry[j] /= f
            self.last_px[j] = base
            self.actions.append({"date": day.isoformat(), "ticker": self.tickers[j], "factor": f,
                                 "shares_before": float(before), "shares_after": float(whole)})
        for j, (target, reason) in list(self.pending.items()):
            if factor[j] != 1.0:
                t = target * float(factor[j])
                self.pending[j] = (t if self.fractional else float(np.floor(t + 1e-9)), reason)

    def orders(self, weight: np.ndarray, states: np.ndarray, price: np.ndarray, tradable: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, target shares, states of those columns) of a decision: weight x equity / price at today's
        close, floored to whole shares; weight NaN keeps the shares; a ticker that cannot trade today keeps its
        shares."""
        cols = ((np.abs(weight) > 0) | (self.shares != 0)).nonzero()[0]  # abs(NaN) > 0 is False: NaN keeps
        if not len(cols):
            return cols, np.zeros(0), states[:0]
        equity, _ = self.value(price)
        w, px, current = weight[cols], price[cols], self.shares[cols]
        act = tradable[cols] & ~np.isnan(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            want = w * equity / px
        if not self.fractional:
            want = np.floor(want)
        target = np.where(act, want, current)
        changed = (target != current).nonzero()[0]
        return cols[changed], target[changed], states[cols[changed]]

    def execute(self, day: dt.date, settle: dt.date, cols: np.ndarray, target: np.ndarray, price: np.ndarray,
                reasons: np.ndarray) -> None:
        """Trade `cols` to `target` shares at `price` (per column): sells, then buys scaled to the cash."""
        cols = np.asarray(cols, dtype=np.int64)
        if not len(cols):
            return
        px, current = price[cols], self.shares[cols]
        delta = target - current
        sell, buy = delta < 0, delta > 0
        sell_tax = self.tax.bps(settle)[cols] / 1e4
        sell_value = -delta[sell] * px[sell]
        avail = self.cash + float((sell_value * (1 - self.comm - self.slip - sell_tax[sell])).sum())
        buy_value = delta[buy] * px[buy]
        bought = float(buy_value.sum())
        need = bought * (1 + self.comm + self.slip)
        if need > avail:  # keeps cash >= 0 (never reached by the parity run)
            scale = max(avail, 0.0) / need * (1 - 1e-12)
            scaled = delta[buy] * scale
            delta[buy] = scaled if self.fractional else np.floor(scaled)
            bought = float((delta[buy] * px[buy]).sum())
        self.cash = avail - bought * (1 + self.comm + self.slip)
        traded = delta != 0
        if not traded.any():
            return
        new = current + delta
        opened = traded & (current == 0) & (new > 0)
        closed = traded & (new == 0)
        today = np.datetime64(day, "D")
        self.entry[cols[opened]] = px[opened]
        self.entry_day[cols[opened]] = today
        self.entry[cols[closed]] = np.nan
        self.entry_day[cols[closed]] = np.datetime64("NaT")
        self.shares[cols] = new
        self._held = None
        finite = np.isfinite(px)
        self.last_px[cols] = px if finite.all() else np.where(finite, px, self.last_px[cols])
        trade = (cols, delta, px, np.asarray(reasons, dtype=object), sell_tax)
        if not traded.all():
            trade = tuple(x[traded] for x in trade)
        self.log.append((today, *trade))  # values and costs are computed once for all trades, in `trades`

    def fill_pending(self, day: dt.date, settle: dt.date, open_: np.ndarray, tradable: np.ndarray) -> None:
        """Fill the orders decided at the last close at today's open; a ticker that cannot trade at the open
        (no open price, halted, no row) is not traded, and its order lapses."""
        if not self.pending:
            return
        cols = np.array(sorted(self.pending), dtype=np.int64)
        ok = tradable[cols] & np.isfinite(open_[cols])
        cols = cols[ok]
        target = np.array([self.pending[j][0] for j in cols])
        reasons = np.array([self.pending[j][1] for j in cols], dtype=object)
        self.pending = {}
        self.pending_day = None
        self.execute(day, settle, cols, target, open_, reasons)

    def delist(self, day: dt.date, settle: dt.date, cols: np.ndarray) -> None:
        """Holdings absent from the day's market data: sold at their last close, marked DELISTED."""
        if len(cols):
            self.execute(day, settle, cols, np.zeros(len(cols)), self.last_px,
                         np.full(len(cols), DELISTED, dtype=object))

    # --- output

    def trades(self) -> pd.DataFrame:
        if not self.log:
            return pd.DataFrame({k: pd.Series(dtype=t) for k, t in zip(TRADE_COLUMNS, (
                "datetime64[ns]", object, object, float, float, float, float, float, float, object), strict=True)})
        days = np.repeat(np.array([x[0] for x in self.log]), [len(x[1]) for x in self.log])
        cols, delta, price, reason, rate = (np.concatenate(x) for x in list(zip(*self.log, strict=True))[1:])
        shares = np.abs(delta)
        value = shares * price
        is_sell = delta < 0
        return pd.DataFrame({
            "date": pd.DatetimeIndex(days.astype("datetime64[ns]")), "ticker": self.tickers[cols],
            "side": _SIDES[is_sell.view(np.int8)], "shares": shares, "price": price, "value": value,
            "commission": value * self.comm, "tax": np.where(is_sell, value * rate, 0.0),
            "slippage": value * self.slip, "reason": reason,
        })

    def positions(self) -> pd.DataFrame:
        cols = self.held()
        px = self.last_px[cols]
        return pd.DataFrame(dict(zip(POSITION_COLUMNS, (  # a dict in column order: no reindex by `columns=`
            self.tickers[cols], self.shares[cols], pd.DatetimeIndex(self.entry_day[cols].astype("datetime64[ns]")),
            self.entry[cols], px, px * self.shares[cols]), strict=True)))

    # --- the saved book (the model portfolio)

    def to_state(self, asof: dt.date) -> dict:
        cols = self.held()
        equity, _ = self.value(self.last_px)
        return {
            "schema": STATE_SCHEMA, "asof": asof.isoformat(),
            "inception": self.inception.isoformat() if self.inception else asof.isoformat(),
            "cash": self.cash, "equity": equity,
            "positions": [{"ticker": self.tickers[j], "shares": float(self.shares[j]),
                           "entry_date": str(self.entry_day[j]), "entry_price": float(self.entry[j]),
                           "last_price": float(self.last_px[j])} for j in cols],
            "pending": [{"ticker": self.tickers[j], "shares": float(t), "reason": str(r)}
                        for j, (t, r) in sorted(self.pending.items())],
            "pending_day": self.pending_day.isoformat() if self.pending_day else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], tickers: pd.Index, params: Mapping[str, Any],
                   markets: np.ndarray | None = None, source: str = "portfolio") -> tuple[Book, list[dict]]:
        """A book over `tickers` from a saved state (checked first with `check_state`). Returns the book and
        the saved positions whose ticker is not among `tickers` (absent from the market data: delisted)."""
        book = cls(tickers, params, markets)
        book.cash = float(state["cash"])
        book.inception = dt.date.fromisoformat(state["inception"])
        where = {t: j for j, t in enumerate(book.tickers)}
        missing = []
        for pos in state["positions"]:
            j = where.get(pos["ticker"])
            if j is None:
                missing.append(pos)
                continue
            book.shares[j] = pos["shares"]
            book.entry[j] = pos["entry_price"]
            book.entry_day[j] = np.datetime64(pos["entry_date"], "D")
            book.last_px[j] = pos["last_price"]
        for order in state["pending"]:
            j = where.get(order["ticker"])
            if j is not None:
                book.pending[j] = (float(order["shares"]), order["reason"])
        book.pending_day = dt.date.fromisoformat(state["pending_day"]) if state.get("pending_day") else None
        book._held = None
        return book, missing


def check_state(state: Any, source: str) -> dict:
    """A saved book's fields, checked; BookStateError names the field and what was expected."""
    def fail(field: str, expected: str) -> BookStateError:
        return BookStateError(f"{source}: {field}: expected {expected}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    if not isinstance(state, dict):
        raise fail("<top>", "a JSON object")
    if state.get("schema") != STATE_SCHEMA:
        raise fail("schema", f"{STATE_SCHEMA!r} (an older model portfolio: start a new one with "
                   "`krx scan --apply --reset`)")
    for key in ("asof", "inception"):
        if not is_date(state.get(key)):
            raise fail(key, "a date YYYY-MM-DD")
    if not number(state.get("cash")) or state["cash"] < 0:
        raise fail("cash", "a number >= 0")
    for key, fields in (("positions", ("ticker", "shares", "entry_date", "entry_price", "last_price")),
                        ("pending", ("ticker", "shares", "reason"))):
        items = state.get(key)
        if not isinstance(items, list):
            raise fail(key, "a list")
        for k, item in enumerate(items):
            ok = isinstance(item, dict) and all(f in item for f in fields) and isinstance(item["ticker"], str) \
                and len(item["ticker"]) == 6 and number(item["shares"]) and item["shares"] >= 0
            if ok and key == "positions":
                ok = number(item["entry_price"]) and item["entry_price"] > 0 and number(item["last_price"]) \
                    and is_date(item["entry_date"])
            if not ok:
                raise fail(f"{key}[{k}]", f"{{{', '.join(fields)}}} with a 6-character ticker and numbers "
                           f"(got {item!r:.100})")
    return state
