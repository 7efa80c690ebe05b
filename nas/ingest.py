"""`krx ingest`: fetch end-of-day prices for every missing trading day into the store.

When KRX fails for the day (login rejected, outage page, LOGOUT), Naver fills in the few tickers the next scan
needs (the model portfolio's holdings and orders, the core holdings, the benchmark) as a partial day: one ERROR
line (Slack) says so, the scan of that day sells and holds but buys nothing new, and the next successful KRX
ingest replaces the day (docs/naver.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pandas as pd

from common import calendar, config, events, locks, log, strategy, switches
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.store import EodStore, validate_day

_log = log.get("ingest")
FLUSH_EVERY = 250  # days held in memory before they are written: bounds memory, keeps progress on a crash
FALLBACK_MAX_DAYS = 10  # the Naver fallback fills a daily run's missing days, never a backfill
NAVER_MARGIN_ROWS = 5  # Naver counts rows back from today (today's own row included while it trades)
Fallback = Callable[[list[dt.date], BaseException], dict]


class Source(Protocol):
    name: str
    first_date: dt.date  # no data before this day

    def fetch_day(self, day: dt.date) -> pd.DataFrame | None:
        """The normalized frame of one day (common.store.COLUMNS), or None when the market was closed."""


def make_source(name: str, home: Home, cal: calendar.TradingCalendar, app: Mapping[str, Any],
                tickers: int | None = None) -> Source:
    """The source `name` configured by `app` (the validated app.yaml the command loaded)."""
    if name == "sample":
        from nas.sources.sample import SampleSource

        s = app["sample"]
        return SampleSource(cal, seed=s["seed"], tickers=tickers or s["tickers"], first_date=s["first_date"])
    if name == "pykrx":
        from nas.sources.pykrx_source import PykrxSource

        return PykrxSource(timeout_s=app["ingest"]["http_timeout_s"], retry_cfg=app["retry"], home=home,
                           lock_wait_s=app["ingest"]["login_lock_wait_s"])
    raise ValueError(f"unknown source {name!r}; expected sample or pykrx")


def naver_source(app: Mapping[str, Any]):  # -> nas.sources.naver.NaverSource, imported only when used
    """Naver under the same timeout and retry policy as the KRX source (`app`: the validated app.yaml)."""
    from nas.sources.naver import NaverSource

    return NaverSource(timeout_s=app["ingest"]["http_timeout_s"], retry_cfg=app["retry"])


def fallback_tickers(home: Home) -> list[str]:
    """What the next scan cannot do without: the model portfolio's holdings and pending orders (a holding absent
    from a stored day reads as delisted), the core holdings, the benchmark and the regime's ticker."""
    from nas.scan import load_portfolio

    params = strategy.default_params(home)
    out = {h["ticker"] for h in params["core_holdings"]} | {params["benchmark"]}
    if params["regime"]["enabled"]:
        out.add(params["regime"]["ticker"])
    portfolio = load_portfolio(home)
    if portfolio:
        out |= {p["ticker"] for p in portfolio["positions"]} | {o["ticker"] for o in portfolio["pending"]}
    return sorted(out)


def fill_partial(home: Home, cal: calendar.TradingCalendar, days: list[dt.date], tickers: list[str], naver) -> dict:
    """Store `days` as partial days from `naver` for `tickers` (all of them or nothing); returns a summary."""
    store = EodStore.for_home(home)
    count = len(cal.sessions(days[0], max(days[-1], cal.latest_complete_day()))) + NAVER_MARGIN_ROWS
    names = store.tickers()
    known = {str(t): (r.name, r.market) for t, r in names.iterrows()}
    frames = naver.fetch_days(tickers, days, count, known)
    rows = store.write([validate_day(frames[d], d, naver.name) for d in days], partial=naver.name)
    return {"source": naver.name, "days": [d.isoformat() for d in days], "tickers": len(tickers), "rows": rows}


def naver_fallback(home: Home, cal: calendar.TradingCalendar, naver) -> Fallback:
    """What `ingest` calls when KRX fails on a day: Naver fills that day and the rest as partial days."""

    def fallback(days: list[dt.date], krx_error: BaseException) -> dict:
        from nas.sources.naver import NaverError
        from nas.sources.pykrx_source import KrxError

        if not isinstance(krx_error, KrxError) or len(days) > FALLBACK_MAX_DAYS:
            raise krx_error
        tickers = fallback_tickers(home)
        try:
            done = fill_partial(home, cal, days, tickers, naver)
        except NaverError as exc:
            raise type(krx_error)(f"{krx_error} -- and the Naver fallback failed too: {exc}") from exc
        log.event(_log, "INGEST_KRX_FAILED_NAVER_FILLED",
                  f"KRX failed for {days[0]} ({type(krx_error).__name__}: {krx_error}); Naver filled in "
                  f"{len(tickers)} tickers ({','.join(tickers)}) for {','.join(done['days'])} as partial days: the "
                  "scan sells and holds but buys nothing new; the next successful KRX ingest replaces them",
                  level=logging.ERROR)
        return done

    return fallback


