"""`krx ingest`: fetch end-of-day prices for every missing trading day into the store."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from typing import Protocol

import pandas as pd

from common import calendar, config, events, locks, log, strategy, switches
from common.cli import EXIT_FAILED, EXIT_OK, parse_date
from common.home import Home
from common.store import EodStore, validate_day

_log = log.get("ingest")
FLUSH_EVERY = 250  # days held in memory before they are written: bounds memory, keeps progress on a crash


class Source(Protocol):
    name: str
    first_date: dt.date  # no data before this day

    def fetch_day(self, day: dt.date) -> pd.DataFrame | None:
        """The normalized frame of one day (common.store.COLUMNS), or None when the market was closed."""


def make_source(name: str, home: Home, cal: calendar.TradingCalendar, tickers: int | None = None) -> Source:
    app = config.load("app", home)
    if name == "sample":
        from nas.sources.sample import SampleSource

        s = app["sample"]
        return SampleSource(cal, seed=s["seed"], tickers=tickers or s["tickers"], first_date=s["first_date"])
    if name == "pykrx":
        from nas.sources.pykrx_source import PykrxSource

        return PykrxSource(timeout_s=app["ingest"]["http_timeout_s"], retry_cfg=app["retry"])
    raise ValueError(f"unknown source {name!r}; expected sample or pykrx")


def ingest(home: Home, source: Source, days: list[dt.date], force: bool = False) -> dict:
    """Fetch and store `days` (those already stored or known closed are skipped unless `force`)."""
    store = EodStore.for_home(home)
    store.check_source(source.name)
    gone, moved = store.repair()  # days the manifest claims but the files lack are fetched again
    if gone or moved:
        span = f"{gone[0]}..{gone[-1]}" if gone else "-"
        log.event(_log, "STORE_REPAIRED", f"{len(gone)} day(s) listed but not in the year files ({span}) will be "
                  f"fetched again; moved aside: {', '.join(moved) or 'none'}", level=logging.WARNING)
    known = set() if force else store.stored_dates() | store.closed_dates()
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
            frame = source.fetch_day(day)
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
    try:
        cid = events.correlation_id(day, strategy.NAME) if day else None
        events.append(home, event, correlation_id=cid, **fields)
    except OSError as exc:  # the prices are stored either way; the ops summary reports a broken log
        log.event(_log, "EVENT_LOG", f"cannot append {event}: {exc}", level=logging.WARNING)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["sample", "pykrx"], help="default: app.yaml source")
    p.add_argument("--date", type=parse_date, help="one day")
    p.add_argument("--start", type=parse_date, help="first day of a backfill")
    p.add_argument("--end", type=parse_date, help="last day of a backfill (default: the latest complete day)")
    p.add_argument("--force", action="store_true", help="fetch again days already stored")
    p.add_argument("--tickers", type=int, help="sample source: number of tickers (up to 3000)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("ingest", home)
    started = time.monotonic()
    end: dt.date | None = None
    try:
        app = config.load("app", home)
        cal = calendar.load(home)
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
        source = make_source(name, home, cal, args.tickers)
        days = cal.sessions(max(start, source.first_date), end)
        if not days:
            log.event(_log, "INGEST_DONE", f"source={name} no trading day between {start} and {end}", rc=EXIT_OK,
                      elapsed_ms=(time.monotonic() - started) * 1000)
            return EXIT_OK
        # one ingest at a time (the wrapper's `--lock ingest`): the second one waits, then skips what the first fetched
        with locks.job_lock(home, "ingest", wait_s=float(app["ops"]["step_timeout_s"])):
            summary = ingest(home, source, days, force=args.force)
    except Exception as exc:  # one clear ERROR line and exit 3; complete days already written stay
        log.event(_log, "INGEST_FAILED", f"{type(exc).__name__}: {exc}", rc=EXIT_FAILED, level=logging.ERROR,
                  elapsed_ms=(time.monotonic() - started) * 1000)
        _record(home, "ingest_failed", end, error=f"{type(exc).__name__}: {exc}"[:300])
        return EXIT_FAILED
    _record(home, "ingest_done", days[-1], **summary)
    log.event(_log, "INGEST_DONE",
              f"source={summary['source']} range={days[0]}..{days[-1]} days_fetched={summary['days_fetched']} "
              f"days_skipped={summary['days_skipped']} days_closed={summary['days_closed']} rows={summary['rows']}",
              rc=EXIT_OK, elapsed_ms=(time.monotonic() - started) * 1000)
    return EXIT_OK
