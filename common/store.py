"""The end-of-day store: Parquet under data/eod/, one file per year, every write atomic.

Layout: data/eod/<YYYY>.parquet (rows sorted by date, ticker), data/eod/tickers.parquet (name, market and first
and last date of every ticker ever seen) and data/eod/manifest.json (dates stored, dates found closed, partial
days: stored from a fallback source for a few tickers only, replaced by the next whole day written). The
manifest is written last, so a crash at any point leaves a store whose manifest never claims a missing day;
the worst case is a day fetched again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common import atomic, formats, locks, safeio
from common.errors import AlertorError
from common.home import Home

# The normalized frame every source returns for one trading day.
COLUMNS = [
    "date", "ticker", "name", "market", "open", "high", "low", "close",
    "volume", "value", "change_pct", "base", "market_cap", "halted",
]
SCHEMA = pa.schema([
    ("date", pa.date32()),
    ("ticker", pa.string()),
    ("name", pa.string()),
    ("market", pa.string()),
    ("open", pa.int64()),
    ("high", pa.int64()),
    ("low", pa.int64()),
    ("close", pa.int64()),
    ("volume", pa.int64()),
    ("value", pa.int64()),
    ("change_pct", pa.float64()),
    # KRX's base price of the row (close - CMPPREVDD_PRC): the previous close on an ordinary day, the previous close
    # adjusted by the ratio on a corporate action's day (common.corporate_actions). Null in year files written
    # before the column existed: no action known there.
    ("base", pa.int64()),
    ("market_cap", pa.int64()),
    ("halted", pa.bool_()),
])
LOCK_NAME = ".store.lock"
MANIFEST_MAX_BYTES = 16 << 20  # ~15 bytes a day: centuries
PANEL_FIELDS = ("open", "high", "low", "close", "volume", "value", "change_pct", "base", "market_cap", "halted")


class StoreError(AlertorError, RuntimeError):
    pass


def validate_day(frame: pd.DataFrame, day: dt.date, source: str) -> pd.DataFrame:
    """Check a source's frame for one day against COLUMNS; return it typed and sorted by ticker."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise StoreError(f"{source} {day}: missing columns {missing}")
    out = frame[COLUMNS].copy()
    if not (pd.to_datetime(out["date"]).dt.date == day).all():
        raise StoreError(f"{source} {day}: rows dated another day")
    if out["ticker"].duplicated().any():
        dup = out.loc[out["ticker"].duplicated(), "ticker"].iloc[0]
        raise StoreError(f"{source} {day}: ticker {dup} appears twice")
    bad = out["ticker"].map(lambda t: not (isinstance(t, str) and len(t) == 6))
    if bad.any():
        raise StoreError(f"{source} {day}: ticker {out.loc[bad, 'ticker'].iloc[0]!r} is not a 6-character string")
    return out.sort_values("ticker", kind="stable").reset_index(drop=True)


class EodStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_home(cls, home: Home) -> EodStore:
        return cls(home.data / "eod")

    # --- manifest --------------------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def _manifest(self) -> dict:
        try:
            data = safeio.read_json(self.manifest_path, MANIFEST_MAX_BYTES)
        except FileNotFoundError:
            return {"dates": [], "closed": [], "source": None, "partial": {}}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.manifest_path}: unreadable manifest ({exc}); expected keys dates, closed") from exc
        try:
            manifest = {"dates": list(data["dates"]), "closed": list(data["closed"]), "source": data.get("source"),
                        "partial": dict(data.get("partial") or {})}
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.manifest_path}: unreadable manifest ({exc}); expected keys dates, closed") from exc
        for key in ("dates", "closed"):
            for k, day in enumerate(manifest[key]):
                try:
                    dt.date.fromisoformat(day)
                except (TypeError, ValueError):
                    raise StoreError(f"{self.manifest_path}: {key}[{k}]: expected a date YYYY-MM-DD, got "
                                     f"{day!r:.40}") from None
        for day, info in manifest["partial"].items():
            if day not in manifest["dates"] or not isinstance(info, dict) or not isinstance(info.get("source"), str) \
                    or not isinstance(info.get("tickers"), list):
                raise StoreError(f"{self.manifest_path}: partial[{day!r:.40}]: expected a stored date with source "
                                 "and tickers")
        return manifest

    def _write_manifest(self, dates: set[str], closed: set[str], source: str | None,
                        partial: dict | None = None) -> None:
        atomic.write_json(self.manifest_path, {
            "schema": formats.EOD_MANIFEST, "source": source, "dates": sorted(dates), "closed": sorted(closed),
            **({"partial": dict(sorted(partial.items()))} if partial else {}),
        })

    def source(self) -> str | None:
        """The source the stored days came from (None for an empty store)."""
        return self._manifest()["source"]

    def check_source(self, source: str) -> None:
        """A store holds one source's data: sample prices must never mix with real ones."""
        held = self.source()
        if held is not None and held != source:
            raise StoreError(f"{self.root} holds {held} data; ingesting {source} into it would mix the two. Use "
                             f"another home (KRX_HOME) for {source}, or move {self.root} away first")

    def stored_dates(self) -> set[dt.date]:
        return {dt.date.fromisoformat(d) for d in self._manifest()["dates"]}

    def closed_dates(self) -> set[dt.date]:
        """Days a source answered as closed although the calendar listed them as trading days."""
        return {dt.date.fromisoformat(d) for d in self._manifest()["closed"]}

    def partial_dates(self) -> dict[dt.date, dict]:
        """Stored days that hold only a few tickers from a fallback source: day -> {"source", "tickers"}."""
        return {dt.date.fromisoformat(d): info for d, info in self._manifest()["partial"].items()}

    def partial_flags(self, index: pd.DatetimeIndex) -> pd.Series:
        """True for the rows of a panel's `index` that are partial days (common.strategy: no new buys there)."""
        days = pd.DatetimeIndex([pd.Timestamp(d) for d in self.partial_dates()])
        return pd.Series(index.isin(days), index=index, name="partial")

    def last_date(self) -> dt.date | None:
        dates = self._manifest()["dates"]
        return dt.date.fromisoformat(max(dates)) if dates else None

    def first_date(self) -> dt.date | None:
        dates = self._manifest()["dates"]
        return dt.date.fromisoformat(min(dates)) if dates else None

    # --- self-check ----------------------------------------------------------------------------------------

    def _held_dates(self, years: Iterable[int]) -> tuple[set[dt.date], dict[int, str]]:
        """The days the year files really hold, and the year files that cannot be read (year -> why)."""
        held: set[dt.date] = set()
        damaged: dict[int, str] = {}
        for year in sorted(set(years)):
            path = self._year_path(year)
            if not path.exists():
                continue
            try:
                column = pq.read_table(path, columns=["date"]).column("date")
                held |= set(pa.compute.unique(column).to_pylist())
            except (OSError, pa.ArrowException) as exc:  # truncated, overwritten, not Parquet
                damaged[year] = f"{type(exc).__name__}: {str(exc)[:120]}"
        return held, damaged

    def missing_days(self, start: dt.date | None = None, end: dt.date | None = None) -> list[dt.date]:
        """Days the manifest lists between two dates (inclusive) that the year files do not hold: a lost, truncated
        or replaced year file. The manifest must never claim a day its files lack."""
        listed = {d for d in self.stored_dates() if (start is None or d >= start) and (end is None or d <= end)}
        held, _damaged = self._held_dates(d.year for d in listed)
        return sorted(listed - held)

    def require_days(self, start: dt.date | None, end: dt.date | None) -> None:
        """StoreError naming the days of the window the files lack and how to fetch them again."""
        gone = self.missing_days(start, end)
        if gone:
            shown = ", ".join(d.isoformat() for d in gone[:5]) + (f" and {len(gone) - 5} more" if gone[5:] else "")
            raise StoreError(f"{self.root}: the manifest lists {len(gone)} day(s) its year files do not hold "
                             f"({shown}); repair with `krx ingest --start {gone[0]} --end {gone[-1]}` (it fetches "
                             "them again)")

    def repair(self) -> tuple[list[dt.date], list[str]]:
        """Make the manifest tell the truth: drop the days the files lack (so an ingest fetches them again) and move
        an unreadable year file aside (`<year>.parquet.damaged-<time>`, kept for a look). Returns (the days
        dropped, the files moved aside)."""
        with locks.locked(self.root / LOCK_NAME):
            manifest = self._manifest()
            listed = {dt.date.fromisoformat(d) for d in manifest["dates"]}
            held, damaged = self._held_dates(d.year for d in listed)
            moved = []
            for year, _why in damaged.items():
                path = self._year_path(year)
                aside = path.with_name(f"{path.name}.damaged-{dt.datetime.now():%Y%m%d%H%M%S}")
                path.replace(aside)
                moved.append(aside.name)
            gone = sorted(listed - held)
            if gone:
                kept = {d.isoformat() for d in listed - set(gone)}
                self._write_manifest(kept, set(manifest["closed"]), manifest["source"],
                                     {k: v for k, v in manifest["partial"].items() if k in kept})
            return gone, moved

    # --- writing ---------------------------------------------------------------------------------------------

    def _year_path(self, year: int) -> Path:
        return self.root / f"{year}.parquet"

    def write(self, frames: Iterable[pd.DataFrame], closed: Iterable[dt.date] = (), source: str | None = None,
              partial: str | None = None) -> int:
        """Store whole days (frames from `validate_day`) and closed days of `source`; returns the rows written.
        `partial`: the frames are partial days from this fallback source (the store's source is kept; a sample
        store refuses them). A whole day written later replaces a partial one."""
        frames = [f for f in frames if len(f)]
        # store-wide: two writers would each merge into the year file and manifest they read, and one would lose
        # the other's days. Under the lock each reads what the other wrote.
        with locks.locked(self.root / LOCK_NAME):
            return self._write(frames, closed, source, partial)

    def _write(self, frames: list[pd.DataFrame], closed: Iterable[dt.date], source: str | None,
               partial: str | None) -> int:
        if source is not None:
            self.check_source(source)
        manifest = self._manifest()
        if partial is not None and manifest["source"] == "sample":
            raise StoreError(f"{self.root} holds sample data; partial days from {partial} would mix real prices "
                             "into it. Use a home (KRX_HOME) with real data")
        dates, closed_set = set(manifest["dates"]), set(manifest["closed"])
        partial_days = dict(manifest["partial"])
        rows = 0
        if frames:
            new = pd.concat(frames, ignore_index=True)
            new["date"] = pd.to_datetime(new["date"]).dt.date
            new_table = pa.Table.from_pandas(new[COLUMNS], schema=SCHEMA, preserve_index=False)
            years = pd.Series([d.year for d in new["date"]])
            for year in sorted(years.unique()):
                part = new_table.filter(pa.array((years == year).to_numpy()))
                self._merge_year(int(year), part)
            self._merge_tickers(new)
            rows = len(new)
            written = {d.isoformat() for d in new["date"].unique()}
            dates |= written
            for day in written:
                partial_days.pop(day, None)
                if partial is not None:
                    tickers = new.loc[new["date"] == dt.date.fromisoformat(day), "ticker"]
                    partial_days[day] = {"source": partial, "tickers": sorted(tickers.astype(str))}
        closed_set |= {d.isoformat() for d in closed}
        self._write_manifest(dates, closed_set - dates, source or manifest["source"], partial_days)
        return rows

    def _merge_year(self, year: int, part: pa.Table) -> None:
        path = self._year_path(year)
        part = part.sort_by([("date", "ascending"), ("ticker", "ascending")])
        if path.exists():
            old = pq.read_table(path, schema=SCHEMA)
            if len(old) and pa.compute.min(part["date"]).as_py() > pa.compute.max(old["date"]).as_py():
                part = pa.concat_tables([old, part])  # the daily case: new days after the stored ones, in order
            else:
                replaced = pa.compute.is_in(old["date"], value_set=pa.compute.unique(part["date"]))
                part = pa.concat_tables([old.filter(pa.compute.invert(replaced)), part])
                part = part.sort_by([("date", "ascending"), ("ticker", "ascending")])
        atomic.write_bytes(path, _parquet_bytes(part))

    def _merge_tickers(self, new: pd.DataFrame) -> None:
        """Keep one row per ticker ever seen: its latest name and market, its first and last date."""
        rows = new[["ticker", "name", "market", "date"]].assign(date=pd.to_datetime(new["date"]))
        rows = rows.sort_values("date", kind="stable")
        first = rows.drop_duplicates("ticker", keep="first").set_index("ticker")["date"].rename("first_date")
        last = rows.drop_duplicates("ticker", keep="last").set_index("ticker")
        seen = last.rename(columns={"date": "last_date"}).join(first)
        old = self.tickers()
        if len(old):
            old = old.assign(first_date=pd.to_datetime(old["first_date"]), last_date=pd.to_datetime(old["last_date"]))
            both = pd.concat([old, seen]).rename_axis("ticker").reset_index()
            # the newest name and market win, whichever side they came from; dates span both
            span = both.groupby("ticker").agg(first_date=("first_date", "min"), last_date=("last_date", "max"))
            latest = both.sort_values("last_date", kind="stable").drop_duplicates("ticker", keep="last")
            seen = latest.set_index("ticker")[["name", "market"]].join(span)
        seen = seen[["name", "market", "first_date", "last_date"]].sort_index()
        seen["first_date"], seen["last_date"] = seen["first_date"].dt.date, seen["last_date"].dt.date
        table = pa.Table.from_pandas(seen.rename_axis("ticker").reset_index(), preserve_index=False)
        atomic.write_bytes(self.root / "tickers.parquet", _parquet_bytes(table))

    # --- reading ---------------------------------------------------------------------------------------------

    def tickers(self) -> pd.DataFrame:
        """Index ticker; columns name, market, first_date, last_date."""
        path = self.root / "tickers.parquet"
        if not path.exists():
            empty = pd.Index([], name="ticker")
            return pd.DataFrame(columns=["name", "market", "first_date", "last_date"], index=empty)
        return pq.read_table(path).to_pandas().set_index("ticker")

    def _years(self, start: dt.date | None, end: dt.date | None) -> list[Path]:
        paths = sorted(self.root.glob("[0-9][0-9][0-9][0-9].parquet"))
        lo, hi = (start.year if start else 0), (end.year if end else 9999)
        return [p for p in paths if lo <= int(p.stem) <= hi]

    def read_rows(self, start: dt.date | None = None, end: dt.date | None = None,
                  columns: list[str] | None = None) -> pa.Table:
        """The stored rows between two dates (inclusive) as one Arrow table."""
        paths = self._years(start, end)
        if not paths:
            return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
        filters = []
        if start is not None:
            filters.append(("date", ">=", start))
        if end is not None:
            filters.append(("date", "<=", end))
        tables = [pq.read_table(p, columns=columns, filters=filters or None, schema=SCHEMA) for p in paths]
        return pa.concat_tables(tables)

    def load_panel(self, fields: Iterable[str] = ("close",), start: dt.date | None = None,
                   end: dt.date | None = None) -> dict[str, pd.DataFrame]:
        """Wide panels (DatetimeIndex of stored days x ticker columns, sorted) per field; NaN where no row
        (not yet listed or delisted), and for `base` also where the row predates the column. `halted` is a bool
        panel (False where no row)."""
        fields = list(fields)
        unknown = [f for f in fields if f not in PANEL_FIELDS]
        if unknown:
            raise StoreError(f"unknown panel field(s) {unknown}; expected some of {list(PANEL_FIELDS)}")
        table = self.read_rows(start, end, ["date", "ticker", *fields])
        days = np.asarray(table["date"].combine_chunks().cast(pa.int32()).to_numpy(zero_copy_only=False))
        enc = pa.compute.dictionary_encode(table["ticker"]).combine_chunks()
        names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
        order = np.argsort(names)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        ti = rank[np.asarray(enc.indices.to_numpy(zero_copy_only=False))]
        # rows are sorted by date within each year file and the files are read in year order
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if len(days) else np.array([], dtype=int)
        di = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(days)]))
        index = pd.DatetimeIndex(days[starts].astype("datetime64[D]").astype("datetime64[ns]"), name="date")
        columns = pd.Index(names[order], name="ticker")
        out = {}
        for field in fields:
            values = table[field].combine_chunks().to_numpy(zero_copy_only=False)
            if field == "halted":
                grid = np.zeros((len(index), len(columns)), dtype=bool)
            else:
                grid = np.full((len(index), len(columns)), np.nan)
            grid[di, ti] = values
            out[field] = pd.DataFrame(grid, index=index, columns=columns)
        return out

    def content_hash(self, start: dt.date | None = None, end: dt.date | None = None) -> str:
        """A short hash of the stored rows in a window: ties a backtest result to exactly the data it saw (days
        added after the window leave it unchanged)."""
        digest = hashlib.sha256()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, SCHEMA) as writer:
            writer.write_table(self.read_rows(start, end).combine_chunks())
        digest.update(sink.getvalue().to_pybytes())
        return digest.hexdigest()[:16]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
