"""Corporate actions speed: factors() and adjust() on a whole-market panel, 2,500 rows x 2,500 tickers.

The panel is a random walk with listings, delistings and halts without rows (NaN), and 500 splits, reverse splits
and rights issues whose base prices are set as KRX sets them. Prints the best of 5 runs of each step and, as a
worst case, factors() on a panel where every base differs from the previous close. Target: factors + adjust of
closes and opens well under 1 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.corporate_actions import adjust, factors  # noqa: E402

ROWS, TICKERS, ACTIONS = 2500, 2500, 500


def panel(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    rng = np.random.default_rng(seed)
    close = np.round(10_000 * np.exp(np.cumsum(rng.normal(0, 0.02, (ROWS, TICKERS)), axis=0)))
    listed = rng.integers(0, ROWS // 2, TICKERS)
    delisted = np.where(rng.random(TICKERS) < 0.1, rng.integers(ROWS // 2, ROWS, TICKERS), ROWS)
    rows = np.arange(ROWS)[:, None]
    close[(rows < listed) | (rows >= delisted)] = np.nan
    close[rng.random((ROWS, TICKERS)) < 0.001] = np.nan  # halts without a row
    base = np.vstack([close[:1], close[:-1]])
    cells = np.flatnonzero(~np.isnan(close[1:]) & ~np.isnan(base[1:]))  # rows with a close after one with a close
    r, c = np.unravel_index(rng.choice(cells, ACTIONS, replace=False), (ROWS - 1, TICKERS))
    r = r + 1
    ratio = rng.choice([2.0, 5.0, 50.0, 0.1, 1.5, 1.0731], ACTIONS)
    base[r, c] = np.round(base[r, c] / ratio)
    open_ = np.round(close * (1 + rng.normal(0, 0.005, close.shape)))
    return close, base, open_, (r, c, ratio)


def best(fn, *args, runs: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    close, base, open_, (r, c, ratio) = panel()
    print(f"corporate actions: {ROWS:,} rows x {TICKERS:,} tickers, {ACTIONS} actions planted")
    t_f, f = best(factors, close, base)
    t_a, _ = best(adjust, close, f)
    t_o, _ = best(adjust, open_, f)
    other = ~np.isclose(f[r, c], ratio, rtol=1e-3)
    print(f"  factors(close, base)       {t_f * 1000:8.1f} ms   ({int((f != 1).sum())} actions found, "
          f"{int(other.sum())} with another ratio than planted)")
    for i in np.flatnonzero(other):  # a base of a few dozen won: another simple ratio gives it to the won too
        print(f"    planted {ratio[i]:g}, found {f[r[i], c[i]]:g}: base {base[r[i], c[i]]:,.0f} won")
    print(f"  adjust(close, factors)     {t_a * 1000:8.1f} ms")
    print(f"  adjust(open, factors)      {t_o * 1000:8.1f} ms")
    print(f"  total                      {(t_f + t_a + t_o) * 1000:8.1f} ms   (target: well under 1,000 ms)")
    junk = np.round(np.vstack([close[:1], close[:-1]]) * 0.97)  # every base 3% off: every cell an action
    t_j, fj = best(factors, close, junk, runs=1)
    print(f"  worst case, every cell an action: factors {t_j * 1000:8.1f} ms ({int((fj != 1).sum()):,} cells)")


if __name__ == "__main__":
    main()
