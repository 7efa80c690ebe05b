"""Partial days: KRX fails for a day, Naver fills in the tickers the scan needs, the scan buys nothing new that day,
and the next successful KRX ingest replaces the day. The real pykrx source and the real Naver source against
recorded answers (`responses`), the real store, the real `krx scan` CLI."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import responses
from test_krx_login import records
from test_pykrx_source import KRX_ID, KRX_PW, FakeKrx, _forget_pykrx_login
from test_scan import END, build_market, run_scan, trend

from common import strategy
from common.calendar import TradingCalendar
from common.home import Home
from common.rules import BUY, SELL_TREND
from common.store import EodStore, StoreError
from nas import ingest as ingesting
from nas.sources.naver import URL as NAVER_URL
from nas.sources.naver import NaverSource
from nas.sources.pykrx_source import STOCKS_BLD, KrxAuthError, PykrxSource

NAVER_ANSWER = (Path(__file__).resolve().parent / "fixtures" / "naver"
                / "naver_fchart_sise.nhn_005930_day_recorded-20260125.euc-kr.xml").read_bytes()
FAST_RETRY = {"attempts": 2, "deadline_s": 10, "wait_initial_s": 0.01, "wait_max_s": 0.02}
DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
ONLY_005930 = {  # the fallback's tickers: the benchmark and the regime's ticker (no core holdings, no portfolio)
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__BENCHMARK": "005930",
    "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__REGIME__TICKER": "005930",
}


@pytest.fixture
def krx(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKrx]:
    """KRX (the login flow and getJsonData.cmd) and Naver's chart, both answered by `responses`."""
    for k, v in {"KRX_ID": KRX_ID, "KRX_PW": KRX_PW, **ONLY_005930}.items():
        monkeypatch.setenv(k, v)
    _forget_pykrx_login()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeKrx(rsps)
        rsps.add(responses.GET, NAVER_URL, body=NAVER_ANSWER, headers={"Content-Type": "text/xml;charset=EUC-KR"})
        yield fake
    _forget_pykrx_login()


def naver_calls(krx: FakeKrx) -> list:
    return [c for c in krx.rsps.calls if c.request.url.startswith(NAVER_URL)]


