from __future__ import annotations

import datetime as dt

import pytest
from conftest import krx

from common import calendar
from common.calendar import TradingCalendar
from common.config import ConfigError
from common.home import Home


@pytest.mark.parametrize("day", ["2024-04-10", "2024-10-01", "2024-12-31", "2025-06-03", "2026-06-03"])
def test_known_closures(cal: TradingCalendar, day: str) -> None:
    assert not cal.is_trading_day(dt.date.fromisoformat(day))


def test_closures_come_from_both_libraries_and_config() -> None:
    import exchange_calendars as xcals

    xkrx = xcals.get_calendar("XKRX")
    plain = TradingCalendar()
    for day in ("2026-06-03", "2026-07-17"):  # exchange_calendars 4.13.2 still lists both as sessions
        assert xkrx.is_session(day) and not plain.is_trading_day(dt.date.fromisoformat(day))
    assert plain.library_closures[dt.date(2026, 7, 17)] == "Constitution Day"
    assert not TradingCalendar([dt.date(2026, 6, 4)]).is_trading_day(dt.date(2026, 6, 4))  # config closes more
    reopened = TradingCalendar(confirmed_open=[dt.date(2027, 5, 3)])  # a closure only `holidays` knows, confirmed open
    assert reopened.is_trading_day(dt.date(2027, 5, 3)) and not plain.is_trading_day(dt.date(2027, 5, 3))
    with pytest.raises(ValueError, match="2026-06-04 is both in extra_closures and in confirmed_open"):
        TradingCalendar([dt.date(2026, 6, 4)], [dt.date(2026, 6, 4)])


def test_disagreements_in_the_next_12_months(cal: TradingCalendar) -> None:
    said = "exchange_calendars lists a session, holidays closes it"
    assert TradingCalendar().disagreements(dt.date(2026, 6, 1)) == [
        (dt.date(2026, 6, 3), f"{said} (Local Election Day)"), (dt.date(2026, 7, 17), f"{said} (Constitution Day)"),
        (dt.date(2027, 5, 3), f"{said} (Alternative holiday for Labor Day)")]
    assert [d for d, _ in TradingCalendar().disagreements(dt.date(2026, 6, 1), days=30)] == [dt.date(2026, 6, 3)]
    # the shipped app.yaml settles the 2026 days; confirming the 2027 one (either way) settles it too
    assert [d for d, _ in cal.disagreements(dt.date(2026, 6, 1))] == [dt.date(2027, 5, 3)]
    assert TradingCalendar([dt.date(2026, 6, 3), dt.date(2026, 7, 17)], [dt.date(2027, 5, 3)]).disagreements(
        dt.date(2026, 6, 1)) == []


def test_the_ops_summary_names_the_days_and_the_fix(home: Home) -> None:
    from nas import summary

    june = dt.datetime(2026, 6, 1, 9, 0)  # the clock injected: the next 12 months from then
    risk = {r["code"]: r for r in summary.build(home, now=june)["top_risks"]}["CALENDAR_DISAGREEMENT"]
    assert risk["severity"] == "MEDIUM" and risk["evidence_refs"] == ["configs/app.yaml"]
    assert "2027-05-03: exchange_calendars lists a session, holidays closes it" in risk["message"]
    assert "calendar.extra_closures (closed) or calendar.confirmed_open (KRX trades)" in risk["message"]
    app = home.configs / "app.yaml"
    app.write_text(app.read_text().replace("confirmed_open: []", "confirmed_open: [2027-05-03]"))
    assert "CALENDAR_DISAGREEMENT" not in {r["code"] for r in summary.build(home, now=june)["top_risks"]}
    app.write_text(app.read_text().replace("confirmed_open: [2027-05-03]", "confirmed_open: [May 3rd]"))
    with pytest.raises(ConfigError, match=r"calendar.confirmed_open.*a list of dates YYYY-MM-DD"):
        calendar.load(home)


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


def test_cache_holds_both_libraries_and_survives_damage(tmp_path, monkeypatch) -> None:
    from importlib.metadata import version

    import exchange_calendars as xcals
    import holidays
    import pandas as pd

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    truth = pd.DatetimeIndex(xcals.get_calendar("XKRX").sessions).tz_localize(None)
    closures = holidays.financial_holidays("XKRX", years=range(truth[0].year, truth[-1].year + 1))
    (tmp_path / "krx-alertor").mkdir()
    stale = tmp_path / "krx-alertor" / "xkrx-0.0-20000101.npy"
    stale.write_bytes(b"old")
    name = calendar.cache_path().name
    assert f"xkrx-{version('exchange_calendars')}-holidays-{version('holidays')}-" in name  # either one moves it
    calendar._library_days.cache_clear()
    try:
        built = calendar._library_days()  # no cache: built from the libraries, then cached
        assert calendar.cache_path().is_file() and not stale.exists()
        calendar._library_days.cache_clear()
        cached = calendar._library_days()  # read back from the cache
        calendar.cache_path().write_bytes(b"PK garbage")
        calendar._library_days.cache_clear()
        rebuilt = calendar._library_days()  # a damaged cache is built again, never trusted
    finally:
        calendar._library_days.cache_clear()
    for sessions, closed, names in (built, cached, rebuilt):
        pd.testing.assert_index_equal(sessions, truth, check_names=False)
        assert [d.date() for d in closed] == sorted(closures)
        assert names.tolist() == [closures[d] for d in sorted(closures)]


def test_calendar_outside_its_range_or_reversed_is_an_error(home: Home) -> None:
    reversed_ = krx("calendar", "2026-06-05", "2026-06-01", home=home)
    assert reversed_.returncode == 3 and "FROM 2026-06-05 is after TO 2026-06-01" in reversed_.stderr
    beyond = krx("calendar", "2026-06-01", "2199-01-01", home=home)
    assert beyond.returncode == 3 and "reaches outside the calendar" in beyond.stderr and not beyond.stdout
