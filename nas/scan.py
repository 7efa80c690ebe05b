"""`krx scan`: the strategy's decision for the day against the model portfolio -> reports/signals/.

The decision is `common.strategy.decide`, the same function the backtest engine calls on each rebalance day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import time
from pathlib import Path

from common import atomic, calendar, config, events, log, safeio, strategy
from common.cli import EXIT_FAILED, EXIT_OK, parse_date
from common.home import Home
from common.store import EodStore, StoreError

_log = log.get("scan")
SCHEMA = "scan_result/1"
PORTFOLIO_SCHEMA = "portfolio/1"
SHOWN = 15  # tickers named in one summary log line


class ScanError(RuntimeError):
    pass


# --- the model portfolio ---------------------------------------------------------------------------------------


def portfolio_path(home: Home) -> Path:
    return home.state / "portfolio.json"


def load_portfolio(home: Home) -> dict:
    """state/portfolio.json: {schema, asof, positions: [{ticker, entry_date, entry_price, shares}]}; empty when
    the file does not exist. An unreadable file is an error, never an empty portfolio: a scan against the
    wrong holdings would alert wrong sells."""
    path = portfolio_path(home)
    if not path.exists():
        return {"schema": PORTFOLIO_SCHEMA, "asof": None, "positions": []}
    try:
        data = safeio.read_json(path)  # a regular file, bounded, strict JSON
    except (OSError, ValueError) as exc:
        raise ScanError(f"{path}: unreadable ({exc}); fix or remove it (an empty portfolio holds nothing)") from None
    if not isinstance(data, dict) or not isinstance(data.get("positions"), list):
        raise ScanError(f"{path}: positions: expected a list of {{ticker, entry_date, entry_price, shares}}")
    for key in ("positions", "before"):
        for k, pos in enumerate(data.get(key) or []):
            ok = (isinstance(pos, dict) and isinstance(pos.get("ticker"), str) and len(pos["ticker"]) == 6
                  and isinstance(pos.get("entry_price"), (int, float)) and pos["entry_price"] > 0
                  and isinstance(pos.get("shares"), (int, float)) and pos["shares"] >= 0)
            if not ok:
                raise ScanError(f"{path}: {key}[{k}]: expected {{ticker: 6-char str, entry_date, entry_price > 0, "
                                f"shares >= 0}}, got {pos!r:.120}")
    return data


def holdings_for(portfolio: dict, asof: dt.date) -> list[dict]:
    """The positions a scan of `asof` starts from: a portfolio already updated by that day's scan keeps the
    positions it had before it, so scanning (and applying) the same day again gives the same answer."""
    if portfolio.get("asof") == asof.isoformat() and isinstance(portfolio.get("before"), list):
        return portfolio["before"]
    return portfolio["positions"]


def apply_scan(portfolio: dict, scan: dict, capital: float) -> dict:
    """The model portfolio after acting on a scan: sells leave, buys enter at the day's close with the shares
    their target weight of `capital` buys, holds stay as they are. The positions before it are kept too."""
    before = holdings_for(portfolio, dt.date.fromisoformat(scan["asof"]))
    held = {p["ticker"]: p for p in before}
    for row in scan["rows"]:
        t = row["ticker"]
        if row["state"] in strategy.STATES and row["state"].startswith(("SELL_", "CUT_")):
            held.pop(t, None)
        elif row["state"] == "BUY" and t not in held and row["close"]:
            weight = row.get("weight") or 0.0
            held[t] = {"ticker": t, "entry_date": scan["asof"], "entry_price": row["close"],
                       "shares": math.floor(weight * capital / row["close"]) if weight > 0 else 0}
    return {"schema": PORTFOLIO_SCHEMA, "asof": scan["asof"],
            "positions": sorted(held.values(), key=lambda p: p["ticker"]), "before": before}


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


def scan(home: Home, day: dt.date | None = None) -> dict:
    """Run the strategy's decision for `day` against the model portfolio; return the scan_result/1 dict."""
    store = EodStore.for_home(home)
    cal = calendar.load(home)
    asof, next_day = resolve_day(store, cal, day)
    params = strategy.default_params(home)
    # calendar days that surely cover the trading rows the indicators need
    start = asof - dt.timedelta(days=int(strategy.warmup_rows(params) * 1.5) + 30)
    store.require_days(start, asof)  # StoreError naming the days a lost year file took, and the repair
    panels = store.load_panel(["close", "halted", "value"], start=start, end=asof)
    ctx = strategy.Indicators.build(panels, params)
    portfolio = load_portfolio(home)
    holdings = {p["ticker"]: p["entry_price"] for p in holdings_for(portfolio, asof)}
    decision = strategy.decide(ctx, ctx.row(asof), holdings)

    names = store.tickers()["name"].to_dict()
    states = decision.states.reset_index()
    rows = [{
        "ticker": r.ticker, "name": names.get(r.ticker, r.ticker), "state": r.state,
        "score": None if r.score is None or math.isnan(r.score) else round(float(r.score), 6),
        "rank": None if r.rank is None or (isinstance(r.rank, float) and math.isnan(r.rank)) else int(r.rank),
        "reason": r.reason, "close": None if r.close is None or math.isnan(r.close) else float(r.close),
        "weight": None if math.isnan(r.weight) else round(float(r.weight), 6),
    } for r in states.itertuples(index=False)]
    excluded = decision.excluded.reset_index()
    _log_exclusions(excluded, asof)
    if decision.unknown_holdings:
        log.event(_log, "SCAN_UNKNOWN_HOLDING", f"held but not in the store on {asof}: "
                  f"{', '.join(decision.unknown_holdings)}", level=logging.WARNING)
    return {
        "schema": SCHEMA,
        "strategy": strategy.NAME,
        "asof": asof.isoformat(),
        "next_trading_day": next_day.isoformat(),
        "generated_at": log.now().isoformat(timespec="seconds"),
        "correlation_id": events.correlation_id(asof, strategy.NAME),
        "regime": decision.regime,
        "universe_size": decision.universe_size,
        "after_filters": decision.after_filters,
        "top_n": params["top_n"],
        "core_holdings": [h["ticker"] for h in params["core_holdings"]],
        "rows": rows,
        "blocked_by_regime": [str(ctx.tickers[j]) for j in decision.blocked],
        "excluded": [{"ticker": r.ticker, "code": r.code, "reason": r.reason}
                     for r in excluded.itertuples(index=False)],
        "notes": ctx.notes,
    }


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


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("scan", home)
    started = time.monotonic()
    try:
        result = scan(home, args.date)
        path = atomic.write_json(signals_path(home, result["asof"]), result)
        if args.apply:
            capital = strategy.default_params(home)["initial_cash"]
            atomic.write_json(portfolio_path(home), apply_scan(load_portfolio(home), result, capital))
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
              f"universe={result['universe_size']} after_filters={result['after_filters']} {summary} "
              f"applied={bool(args.apply)} file={path}", rc=EXIT_OK, elapsed_ms=(time.monotonic() - started) * 1000)
    return EXIT_OK
