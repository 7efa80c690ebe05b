"""Store speed on the sample market: 2,500 tickers x 10 years.

Prints the CPU time per ingested day split into generation (the sample source itself), normalize (validate_day)
and write (Parquet, atomic), and the time to load the close panel. Targets: normalize + write <= 50 ms a day,
close panel <= 0.5 s.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import calendar  # noqa: E402
from common.home import Home  # noqa: E402
from common.store import EodStore, validate_day  # noqa: E402
from nas.ingest import FLUSH_EVERY  # noqa: E402
from nas.sources.sample import SampleSource  # noqa: E402

TICKERS, START, END = 2500, dt.date(2016, 1, 4), dt.date(2025, 12, 30)


def main() -> None:
    cal = calendar.load(Home(Path(__file__).resolve().parent.parent))
    days = cal.sessions(START, END)
    src = SampleSource(cal, tickers=TICKERS, first_date=START)
    with tempfile.TemporaryDirectory() as tmp:
        store = EodStore(Path(tmp) / "eod")
        gen = norm = write = 0.0
        backfill, today = days[:-1], days[-1]  # the last day is held back for the daily append
        for i in range(0, len(backfill), FLUSH_EVERY):
            chunk = backfill[i:i + FLUSH_EVERY]
            t0 = time.process_time()
            raw = src.fetch_days(chunk)
            t1 = time.process_time()
            frames = [validate_day(raw[d], d, "sample") for d in chunk]
            t2 = time.process_time()
            store.write(frames)
            t3 = time.process_time()
            gen, norm, write = gen + t1 - t0, norm + t2 - t1, write + t3 - t2
        n = len(backfill)
        t0 = time.process_time()  # the daily job: one new day appended to its year's file
        store.write([validate_day(src.fetch_day(today), today, "sample")])
        append = time.process_time() - t0
        size = sum(p.stat().st_size for p in store.root.iterdir()) / 1e6
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            panel = store.load_panel(["close"])["close"]
            loads.append(time.perf_counter() - t0)
        one = []
        for _ in range(3):  # a day fetched again (--force): replaced inside its year's file
            t0 = time.process_time()
            store.write([validate_day(raw[chunk[-1]], chunk[-1], "sample")])
            one.append(time.process_time() - t0)
    loads.sort()
    print(f"sample market: {TICKERS} tickers x {n} trading days ({START}..{END}), store {size:.0f} MB")
    print(f"  generate (sample source)     {gen / n * 1000:7.1f} ms/day CPU")
    print(f"  normalize (validate_day)     {norm / n * 1000:7.1f} ms/day CPU")
    print(f"  write (Parquet, atomic)      {write / n * 1000:7.1f} ms/day CPU   (backfill, {FLUSH_EVERY} days a flush)")
    print(f"  normalize + write            {(norm + write) / n * 1000:7.1f} ms/day CPU   target <= 50")
    print(f"  daily append of one day      {append * 1000:7.1f} ms CPU (generate + normalize + write its year file)")
    print(f"  one day replaced (--force)   {sorted(one)[1] * 1000:7.1f} ms CPU (median of 3)")
    print(f"  load close panel             {loads[2]:7.3f} s median of 5, shape {panel.shape}   target <= 0.5")


if __name__ == "__main__":
    main()
