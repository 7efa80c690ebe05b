"""`krx scan`: the strategy's day against the model portfolio -> reports/signals/ (and, with --apply, the
model portfolio in state/portfolio.json).

The model portfolio is a saved `common.book.Book`; the scan steps it with `common.engine.run` through every
session since its last day, the very loop the backtest runs, so following the applied alerts reproduces the
backtest's trades. The day's decision is `common.strategy.decide`; orders fill at the next session's open.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import time
from pathlib import Path

import pandas as pd

from common import atomic, book, calendar, config, engine, events, log, safeio, schemas, strategy
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK, AlertorError
from common.home import Home
from common.store import EodStore, StoreError
from nas import reasons

_log = log.get("scan")
SCHEMA = schemas.SCAN_RESULT
SHOWN = 15  # tickers named in one summary log line
PANEL_FIELDS = ("close", "open", "base", "halted", "value")


class ScanError(AlertorError, RuntimeError):
    pass


# --- the model portfolio ---------------------------------------------------------------------------------------


def portfolio_path(home: Home) -> Path:
    return home.state / "portfolio.json"


def load_portfolio(home: Home) -> dict | None:
    """state/portfolio.json: the saved book (common.book, schema portfolio/2) plus `before`, the book as it was
    before its last day was applied; None when there is none. An unreadable file is an error, never an empty
    portfolio: a scan against the wrong holdings would alert wrong sells."""
    path = portfolio_path(home)
    if not path.exists():
        return None
    try:
        data = safeio.read_json(path)  # a regular file, bounded, strict JSON
    except (OSError, ValueError) as exc:
        raise ScanError(f"{path}: unreadable ({exc}); fix it, or start a new model portfolio with "
                        "`krx scan --apply --reset`") from None
    try:
        book.check_state(data, str(path))
        if data.get("before") is not None:
            book.check_state(data["before"], f"{path}: before")
    except book.BookStateError as exc:
        raise ScanError(str(exc)) from None
    return data


def book_for(portfolio: dict | None, asof: dt.date) -> dict | None:
    """The saved book a scan of `asof` continues: the portfolio, or for its own day again the book before that
    day (so scanning and applying the same day twice gives the same answer). Never a portfolio from the future:
    the model portfolio does not move back in time."""
    if portfolio is None:
        return None
    held = dt.date.fromisoformat(portfolio["asof"])
    if held == asof:
        return portfolio.get("before")
    if held > asof:
        raise ScanError(f"the model portfolio is already at {held}; scanning {asof} would move it back in time. "
                        f"`krx scan --date {asof} --reset` scans {asof} from cash (with --apply it starts a new "
                        f"model portfolio there; the current one is kept as a backup in state/)")
    return {k: v for k, v in portfolio.items() if k != "before"}


def save_portfolio(home: Home, state: dict, before: dict | None, reset: bool) -> Path:
    """Write the applied book; a reset first keeps the replaced portfolio as state/portfolio_<asof>_replaced.json."""
    path = portfolio_path(home)
    if reset and path.exists():
        old = load_portfolio(home)
        keep = home.state / f"portfolio_{(old or {}).get('asof', 'unknown')}_replaced.json"
        atomic.write_json(keep, old)
    atomic.write_json(path, {**state, "before": before})
    return path


# --- the scan --------------------------------------------------------------------------------------------------


def resolve_day(store: EodStore, cal: calendar.TradingCalendar, day: dt.date | None) -> tuple[dt.date, dt.date]:
    """(asof, next_trading_day): the stored trading day the scan reads, and the day its alert is for."""
    last = store.last_date()
    if last is None:
        raise ScanError(f"the store {store.root} is empty; run `krx ingest` first")
    if day is None:
        return last, cal.next_trading_day(last)
    if cal.is_trading_day(day):
        if day not in store.stored_dates():
            raise ScanError(f"{day} is a trading day but not in the store (last stored {last}); run "
                            f"`krx ingest --date {day}` first")
        return day, cal.next_trading_day(day)
    # a non-trading day reuses the last stored day and dates the alert for the next trading day
    asof = max((d for d in store.stored_dates() if d <= day), default=None)
    if asof is None:
        raise ScanError(f"no stored trading day on or before {day}")
    return asof, cal.next_trading_day(day)


def scan(home: Home, day: dt.date | None = None, *, reset: bool = False) -> tuple[dict, dict, dict | None]:
    """The strategy's day against the model portfolio: the engine steps the saved book through every session
    since its last day up to `day` (fills at the open, corporate actions, delistings, decisions), exactly as the
    backtest steps its book. Returns (the scan_result/1 dict, the book after the day, the book before it)."""
    store = EodStore.for_home(home)
    cal = calendar.load(home)
    asof, next_day = resolve_day(store, cal, day)
    params = strategy.default_params(home)
    before = None if reset else book_for(load_portfolio(home), asof)
    begin = cal.next_trading_day(dt.date.fromisoformat(before["asof"])) if before else asof
    # calendar days that surely cover the trading rows the indicators need
    start = begin - dt.timedelta(days=int(strategy.warmup_rows(params) * 1.5) + 30)
    store.require_days(start, asof)  # StoreError naming the days a lost year file took, and the repair
    panels = store.load_panel(PANEL_FIELDS, start=start, end=asof)
    tickers = store.tickers()
    markets = tickers["market"].reindex(panels["close"].columns).fillna("")
    partial = store.partial_flags(panels["close"].index)
    run = engine.run(panels, params, markets=markets, start=pd.Timestamp(begin), sessions=cal.index,
                     book_state=before, partial=partial)
    state = run.book.to_state(asof)
    decision = run.decision
    names = tickers["name"].to_dict()
    trades = run.trades[run.trades["date"] == pd.Timestamp(asof)] if len(run.trades) else run.trades
    rows = _rows(decision, names, run.book, trades)
    excluded = reasons.excluded(decision).reset_index()
    _log_exclusions(excluded, asof)
    inception = dt.date.fromisoformat(state["inception"])
    nxt = strategy.next_rebalance(asof, params, cal.index, inception)
    result = {
        "schema": SCHEMA,
        "strategy": strategy.NAME,
        "asof": asof.isoformat(),
        "next_trading_day": next_day.isoformat(),
        "generated_at": log.now().isoformat(timespec="seconds"),
        "correlation_id": events.correlation_id(asof, strategy.NAME),
        "regime": decision.regime,
        "rebalance_day": decision.rebalance,
        "next_rebalance": nxt.isoformat() if nxt else None,
        "execution": params["execution"],
        "universe_size": decision.universe_size,
        "after_filters": decision.after_filters,
        "top_n": params["top_n"],
        "core_holdings": [h["ticker"] for h in params["core_holdings"]],
        "rows": rows,
        "fills": [{"ticker": t.ticker, "name": names.get(t.ticker, t.ticker), "side": t.side,
                   "shares": float(t.shares), "price": float(t.price), "reason": t.reason}
                  for t in trades.itertuples(index=False)],
        "orders": [{"ticker": o["ticker"], "name": names.get(o["ticker"], o["ticker"]), "target_shares": o["shares"],
                    "reason": o["reason"]} for o in state["pending"]],
        "portfolio": {"cash": state["cash"], "equity": state["equity"], "positions": len(state["positions"]),
                      "inception": state["inception"]},
        "blocked_by_regime": [str(decision.ctx.tickers[j]) for j in decision.blocked],
        "excluded": [{"ticker": r.ticker, "code": r.code, "reason": r.reason}
                     for r in excluded.itertuples(index=False)],
        "notes": decision.ctx.notes,
        "partial": _partial(store, asof),
    }
    if result["partial"]:
        result["notes"] = [*result["notes"], result["partial"]["reason"]]
    return result, state, before


def _rows(decision: strategy.Decision, names: dict, held: book.Book, trades: pd.DataFrame) -> list[dict]:
    """One row per ticker with a state, and one per holding sold today because it left the market data."""
    shares = dict(zip(held.tickers, held.shares, strict=True))
    orders = {held.tickers[j]: q for j, (q, _) in held.pending.items()}
    rows = []
    for r in reasons.states(decision).reset_index().itertuples(index=False):
        now = float(shares.get(r.ticker, 0.0))
        rows.append({
            "ticker": r.ticker, "name": names.get(r.ticker, r.ticker), "state": r.state,
            "score": None if r.score is None or math.isnan(r.score) else round(float(r.score), 6),
            "rank": None if r.rank is None or (isinstance(r.rank, float) and math.isnan(r.rank)) else int(r.rank),
            "reason": r.reason, "close": None if r.close is None or math.isnan(r.close) else float(r.close),
            "weight": None if math.isnan(r.weight) else round(float(r.weight), 6),
            "shares": now, "order": float(orders[r.ticker] - now) if r.ticker in orders else None,
        })
    for t in trades[trades["reason"] == book.DELISTED].itertuples(index=False):
        rows.append({"ticker": t.ticker, "name": names.get(t.ticker, t.ticker), "state": book.DELISTED,
                     "score": None, "rank": None, "close": float(t.price), "weight": 0.0, "shares": 0.0,
                     "order": None, "reason": f"absent from the day's market data: sold at its last close "
                                              f"{t.price:,.0f} ({t.shares:,.0f} shares)"})
    return rows


def _partial(store: EodStore, asof: dt.date) -> dict | None:
    """The scan day's partial-day record (common.store), with the sentence the alert shows; None on a whole day."""
    info = store.partial_dates().get(asof)
    if info is None:
        return None
    return {**info, "reason": reasons.partial_text(len(info["tickers"]), info["source"].capitalize())}


