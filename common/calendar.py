"""The KRX trading calendar: the closures of exchange_calendars' XKRX and of the `holidays` package's XKRX financial
calendar together, plus the extra closures of configs/app.yaml (minus the days confirmed open there).

Two libraries because each lags behind Korean law in its own way: exchange_calendars 4.13.2 still lists
2026-06-03 (local election) and 2026-07-17 (Constitution Day, a holiday again from 2026) as sessions, which
`holidays` closes. A closure from either wins; a day they disagree about in the next 12 months is a risk for
`krx ops status` (CALENDAR_DISAGREEMENT) until it is confirmed in app.yaml (extra_closures or confirmed_open)."""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common import atomic, config
from common.home import Home

CLOSE_HOUR = 16  # KRX closes 15:30; from 16:00 Seoul time the day's EOD data is final


class TradingCalendar:
    def __init__(self, extra_closures: Iterable[dt.date] = (), confirmed_open: Iterable[dt.date] = ()):
        self.extra_closures = frozenset(pd.Timestamp(d).date() for d in extra_closures)
        self.confirmed_open = frozenset(pd.Timestamp(d).date() for d in confirmed_open)
        both = self.extra_closures & self.confirmed_open
        if both:
            raise ValueError(f"calendar: {min(both)} is both in extra_closures and in confirmed_open; keep one")
        self._xkrx, closed, names = _library_days()
        self.library_closures = dict(zip((d.date() for d in closed), names.tolist(), strict=True))
        drop = closed.union(pd.DatetimeIndex(sorted(self.extra_closures)))
        drop = drop[~drop.isin(pd.DatetimeIndex(sorted(self.confirmed_open)))]
        sessions = self._xkrx[~self._xkrx.isin(drop)]
        reopened = pd.DatetimeIndex(sorted(self.confirmed_open))
        self._sessions = sessions.union(reopened[(reopened >= self._xkrx[0]) & (reopened <= self._xkrx[-1])])

    def disagreements(self, today: dt.date, days: int = 365) -> list[tuple[dt.date, str]]:
        """Weekdays from `today` to `days` later (within exchange_calendars' horizon) that the two libraries
        disagree about and app.yaml has not settled: (day, what each library says), oldest first."""
        end = min(pd.Timestamp(today) + pd.Timedelta(days=days), self._xkrx[-1])
        settled = self.extra_closures | self.confirmed_open
        out = []
        window = pd.bdate_range(pd.Timestamp(today), end)
        for ts, session in zip(window, window.isin(self._xkrx), strict=True):
            day = ts.date()
            if day in settled or session != (day in self.library_closures):
                continue  # agreed: a session nobody closes, or a closure both know
            said = (f"exchange_calendars lists a session, holidays closes it ({self.library_closures[day]})"
                    if session else "exchange_calendars closes it, holidays lists no holiday")
            out.append((day, said))
        return out

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
    """Where both libraries' days are cached: building them costs over a second, every job needs them, and they
    only change with either library's version (and the horizon, which moves with the date)."""
    from importlib.metadata import version

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "krx-alertor"
    return base / (f"xkrx-{version('exchange_calendars')}-holidays-{version('holidays')}-"
                   f"{dt.date.today():%Y%m%d}.npz")


@functools.lru_cache(maxsize=1)
def _library_days() -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray]:
    """(exchange_calendars' XKRX sessions, the holidays package's XKRX closures over the same years, their
    names), from the cache when it can answer."""
    path = cache_path()
    try:
        with np.load(path, allow_pickle=False) as cached:
            return (pd.DatetimeIndex(cached["sessions"].astype("datetime64[ns]")),
                    pd.DatetimeIndex(cached["closed"].astype("datetime64[ns]")), cached["names"].astype(str))
    except (OSError, ValueError, KeyError):  # no cache yet, or a damaged one: build it again
        pass
    import exchange_calendars as xcals  # slow to import: only when the cache cannot answer
    import holidays

    sessions = pd.DatetimeIndex(xcals.get_calendar("XKRX").sessions).tz_localize(None)
    found = holidays.financial_holidays("XKRX", years=range(sessions[0].year, sessions[-1].year + 1))
    days = sorted(found)
    closed = pd.DatetimeIndex([pd.Timestamp(d) for d in days])
    names = np.array([found[d] for d in days], dtype=str)
    buf = io.BytesIO()
    np.savez(buf, sessions=sessions.to_numpy().astype("datetime64[D]"),
             closed=closed.to_numpy().astype("datetime64[D]"), names=names)
    try:
        atomic.write_bytes(path, buf.getvalue())
        for old in path.parent.glob("xkrx-*"):  # yesterday's or another version's: never read again
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:  # a read-only home directory only costs the time
        pass
    return sessions, closed, names


def load(home: Home | None = None, cfg: Mapping[str, Any] | None = None) -> TradingCalendar:
    """The calendar with the extra closures and confirmed sessions of app.yaml's `calendar` section: `cfg` when
    the command has loaded it already, else read from the home's app.yaml."""
    cfg = config.load("app", home)["calendar"] if cfg is None else cfg
    return TradingCalendar(cfg["extra_closures"], cfg["confirmed_open"])
