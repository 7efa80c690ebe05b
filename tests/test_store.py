from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import corporate_actions
from common.calendar import TradingCalendar
from common.home import Home
from common.store import SCHEMA, EodStore, StoreError, validate_day
from nas.sources.sample import SampleSource

DAYS = (dt.date(2024, 12, 2), dt.date(2025, 1, 31))  # crosses a year boundary


def _frames(cal: TradingCalendar, tickers: int = 50) -> dict[dt.date, pd.DataFrame]:
    return SampleSource(cal, tickers=tickers).fetch_days(cal.sessions(*DAYS))


def test_panel_matches_rows(home: Home, cal: TradingCalendar) -> None:
    frames = _frames(cal)
    store = EodStore.for_home(home)
    store.write(validate_day(f, d, "sample") for d, f in frames.items())
    panel = store.load_panel(["close", "halted", "volume"])
    close = panel["close"]
    assert list(close.index.date) == sorted(frames)
    assert list(close.columns) == sorted(close.columns)
    rows = pd.concat(frames.values())
    for _, row in rows.sample(40, random_state=1).iterrows():
        assert close.at[pd.Timestamp(row["date"]), row["ticker"]] == row["close"]
        assert panel["halted"].at[pd.Timestamp(row["date"]), row["ticker"]] == row["halted"]
    expected_cells = close.size - len(rows)
    assert close.isna().to_numpy().sum() == expected_cells  # NaN exactly where no row exists
    window = store.load_panel(["close"], start=dt.date(2025, 1, 1))["close"]
    assert window.index.min() >= pd.Timestamp("2025-01-01")
    assert store.last_date() == max(frames) and store.first_date() == min(frames)
    meta = store.tickers()
    assert set(meta.index) == set(rows["ticker"])
    assert meta.loc["069500", "market"] == "ETF"