def ingest(home: Home, source: Source, days: list[dt.date], force: bool = False,
           fallback: Fallback | None = None) -> dict:
    """Fetch and store `days` (those already stored or known closed are skipped unless `force`; partial days are
    fetched again). `fallback(days_left, error)`: called when the source fails on a day, instead of failing."""
    store = EodStore.for_home(home)
    store.check_source(source.name)
    gone, moved = store.repair()  # days the manifest claims but the files lack are fetched again
    if gone or moved:
        span = f"{gone[0]}..{gone[-1]}" if gone else "-"
        log.event(_log, "STORE_REPAIRED", f"{len(gone)} day(s) listed but not in the year files ({span}) will be "
                  f"fetched again; moved aside: {', '.join(moved) or 'none'}", level=logging.WARNING)
    known = set() if force else (store.stored_dates() - set(store.partial_dates())) | store.closed_dates()
    todo = [d for d in days if d not in known]
    summary = {"source": source.name, "days_fetched": 0, "days_skipped": len(days) - len(todo),
               "days_closed": 0, "rows": 0}
    frames: list[pd.DataFrame] = []
    closed: list[dt.date] = []

    def flush() -> None:
        summary["rows"] += store.write(frames, closed, source=source.name)
        frames.clear()
        closed.clear()

    from rich.progress import Progress

    with Progress(transient=True, disable=len(todo) < 2 or not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"ingest {source.name}", total=len(todo))
        for i, day in enumerate(todo, 1):
            try:
                frame = source.fetch_day(day)
            except Exception as exc:
                if fallback is None:
                    raise
                flush()  # the whole days fetched before it stay whole
                summary["partial"] = fallback(todo[i - 1:], exc)
                break
            if frame is None or frame.empty:
                closed.append(day)
                summary["days_closed"] += 1
                log.event(_log, "INGEST_CLOSED", f"{day} closed per {source.name}; recorded as a non-trading day",
                          level=logging.WARNING)
            else:
                frames.append(validate_day(frame, day, source.name))
                summary["days_fetched"] += 1
            if i % FLUSH_EVERY == 0:
                flush()
                log.event(_log, "INGEST_PROGRESS", f"{i}/{len(todo)} days, last {day}")
            bar.advance(task)
        flush()
    return summary