def _log_exclusions(excluded, asof: dt.date) -> None:
    """One line per kind of exclusion: too little history is INFO, abnormal data is ERROR (reaches Slack)."""
    for code, level in (("short_history", logging.INFO), ("abnormal", logging.ERROR),
                        ("halted", logging.INFO), ("delisted", logging.INFO)):
        tickers = excluded.loc[excluded["code"] == code, "ticker"].tolist()
        if tickers:
            more = f" (+{len(tickers) - SHOWN} more)" if len(tickers) > SHOWN else ""
            reason = excluded.loc[excluded["code"] == code, "reason"].iloc[0]
            log.event(_log, f"SCAN_EXCLUDED_{code.upper()}",
                      f"{asof} {len(tickers)} left out, {reason}: {', '.join(tickers[:SHOWN])}{more}", level=level)


def signals_path(home: Home, asof: dt.date | str) -> Path:
    asof = asof if isinstance(asof, str) else asof.isoformat()
    return home.reports / "signals" / f"signals_{asof.replace('-', '')}.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date,
                   help="the day to scan (default: the store's last day); a non-trading day reuses the last "
                        "stored day and dates the alert for the next trading day")
    p.add_argument("--apply", action="store_true", help="update the model portfolio (state/portfolio.json)")
    p.add_argument("--reset", action="store_true",
                   help="scan from cash, ignoring the model portfolio (with --apply: start a new one on this day; "
                        "the old one is kept as state/portfolio_<asof>_replaced.json)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("scan", home)
    started = time.monotonic()
    try:
        result, state, before = scan(home, args.date, reset=args.reset)
        path = atomic.write_json(signals_path(home, result["asof"]), result)
        if args.apply:
            save_portfolio(home, state, before, args.reset)
    except (ScanError, StoreError, ValueError, KeyError, OSError, config.ConfigError) as exc:
        log.event(_log, "SCAN_FAILED", f"{type(exc).__name__}: {exc}", rc=EXIT_FAILED, level=logging.ERROR,
                  elapsed_ms=(time.monotonic() - started) * 1000)
        return EXIT_FAILED
    counts: dict[str, int] = {}
    for row in result["rows"]:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no positions"
    events.append(home, "scan_done", correlation_id=result["correlation_id"], asof=result["asof"],
                  regime=result["regime"], states=counts, applied=bool(args.apply))
    log.event(_log, "SCAN_DONE", f"asof={result['asof']} for={result['next_trading_day']} regime={result['regime']} "
              f"rebalance={result['rebalance_day']} next_rebalance={result['next_rebalance']} "
              f"universe={result['universe_size']} after_filters={result['after_filters']} {summary} "
              f"applied={bool(args.apply)} file={path}", rc=EXIT_OK, elapsed_ms=(time.monotonic() - started) * 1000)
    return EXIT_OK
