"""Full-market scan speed: 2,700 sample tickers with one year of history (plus the strategy's warm-up).

Prints the time of `nas.scan.scan` (panel load from the store, indicators, the strategy's decision, names)
with a model portfolio of 10 holdings. Target: at most 1 s.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import calendar  # noqa: E402
from common.home import Home, init_home  # noqa: E402
from nas.ingest import ingest  # noqa: E402
from nas.scan import scan  # noqa: E402
from nas.sources.sample import SampleSource  # noqa: E402

TICKERS, END = 2700, dt.date(2025, 12, 30)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home, _ = init_home(Path(tmp) / "home")
        cal = calendar.load(home)
        start = END - dt.timedelta(days=365 + 320)  # one year to scan plus the 200-day warm-up
        src = SampleSource(cal, tickers=TICKERS, first_date=start)
        t0 = time.perf_counter()
        ingest(home, src, cal.sessions(start, END))
        print(f"setup: ingested {TICKERS} tickers {start}..{END} in {time.perf_counter() - t0:.1f}s")
        first = scan(home)
        picks = [r for r in first["rows"] if r["state"] == "BUY"][:10]
        (home.state / "portfolio.json").write_text(json.dumps({"positions": [
            {"ticker": r["ticker"], "entry_date": "2025-06-02", "entry_price": r["close"] * 1.05, "shares": 10}
            for r in picks]}))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            result = scan(Home(home.root))
            times.append(time.perf_counter() - t0)
    print(f"scan: universe {result['universe_size']}, after filters {result['after_filters']}, "
          f"{len(result['rows'])} rows, {len(result['excluded'])} excluded")
    print(f"scan time: median {statistics.median(times):.3f}s, min {min(times):.3f}s over 5 runs   target <= 1 s")


if __name__ == "__main__":
    main()
