"""Corporate actions from KRX's base price: factors and backward adjustment (common.corporate_actions).

The split case is KRX's real answer for 005930 across its 50:1 split (tests/fixtures/krx/real), parsed by the
pykrx source's own parser; the sample market's planned splits are found back from a real store.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.calendar import TradingCalendar
from common.corporate_actions import adjust, factors
from common.home import Home
from common.store import EodStore, validate_day
from nas.sources.pykrx_source import _parse
from nas.sources.sample import SPLITS, SampleSource

REAL = Path(__file__).resolve().parent / "fixtures" / "krx" / "real"
NAN = np.nan


def col(*values: float) -> np.ndarray:
    return np.array(values, dtype=float)[:, None]


def test_the_real_005930_split_gives_50_on_its_day() -> None:
    answer = json.loads((REAL / "MDCSTAT01701_005930_20180427-20180504.json").read_text(encoding="utf-8"))
    rows = [{**r, "ISU_SRT_CD": "005930"} for r in reversed(answer["output"])]  # KRX lists the newest first
    days = [r["TRD_DD"] for r in rows]
    raw = _parse(rows)
    close = raw["close"].to_numpy(float)[:, None]
    base = (raw["close"] - raw["change"]).to_numpy(float)[:, None]  # what the pykrx source stores
    assert days[-1] == "2018/05/04" and base[-1, 0] == 53_000 and close[-2, 0] == 2_650_000
    f = factors(close, base)
    assert f[:, 0].tolist() == [1, 1, 1, 1, 50]  # halted days before it keep their close: no action there
    adjusted = adjust(close, f)
    assert adjusted[-1, 0] == 51_900 and adjusted[0, 0] == 2_650_000 / 50
    assert abs(adjusted[-1, 0] / adjusted[-2, 0] - 1) == pytest.approx(1_100 / 53_000)  # KRX's -2.08%, no jump
    assert np.isnan(adjust(col(1.0, NAN, 3.0), col(1.0, 1.0, 2.0))[1, 0])


def test_reverse_split_rounding_rights_issue_and_gaps() -> None:
    close = np.column_stack([
        col(800, 790, 7_950, 8_000),      # 1:10 reverse split on row 2 (base 7,900)
        col(52_300, 52_700, 53_100, NAN),  # ordinary days, then delisted
        col(52_300, 50_000, 50_500, 50_600),  # a rights issue: base 48,765 is no simple ratio of 52,300
        col(NAN, 1_000, NAN, 1_010),      # listed on row 1; no row on row 2 (a halt without a row)
        col(3_001, 1_500, 1_520, 1_530),  # 2:1 where KRX's base 1,500 is 3,001 / 2 rounded down
        col(9_000, 6_010, 6_000, 6_100),  # a bonus issue of half a share per share: 1.5 (base 6,000)
    ])
    base = np.column_stack([
        col(790, 800, 7_900, 7_950),
        col(52_000, 52_300, 52_701, NAN),  # 1 won off the previous close: KRX's rounding, not an action
        col(52_000, 48_765, 50_000, 50_500),
        col(NAN, 1_000, NAN, 1_000),
        col(2_990, 1_500, 1_500, 1_520),
        col(8_900, 6_000, 6_010, 6_000),
    ])
    f = factors(close, base)
    expected = np.ones_like(f)
    expected[2, 0], expected[1, 2], expected[1, 4], expected[1, 5] = 0.1, 52_300 / 48_765, 2.0, 1.5
    np.testing.assert_allclose(f, expected)
    assert f[1, 2] != 1.0725  # the raw ratio, not a rounded one
    adjusted = adjust(close, f)
    rets = adjusted[1:] / adjusted[:-1] - 1
    assert np.nanmax(np.abs(rets[:, [0, 4, 5]])) < 0.02  # the actions' days move like any other day
    assert adjusted[-1, 0] == 8_000 and adjusted[0, 0] == pytest.approx(800 / 0.1)  # 10 old shares make one
    assert np.isnan(adjusted[3, 1]) and np.isnan(adjusted[0, 3]) and np.isnan(adjusted[2, 3])


def test_unknown_bases_and_shapes() -> None:
    close = np.column_stack([col(100, 200, 50), col(100, 100, 100)])
    # NaN base (a year file from before the column), NaN close: no action known
    assert (factors(close, np.full_like(close, NAN)) == 1).all()
    assert (factors(np.full_like(close, NAN), close) == 1).all()
    assert factors(np.empty((0, 3)), np.empty((0, 3))).shape == (0, 3)
    assert adjust(np.empty((0, 3)), np.empty((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        factors(close, close[:2])
    with pytest.raises(ValueError, match="differ in shape"):
        adjust(close, close.T)


def test_the_sample_markets_splits_are_found_in_the_store(home: Home, cal: TradingCalendar) -> None:
    src = SampleSource(cal, tickers=20)
    first, last = min(s.day for s in SPLITS), max(s.day for s in SPLITS)
    days = cal.sessions(first - dt.timedelta(days=10), last + dt.timedelta(days=10))
    store = EodStore.for_home(home)
    store.write((validate_day(f, d, "sample") for d, f in src.fetch_days(days).items()), source="sample")
    panel = store.load_panel(["close", "base", "open"])
    close, base = panel["close"], panel["base"]
    f = factors(close.to_numpy(), base.to_numpy())
    found = {(close.index[i].date(), close.columns[j], f[i, j]) for i, j in zip(*np.nonzero(f != 1), strict=True)}
    assert found == {(s.day, s.ticker, s.factor) for s in SPLITS}
    raw_close, raw_open = close.to_numpy(), panel["open"].to_numpy()
    adj_close, adj_open = adjust(raw_close, f), adjust(raw_open, f)
    for s in SPLITS:
        i, j = close.index.get_loc(pd.Timestamp(s.day)), close.columns.get_loc(s.ticker)
        assert abs(raw_close[i, j] / raw_close[i - 1, j] - 1) > 0.3
        assert abs(adj_close[i, j] / adj_close[i - 1, j] - 1) < 0.1  # an ordinary day's move
        assert abs(adj_open[i, j] / adj_close[i - 1, j] - 1) < 0.1   # the open too (next_open fills)
    np.testing.assert_array_equal(adj_close[-1], raw_close[-1])  # the last row is the raw close