def _record(home: Home, event: str, day: dt.date | None, **fields) -> None:
    """The run in the event log, under the day's correlation id (the scan, alert and request of that day share it)."""
    # the prices are stored either way; the ops summary reports a broken log
    cid = events.correlation_id(day, strategy.NAME) if day else None
    events.append_quietly(home, event, correlation_id=cid, **fields)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["sample", "pykrx", "naver"],
                   help="default: app.yaml source; naver stores partial days for --tickers (docs/naver.md)")
    p.add_argument("--date", type=parse_date, help="one day")
    p.add_argument("--start", type=parse_date, help="first day of a backfill")
    p.add_argument("--end", type=parse_date, help="last day of a backfill (default: the latest complete day)")
    p.add_argument("--force", action="store_true", help="fetch again days already stored")
    p.add_argument("--tickers", help="sample: the number of tickers (up to 3000); naver: tickers A,B,... "
                                     "(default: the holdings, the core holdings and the benchmark)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("ingest", home)
    started = time.monotonic()
    end: dt.date | None = None
    try:
        app = config.load("app", home)  # once: every section below comes from it
        cal = calendar.load(home, app["calendar"])
        name = args.source or app["source"]
        if name != "sample" and switches.gate(home) == switches.MOCK_ONLY:
            log.event(_log, "INGEST_MOCK_ONLY", f"gate is MOCK_ONLY: source {name} replaced by sample",
                      level=logging.WARNING)
            name = "sample"
        if args.date and (args.start or args.end):
            raise ValueError("give --date, or --start/--end, not both")
        if args.date:
            start = end = args.date
        else:
            end = args.end or cal.latest_complete_day()
            store_first = EodStore.for_home(home).first_date()
            start = args.start or store_first or end - dt.timedelta(days=app["ingest"]["history_days"])
        if start > end:
            raise ValueError(f"--start {start} is after --end {end}")
        final = cal.latest_complete_day()
        if name != "sample" and end > final:  # KRX serves intraday prices before the close: never store them
            raise ValueError(f"{end} is not final yet: the last trading day with final end-of-day data is {final} "
                             f"(final from {calendar.CLOSE_HOUR}:00 Asia/Seoul)")
        if name == "naver":
            return _run_naver(home, cal, naver_source(app), args, start, end, started)
        source = make_source(name, home, cal, app, _count(args.tickers))
        days = cal.sessions(max(start, source.first_date), end)
        if not days:
            log.event(_log, "INGEST_DONE", f"source={name} no trading day between {start} and {end}", rc=EXIT_OK,
                      elapsed_ms=(time.monotonic() - started) * 1000)
            return EXIT_OK
        # one ingest at a time (the wrapper's `--lock ingest`): the second one waits, then skips what the first fetched
        with locks.job_lock(home, "ingest", wait_s=float(app["ops"]["step_timeout_s"])):
            summary = ingest(home, source, days, force=args.force,
                             fallback=naver_fallback(home, cal, naver_source(app)) if name == "pykrx" else None)
    except Exception as exc:  # one clear ERROR line and exit 3; complete days already written stay
        log.event(_log, "INGEST_FAILED", f"{type(exc).__name__}: {exc}", rc=EXIT_FAILED, level=logging.ERROR,
                  elapsed_ms=(time.monotonic() - started) * 1000)
        _record(home, "ingest_failed", end, error=f"{type(exc).__name__}: {exc}"[:300])
        return EXIT_FAILED
    _record(home, "ingest_done", days[-1], **summary)
    log.event(_log, "INGEST_DONE",
              f"source={summary['source']} range={days[0]}..{days[-1]} days_fetched={summary['days_fetched']} "
              f"days_skipped={summary['days_skipped']} days_closed={summary['days_closed']} rows={summary['rows']}"
              + (f" partial={summary['partial']['source']}:{','.join(summary['partial']['days'])}"
                 if "partial" in summary else ""),
              rc=EXIT_OK, elapsed_ms=(time.monotonic() - started) * 1000)
    return EXIT_OK


def _count(tickers: str | None) -> int | None:
    if tickers is None:
        return None
    if not tickers.isdigit():
        raise ValueError(f"--tickers {tickers!r}: the sample source expects a number of tickers (10..3000)")
    return int(tickers)


_TICKER = re.compile(r"^[0-9A-Z]{6}$")


def _run_naver(home: Home, cal: calendar.TradingCalendar, naver, args: argparse.Namespace, start: dt.date,
               end: dt.date, started: float) -> int:
    """`krx ingest --source naver [--tickers A,B]`: the days not stored whole, as partial days from Naver. Without
    --date/--start: from the day after the store's last whole day (or just `end` on an empty store)."""
    store = EodStore.for_home(home)
    whole = store.stored_dates() - set(store.partial_dates())
    if not args.date and not args.start:
        last = max(whole, default=None)
        start = cal.next_trading_day(last) if last else end
    tickers = [t.strip().upper() for t in args.tickers.split(",") if t.strip()] if args.tickers else \
        fallback_tickers(home)
    bad = [t for t in tickers if not _TICKER.match(t)]
    if bad or not tickers:
        raise ValueError(f"--tickers {args.tickers!r}: expected 6-character tickers separated by commas "
                         f"(e.g. 005930,069500){', not ' + repr(bad[0]) if bad else ''}")
    days = [d for d in cal.sessions(start, end) if d not in whole]
    if not days:
        log.event(_log, "INGEST_DONE", f"source=naver every trading day from {start} to {end} is stored whole",
                  rc=EXIT_OK, elapsed_ms=(time.monotonic() - started) * 1000)
        return EXIT_OK
    if len(days) > FALLBACK_MAX_DAYS:
        raise ValueError(f"{len(days)} days from {days[0]} to {days[-1]}: Naver fills at most {FALLBACK_MAX_DAYS} "
                         "days as partial days (it is a fallback, not a history source); give --start/--date")
    summary = fill_partial(home, cal, days, tickers, naver)
    _record(home, "ingest_done", days[-1], **summary)
    log.event(_log, "INGEST_DONE", f"source=naver partial days {','.join(summary['days'])} tickers="
              f"{','.join(tickers)} rows={summary['rows']}: no new buys on them until KRX replaces them",
              rc=EXIT_OK, elapsed_ms=(time.monotonic() - started) * 1000)
    return EXIT_OK
