from __future__ import annotations

import datetime as dt

import pytest
from conftest import krx

from common.calendar import TradingCalendar
from common.home import Home


@pytest.mark.parametrize("day", ["2024-04-10", "2024-10-01", "2024-12-31", "2025-06-03", "2026-06-03"])
def test_known_closures(cal: TradingCalendar, day: str) -> None:
    assert not cal.is_trading_day(dt.date.fromisoformat(day))


def test_extra_closures_come_from_config() -> None:
    plain = TradingCalendar()
    assert plain.is_trading_day(dt.date(2026, 6, 3))  # the library still lists the election day as open
    assert not TradingCalendar([dt.date(2026, 6, 3)]).is_trading_day(dt.date(2026, 6, 3))


def test_sessions_and_next(cal: TradingCalendar) -> None:
    assert cal.sessions(dt.date(2026, 6, 1), dt.date(2026, 6, 5)) == [
        dt.date(2026, 6, 1), dt.date(2026, 6, 2), dt.date(2026, 6, 4), dt.date(2026, 6, 5)]
    assert cal.next_trading_day(dt.date(2026, 6, 2)) == dt.date(2026, 6, 4)
    assert cal.next_trading_day(dt.date(2026, 11, 20)) == dt.date(2026, 11, 23)  # Friday -> Monday
    assert cal.previous_trading_day(dt.date(2026, 11, 22)) == dt.date(2026, 11, 20)


def test_calendar_cli(home: Home) -> None:
    out = krx("calendar", "2026-06-01", "2026-06-05", home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2026-06-01", "2026-06-02", "2026-06-04", "2026-06-05"]
    nxt = krx("calendar", "--next", "2026-06-02", home=home)
    assert nxt.stdout.strip() == "2026-06-04"
    bad = krx("calendar", "--next", "2026-13-01", home=home)
    assert bad.returncode == 3 and "expected a date" in bad.stderr  # a usage error is a failure, never "blocked"


def test_sessions_cache_matches_the_library_and_survives_damage(tmp_path, monkeypatch) -> None:
    import exchange_calendars as xcals
    import pandas as pd

    from common import calendar

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    truth = pd.DatetimeIndex(xcals.get_calendar("XKRX").sessions).tz_localize(None)
    (tmp_path / "krx-alertor").mkdir()
    stale = tmp_path / "krx-alertor" / "xkrx-0.0-20000101.npy"
    stale.write_bytes(b"old")
    calendar._xkrx_sessions.cache_clear()
    try:
        built = calendar._xkrx_sessions()  # no cache: built from the library, then cached
        assert calendar.cache_path().is_file() and not stale.exists()
        calendar._xkrx_sessions.cache_clear()
        cached = calendar._xkrx_sessions()  # read back from the cache
        calendar.cache_path().write_bytes(b"\x93NUMPY garbage")
        calendar._xkrx_sessions.cache_clear()
        rebuilt = calendar._xkrx_sessions()  # a damaged cache is built again, never trusted
    finally:
        calendar._xkrx_sessions.cache_clear()
    for sessions in (built, cached, rebuilt):
        pd.testing.assert_index_equal(sessions, truth, check_names=False)
