"""The KRX trading calendar: exchange_calendars' XKRX plus the extra closures of configs/app.yaml."""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from common import atomic, config
from common.home import Home

CLOSE_HOUR = 16  # KRX closes 15:30; from 16:00 Seoul time the day's EOD data is final


class TradingCalendar:
    def __init__(self, extra_closures: Iterable[dt.date] = ()):
        self.extra_closures = frozenset(pd.Timestamp(d).date() for d in extra_closures)
        self._sessions = _xkrx_sessions()
        if self.extra_closures:
            drop = np.isin(self._sessions, pd.DatetimeIndex(sorted(self.extra_closures)))
            self._sessions = self._sessions[~drop]

    @property
    def index(self) -> pd.DatetimeIndex:
        """Every trading day the calendar knows, as a DatetimeIndex (the strategy's schedule reads it)."""
        return self._sessions

    @property
    def first(self) -> dt.date:
        return self._sessions[0].date()

    @property
    def last(self) -> dt.date:
        return self._sessions[-1].date()

    def _check(self, day: dt.date) -> pd.Timestamp:
        ts = pd.Timestamp(day)
        if not (self._sessions[0] <= ts <= self._sessions[-1] + pd.Timedelta(days=7)):
            raise ValueError(f"{ts.date()} is outside the KRX calendar ({self.first} .. {self.last})")
        return ts

    def is_trading_day(self, day: dt.date) -> bool:
        ts = self._check(day)
        i = self._sessions.searchsorted(ts)
        return i < len(self._sessions) and self._sessions[i] == ts

    def sessions(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """Trading days from `start` to `end`, both inclusive."""
        lo = self._sessions.searchsorted(pd.Timestamp(start), "left")
        hi = self._sessions.searchsorted(pd.Timestamp(end), "right")
        return [ts.date() for ts in self._sessions[lo:hi]]

    def next_trading_day(self, day: dt.date) -> dt.date:
        """The first trading day strictly after `day`."""
        i = self._sessions.searchsorted(self._check(day), "right")
        if i >= len(self._sessions):
            raise ValueError(f"no trading day after {day} in the KRX calendar (ends {self.last})")
        return self._sessions[i].date()

    def latest_complete_day(self, now: dt.datetime | None = None) -> dt.date:
        """The last trading day whose end-of-day data is final at `now` (Seoul time; final from CLOSE_HOUR)."""
        from common.log import now as seoul_now

        now = now or seoul_now()
        today = now.date() if now.hour >= CLOSE_HOUR else now.date() - dt.timedelta(days=1)
        return self.previous_trading_day(today)

    def previous_trading_day(self, day: dt.date) -> dt.date:
        """The last trading day on or before `day`."""
        i = self._sessions.searchsorted(self._check(day), "right")
        if i == 0:
            raise ValueError(f"no trading day on or before {day} in the KRX calendar")
        return self._sessions[i - 1].date()


def cache_path() -> Path:
    """Where the XKRX sessions are cached: building the calendar costs about 1.4 s, every job needs it, and it
    only changes with the library's version (and its horizon, which moves with the date)."""
    from importlib.metadata import version

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "krx-alertor"
    return base / f"xkrx-{version('exchange_calendars')}-{dt.date.today():%Y%m%d}.npy"


@functools.lru_cache(maxsize=1)
def _xkrx_sessions() -> pd.DatetimeIndex:
    path = cache_path()
    try:
        return pd.DatetimeIndex(np.load(path, allow_pickle=False).astype("datetime64[ns]"))
    except (OSError, ValueError):  # no cache yet, or a damaged one: build it again
        pass
    import exchange_calendars as xcals  # slow to import: only when the cache cannot answer

    sessions = pd.DatetimeIndex(xcals.get_calendar("XKRX").sessions).tz_localize(None)
    buf = io.BytesIO()
    np.save(buf, sessions.to_numpy().astype("datetime64[D]"), allow_pickle=False)
    try:
        atomic.write_bytes(path, buf.getvalue())
        for old in path.parent.glob("xkrx-*.npy"):  # yesterday's or another version's: never read again
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:  # a read-only home directory only costs the time
        pass
    return sessions


def load(home: Home | None = None) -> TradingCalendar:
    """The calendar with the extra closures configured in the home's app.yaml."""
    return TradingCalendar(config.load("app", home)["calendar"]["extra_closures"])