def test_crash_between_temp_write_and_rename_keeps_previous_store(
    home: Home, cal: TradingCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = _frames(cal)
    days = sorted(frames)
    store = EodStore.for_home(home)
    store.write(validate_day(frames[d], d, "sample") for d in days[:10])
    before = store.load_panel(["close"])["close"]
    files_before = {p.name: p.read_bytes() for p in store.root.iterdir() if not p.name.startswith(".")}

    def crash(src, dst):  # the process dies after writing the temporary file, before the rename
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.write(validate_day(frames[d], d, "sample") for d in days[10:20])
    monkeypatch.undo()
    after = EodStore.for_home(home)
    pd.testing.assert_frame_equal(after.load_panel(["close"])["close"], before)
    assert after.stored_dates() == set(days[:10])
    assert {p.name: p.read_bytes() for p in store.root.iterdir() if not p.name.startswith(".")} == files_before


def test_rewrite_of_a_day_replaces_it(home: Home, cal: TradingCalendar) -> None:
    frames = _frames(cal)
    day = sorted(frames)[3]
    store = EodStore.for_home(home)
    store.write([validate_day(frames[day], day, "sample")])
    changed = frames[day].copy()
    changed["close"] = changed["close"] + 1
    store.write([validate_day(changed, day, "sample")])
    close = store.load_panel(["close"])["close"]
    assert len(close) == 1
    assert (close.iloc[0].dropna() == changed.set_index("ticker")["close"].reindex(close.columns).dropna()).all()


def test_closed_days_are_recorded_not_stored(home: Home) -> None:
    store = EodStore.for_home(home)
    store.write([], closed=[dt.date(2025, 5, 5)])
    assert store.closed_dates() == {dt.date(2025, 5, 5)} and store.stored_dates() == set()
    assert store.load_panel(["close"])["close"].empty


def test_validate_day_rejects_bad_frames(cal: TradingCalendar) -> None:
    day = dt.date(2025, 1, 2)
    frame = SampleSource(cal, tickers=20).fetch_day(day)
    with pytest.raises(StoreError, match="missing columns"):
        validate_day(frame.drop(columns=["close"]), day, "x")
    bad = frame.copy()
    bad.loc[0, "ticker"] = "12345"
    with pytest.raises(StoreError, match="not a 6-character string"):
        validate_day(bad, day, "x")
    with pytest.raises(StoreError, match="another day"):
        validate_day(frame, dt.date(2025, 1, 3), "x")


def test_unreadable_manifest_is_a_clear_error(home: Home) -> None:
    store = EodStore.for_home(home)
    store.root.mkdir(parents=True, exist_ok=True)
    store.manifest_path.write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: unreadable manifest"):
        store.stored_dates()


def test_content_hash_covers_the_window_only(home: Home, cal: TradingCalendar) -> None:
    frames = _frames(cal)
    days = sorted(frames)
    store = EodStore.for_home(home)
    store.write(validate_day(frames[d], d, "sample") for d in days[:15])
    window = store.content_hash(days[0], days[9])
    store.write(validate_day(frames[d], d, "sample") for d in days[15:])  # later days of the same year
    assert store.content_hash(days[0], days[9]) == window
    assert store.content_hash(days[0], days[10]) != window
    changed = frames[days[5]].copy()
    changed.loc[0, "close"] += 1
    store.write([validate_day(changed, days[5], "sample")])
    assert store.content_hash(days[0], days[9]) != window


def test_base_is_a_panel_field(home: Home, cal: TradingCalendar) -> None:
    frames = _frames(cal)
    store = EodStore.for_home(home)
    store.write(validate_day(f, d, "sample") for d, f in frames.items())
    panel = store.load_panel(["close", "base", "open"])
    rows = pd.concat(frames.values()).set_index(["date", "ticker"])
    base = panel["base"]
    assert base.dtypes.eq("float64").all() and base.shape == panel["close"].shape
    assert base.isna().to_numpy().sum() == base.size - len(rows)  # NaN exactly where no row exists
    stacked = base.stack()
    stacked.index = stacked.index.set_levels(stacked.index.levels[0].date, level=0)
    assert (stacked == rows["base"].reindex(stacked.index)).all()


def test_year_files_from_before_base_still_work(home: Home, cal: TradingCalendar) -> None:
    """A store written before the `base` column: its rows read with a null base (no corporate action known), and
    a write into such a year gives a file with the column, old rows null, new rows filled."""
    frames = _frames(cal)
    days = sorted(frames)
    store = EodStore.for_home(home)
    store.write(validate_day(frames[d], d, "sample") for d in days[:10])
    old_schema = pa.schema([f for f in SCHEMA if f.name != "base"])
    for path in store.root.glob("[0-9]*.parquet"):  # rewrite each year file as the previous version did
        pq.write_table(pq.read_table(path).select(old_schema.names).cast(old_schema), path)
    assert "base" not in pq.read_schema(store.root / "2024.parquet").names
    old_hash = store.content_hash()
    panel = store.load_panel(["close", "base"])
    assert panel["base"].isna().all().all() and panel["close"].notna().any().any()
    assert (corporate_actions.factors(panel["close"].to_numpy(), panel["base"].to_numpy()) == 1).all()
    later = [d for d in days[10:] if d.year == 2024][:3]
    store.write(validate_day(frames[d], d, "sample") for d in later)  # the daily case: days after the stored ones
    store.write([validate_day(frames[days[2]], days[2], "sample")])   # and a rewrite of an old day
    assert "base" in pq.read_schema(store.root / "2024.parquet").names
    base = store.load_panel(["base"])["base"]
    filled = {d.date() for d in base.index[base.notna().any(axis=1)]}
    assert filled == {*later, days[2]}
    assert store.content_hash() != old_hash and len(store.content_hash()) == 16


def test_validate_day_requires_base(cal: TradingCalendar) -> None:
    day = dt.date(2025, 1, 2)
    frame = SampleSource(cal, tickers=20).fetch_day(day)
    with pytest.raises(StoreError, match=r"missing columns \['base'\]"):
        validate_day(frame.drop(columns=["base"]), day, "x")
