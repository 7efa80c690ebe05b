"""Corporate actions (placeholder until the data branch lands: same contract, simpler snapping)."""

from __future__ import annotations

import numpy as np


def factors(close: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per row and ticker, the number of new shares per old share effective on that row (1.0 where none):
    the previous close over KRX's base price of the row."""
    close = np.asarray(close, dtype=float)
    base = np.asarray(base, dtype=float)
    out = np.ones(close.shape)
    if len(close) < 2:
        return out
    # the previous row with a close, carried over gaps
    rows = np.where(np.isfinite(close), np.arange(len(close))[:, None], -1)
    np.maximum.accumulate(rows, axis=0, out=rows)
    prev_row = np.vstack([np.full((1, close.shape[1]), -1), rows[:-1]])
    cols = np.arange(close.shape[1])
    prev = np.where(prev_row >= 0, close[np.maximum(prev_row, 0), cols], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = prev / base
        moved = np.isfinite(ratio) & (base > 0) & (np.abs(prev - base) > 1.0) & np.isfinite(close)
    out[moved] = ratio[moved]
    return out


def adjust(prices: np.ndarray, factors_: np.ndarray) -> np.ndarray:
    """Backward-adjusted prices: each row divided by the product of the factors of all later rows."""
    f = np.asarray(factors_, dtype=float)
    later = np.ones(f.shape)
    if len(f) > 1:
        later[:-1] = np.cumprod(f[::-1], axis=0)[::-1][1:]
    return np.asarray(prices, dtype=float) / later
