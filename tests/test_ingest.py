from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pandas as pd
from conftest import krx

from common.calendar import TradingCalendar
from common.home import Home
from common.store import EodStore
from nas.ingest import ingest
from nas.sources.sample import SampleSource


class RecordingSample(SampleSource):
    """The real sample source, remembering which days it was asked for."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.asked: list[dt.date] = []

    def fetch_day(self, day: dt.date) -> pd.DataFrame | None:
        self.asked.append(day)
        return super().fetch_day(day)


def test_incremental_rerun_fetches_nothing(home: Home, cal: TradingCalendar) -> None:
    days = cal.sessions(dt.date(2025, 3, 3), dt.date(2025, 4, 30))
    first = RecordingSample(cal, tickers=40)
    summary = ingest(home, first, days)
    assert summary["days_fetched"] == len(days) and first.asked == days
    again = RecordingSample(cal, tickers=40)
    summary = ingest(home, again, days)
    assert again.asked == [] and summary["days_skipped"] == len(days) and summary["days_fetched"] == 0
    more = RecordingSample(cal, tickers=40)
    longer = cal.sessions(dt.date(2025, 3, 3), dt.date(2025, 5, 9))
    ingest(home, more, longer)
    assert more.asked == longer[len(days):]  # only the missing days
    forced = RecordingSample(cal, tickers=40)
    ingest(home, forced, days[:3], force=True)
    assert forced.asked == days[:3]


def test_incremental_equals_backfill(tmp_path, cal: TradingCalendar) -> None:
    days = cal.sessions(dt.date(2025, 3, 3), dt.date(2025, 4, 30))
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    ingest(a, SampleSource(cal, tickers=40), days)
    for chunk in (days[:7], days[7:20], days[20:]):
        ingest(b, SampleSource(cal, tickers=40), chunk)
    pa_, pb = (EodStore.for_home(h).load_panel(["close", "volume"]) for h in (a, b))
    for field in pa_:
        pd.testing.assert_frame_equal(pa_[field], pb[field])


def test_latest_complete_day(cal: TradingCalendar) -> None:
    seoul = ZoneInfo("Asia/Seoul")
    assert cal.latest_complete_day(dt.datetime(2026, 11, 20, 17, 0, tzinfo=seoul)) == dt.date(2026, 11, 20)
    assert cal.latest_complete_day(dt.datetime(2026, 11, 20, 10, 0, tzinfo=seoul)) == dt.date(2026, 11, 19)
    assert cal.latest_complete_day(dt.datetime(2026, 11, 22, 10, 0, tzinfo=seoul)) == dt.date(2026, 11, 20)


def test_ingest_cli(home: Home) -> None:
    out = krx("ingest", "--start", "2025-05-26", "--end", "2025-06-05", home=home)
    assert out.returncode == 0, out.stderr
    assert "INGEST_DONE" in out.stderr and "days_fetched=8" in out.stderr and "rc=0" in out.stderr
    store = EodStore.for_home(home)
    assert dt.date(2025, 6, 3) not in store.stored_dates()  # presidential election: closed
    assert len(store.stored_dates()) == 8
    log_files = list(home.logs.glob("ingest_*.log"))
    assert log_files and "INGEST_DONE" in log_files[0].read_text()
    again = krx("ingest", "--start", "2025-05-26", "--end", "2025-06-05", home=home)
    assert "days_fetched=0" in again.stderr and "days_skipped=8" in again.stderr
    logged = [json.loads(line) for line in (home.state / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["correlation_id"], e["days_fetched"]) for e in logged] == [
        ("ingest_done", "20250605-momentum_topN_v1", 8), ("ingest_done", "20250605-momentum_topN_v1", 0)]


def test_ingest_cli_fails_cleanly(home: Home) -> None:
    (home.configs / "app.yaml").write_text("source: sample\nsample:\n  tickers: 5000\n")
    out = krx("ingest", "--date", "2025-06-02", home=home)
    assert out.returncode == 3
    assert "sample.tickers" in out.stderr and "between 10 and 3000" in out.stderr
    assert not (home.data / "eod" / "manifest.json").exists()
    bad_range = krx("ingest", "--start", "2025-06-05", "--end", "2025-06-01", home=home,
                    env={"KRX__APP__SAMPLE__TICKERS": "50"})
    assert bad_range.returncode == 3 and "is after" in bad_range.stderr


def test_a_store_never_mixes_sources(home: Home, cal: TradingCalendar) -> None:
    ingest(home, SampleSource(cal, tickers=20), cal.sessions(dt.date(2025, 3, 3), dt.date(2025, 3, 7)))
    assert EodStore.for_home(home).source() == "sample"
    out = krx("ingest", "--source", "pykrx", "--date", "2025-03-10", home=home)
    assert out.returncode == 3 and "holds sample data" in out.stderr and "KRX_HOME" in out.stderr
    assert EodStore.for_home(home).last_date() == dt.date(2025, 3, 7)


def test_real_source_refuses_a_day_whose_close_is_not_final(home: Home) -> None:
    """KRX serves intraday prices before the close; stored as the day's EOD they would stay (incremental ingest
    never fetches a stored day again). A real source only fetches days up to the latest complete one."""
    from common import calendar

    cal = calendar.load(home)
    not_final = cal.next_trading_day(cal.latest_complete_day())
    out = krx("ingest", "--source", "pykrx", "--date", not_final.isoformat(), home=home,
              env={"KRX_ID": "someone", "KRX_PW": "not-a-real-password"})
    assert out.returncode == 3, out.stderr
    assert "not final" in out.stderr and "not-a-real-password" not in out.stderr
    assert not (home.data / "eod" / "manifest.json").exists()
