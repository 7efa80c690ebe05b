"""`krx request`: queue the day's backtest request for the PC worker (DESIGN 6, submit)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from common import config, events, log, queue, schemas
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.store import EodStore, StoreError
from common.strategy import NAME as STRATEGY
from common.strategy import warmup_rows

_log = log.get("request")


def build(home: Home, day: dt.date | None = None) -> dict:
    """The day's backtest_request/1: the strategy with the NAS's current parameters, over the configured years up
    to `day` (default: the store's last day), starting no earlier than the strategy's warm-up allows. Its id
    derives from date, strategy and parameters."""
    store = EodStore.for_home(home)
    last = store.last_date()
    if last is None:
        raise ValueError(f"the store {store.root} is empty; run `krx ingest` first")
    end = day or last
    if end > last:
        raise ValueError(f"{end} is after the store's last day {last}; run `krx ingest --date {end}` first")
    years = config.load("app", home)["request"]["years"]
    strategies = config.load("strategies", home)
    params = strategies["strategies"][STRATEGY]
    # leave the strategy its warm-up history before the first day it reports on (when the store has it)
    stored = sorted(d for d in store.stored_dates() if d <= end)
    if not stored:
        raise ValueError(f"{end} is before the store's first day {store.first_date()}: no data to backtest")
    warm = stored[warmup_rows(params)] if len(stored) > warmup_rows(params) else stored[0]
    start = max(warm, end - dt.timedelta(days=round(365.25 * years)))
    return schemas.new_request(STRATEGY, start, end, params=params,
                               correlation_id=events.correlation_id(end, STRATEGY), home=home,
                               strategies=strategies, requested_by=events.who())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date, help="the day the request ends on (default: the store's last day)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("request", home)
    try:
        request = build(home, args.date)
        queued = queue.Queue.of_home(home).submit(request)
    except (ValueError, OSError, StoreError) as exc:  # RequestError and ConfigError are ValueErrors too
        log.event(_log, "REQUEST_FAILED", str(exc), rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    what = "queued" if queued else "already queued or done; nothing new"
    log.event(_log, "REQUEST_QUEUED" if queued else "REQUEST_EXISTS",
              f"id={request['id']} {request['start']}..{request['end']} {what}", rc=EXIT_OK)
    if queued:
        events.append(home, "request_queued", correlation_id=request["correlation_id"], id=request["id"],
                      start=request["start"], end=request["end"])
    print(request["id"])
    return EXIT_OK