def test_krx_logout_is_filled_by_naver_then_replaced_by_krx(krx: FakeKrx, home: Home, cal: TradingCalendar) -> None:
    src = PykrxSource(timeout_s=5, retry_cfg=FAST_RETRY)
    naver = NaverSource(timeout_s=5, retry_cfg=FAST_RETRY)
    fallback = ingesting.naver_fallback(home, cal, naver)
    store = EodStore.for_home(home)
    ingesting.ingest(home, src, [DAY1], fallback=fallback)  # a whole KRX day
    assert store.partial_dates() == {} and naver_calls(krx) == []

    krx_answer = krx.answers[(STOCKS_BLD, "20240103")]
    krx.answers[(STOCKS_BLD, "20240103")] = (200, "LOGOUT")  # KRX ends the session on the next day
    with records("ingest") as seen:
        summary = ingesting.ingest(home, src, [DAY1, DAY2], fallback=fallback)
    assert summary["partial"] == {"source": "naver", "days": ["2024-01-03"], "tickers": 1, "rows": 1}
    assert store.partial_dates() == {DAY2: {"source": "naver", "tickers": ["005930"]}}
    assert store.source() == "pykrx"  # the store stays a KRX store
    errors = [r.getMessage() for r in seen if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "KRX failed for 2024-01-03 (KrxAuthError" in errors[0]
    assert "Naver filled in 1 tickers (005930)" in errors[0] and "replaces them" in errors[0]
    assert KRX_ID not in errors[0] and KRX_PW not in errors[0]
    panel = store.load_panel(["close", "base"])
    # Naver's previous close is the stored KRX close: no corporate action is read into the partial day
    assert panel["close"].loc["2024-01-03", "005930"] == 77_000 and panel["base"].loc["2024-01-03", "005930"] == 79_600
    assert panel["close"].loc["2024-01-03"].notna().sum() == 1

    krx.answers[(STOCKS_BLD, "20240103")] = krx_answer  # KRX is back
    summary = ingesting.ingest(home, src, [DAY1, DAY2], fallback=fallback)
    assert summary["days_fetched"] == 1 and "partial" not in summary
    assert store.partial_dates() == {}
    assert store.load_panel(["close"])["close"].loc["2024-01-03"].notna().sum() == 13
    assert len(naver_calls(krx)) == 1


def test_naver_failing_too_is_one_clear_error(krx: FakeKrx, home: Home, cal: TradingCalendar) -> None:
    page = "<!DOCTYPE html><html><body>점검 중<br></body></html>"  # Naver's maintenance page is HTML, not XML
    krx.rsps.replace(responses.GET, NAVER_URL, body=page.encode("euc-kr"))
    krx.answers[(STOCKS_BLD, "20240102")] = (200, "LOGOUT")
    fallback = ingesting.naver_fallback(home, cal, NaverSource(timeout_s=5, retry_cfg=FAST_RETRY))
    with pytest.raises(KrxAuthError, match="KRX answered LOGOUT.*and the Naver fallback failed too: .*not XML"):
        ingesting.ingest(home, PykrxSource(timeout_s=5, retry_cfg=FAST_RETRY), [DAY1], fallback=fallback)
    assert EodStore.for_home(home).stored_dates() == set()


def test_no_fallback_for_a_backfill(krx: FakeKrx, home: Home, cal: TradingCalendar) -> None:
    krx.answers[(STOCKS_BLD, "20240102")] = (200, "LOGOUT")
    days = cal.sessions(DAY1, DAY1 + dt.timedelta(days=30))
    assert len(days) > ingesting.FALLBACK_MAX_DAYS
    fallback = ingesting.naver_fallback(home, cal, NaverSource(timeout_s=5, retry_cfg=FAST_RETRY))
    with pytest.raises(KrxAuthError, match="LOGOUT"):
        ingesting.ingest(home, PykrxSource(timeout_s=5, retry_cfg=FAST_RETRY), days, fallback=fallback)
    assert naver_calls(krx) == []


def test_store_refuses_partial_days_into_a_sample_store(home: Home, cal: TradingCalendar) -> None:
    from nas.sources.sample import SampleSource

    ingesting.ingest(home, SampleSource(cal, tickers=10), [DAY1])
    with pytest.raises(StoreError, match="holds sample data; partial days from naver"):
        store = EodStore.for_home(home)
        store.write([store.read_rows().to_pandas()], partial="naver")


def test_damaged_partial_record_names_the_field(home: Home, cal: TradingCalendar) -> None:
    from nas.sources.sample import SampleSource

    ingesting.ingest(home, SampleSource(cal, tickers=10), [DAY1])
    store = EodStore.for_home(home)
    data = json.loads(store.manifest_path.read_text())
    store.manifest_path.write_text(json.dumps({**data, "partial": {"2024-01-02": {"source": "naver"}}}))
    with pytest.raises(StoreError, match=r"manifest.json: partial\['2024-01-02'\]: expected a stored date with "
                                         "source and tickers"):
        store.partial_dates()


# --- the scan of a partial day ---------------------------------------------------------------------------------


def test_scan_of_a_partial_day_sells_and_holds_but_buys_nothing(home: Home, cal: TradingCalendar) -> None:
    """A hand-made market; the model portfolio bought at the October month end. At the November month end (a
    rebalance day) a newcomer ranks first: a whole day buys it (and replaces a holding); the same day stored as
    partial buys nothing, keeps the holdings and says why."""
    paths = {t: trend(10_000, 0.002 + k * 0.0004) for k, t in enumerate(["000010", "000020", "000030", "000040"])}
    rocket = trend(5_000, -0.0005)
    rocket[-15:] = np.round(rocket[-16] * 1.04 ** np.arange(1, 16))  # the newcomer of November
    paths["000050"] = rocket
    paths["069500"] = trend(30_000, 0.001)
    days = build_market(home, cal, paths)
    october = max(d for d in days if d.month == 10)
    _, err, rc = run_scan(home, "--date", october.isoformat(), "--apply")
    assert rc == 0, err[-2000:]
    held = {p["ticker"] for p in json.loads((home.state / "portfolio.json").read_text())["positions"]} | {
        o["ticker"] for o in json.loads((home.state / "portfolio.json").read_text())["pending"]}
    assert held and "000050" not in held
    assert set(ingesting.fallback_tickers(home)) == held | {"069500"}  # what Naver would be asked for

    whole, err, rc = run_scan(home, "--date", END.isoformat())
    assert rc == 0, err[-2000:]
    assert [r["ticker"] for r in whole["rows"] if r["state"] == "BUY"] == ["000050"] and whole["partial"] is None

    store = EodStore.for_home(home)
    day = store.read_rows(END, END).to_pandas()
    store.write([day], partial="naver")  # the same prices, stored as Naver's partial day
    part, err, rc = run_scan(home, "--date", END.isoformat())
    assert rc == 0, err[-2000:]
    text = f"partial data (KRX failed; Naver for {len(day)} tickers): no new buys"
    assert part["partial"] == {"source": "naver", "tickers": sorted(day["ticker"]), "reason": text}
    assert text in part["notes"]
    states = {r["ticker"]: (r["state"], r["reason"]) for r in part["rows"]}
    assert not [t for t, (s, _) in states.items() if s == "BUY"]
    assert {t for t, (s, _) in states.items() if s == "HOLD"} == held
    assert all(reason.startswith(text) for s, reason in states.values() if s == "HOLD")
    assert part["blocked_by_regime"] == []


def test_a_partial_row_allows_sells_but_no_buys() -> None:
    """The strategy hook itself: the same row decided whole and partial, a holding under its trend SMA."""
    idx = pd.bdate_range("2024-01-01", periods=260)
    rise = 10_000 * 1.003 ** np.arange(260)
    fall = rise.copy()
    fall[-1] = fall[-200:].mean() * 0.8  # under its 200-day SMA on the last row: SELL_TREND
    close = pd.DataFrame({"A": rise, "B": rise * 1.001 ** np.arange(260), "C": fall}, index=idx)
    params = {"top_n": 2, "lookbacks": [20, 60], "weights": [0.5, 0.5], "regime": {"enabled": False},
              "filters": {"min_avg_value": 0}}
    partial = pd.Series(False, index=idx)
    partial.iloc[-1] = True
    for flags, buys in ((None, {"A", "B"}), (partial, set())):
        ctx = strategy.Indicators.build({"close": close}, params, partial=flags)
        d = strategy.decide(ctx, -1, {"C": 10_000.0})
        states = {t: int(s) for t, s in zip(ctx.tickers, d.state, strict=True)}
        assert {t for t, s in states.items() if s == BUY} == buys
        assert states["C"] == SELL_TREND


def test_krx_ingest_source_naver_works_on_its_own(krx: FakeKrx, home: Home, capsys: pytest.CaptureFixture,
                                                  in_process_cli: None) -> None:
    """`krx ingest --source naver --tickers ...` through the CLI's own entry point (in-process, so `responses`
    answers Naver): partial days for the given tickers, never over a whole day."""
    from faces.cli import main

    assert main(["ingest", "--source", "naver", "--tickers", "005930", "--date", "2024-01-03"]) == 0
    store = EodStore.for_home(home)
    assert store.partial_dates() == {DAY2: {"source": "naver", "tickers": ["005930"]}}
    assert "partial days 2024-01-03 tickers=005930" in capsys.readouterr().err
    assert main(["ingest", "--source", "naver", "--tickers", "5930,AB", "--date", "2024-01-03"]) == 3
    assert "expected 6-character tickers separated by commas" in capsys.readouterr().err
    assert main(["ingest", "--source", "pykrx", "--date", "2024-01-03"]) == 0  # KRX replaces it
    assert store.partial_dates() == {} and len(naver_calls(krx)) == 1
    assert main(["ingest", "--source", "naver", "--tickers", "005930", "--date", "2024-01-03"]) == 0
    assert "is stored whole" in capsys.readouterr().err and len(naver_calls(krx)) == 1
