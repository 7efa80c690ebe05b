"""The Naver fallback source: the real parser and request code against Naver's real recorded answer (005930, EUC-KR
XML, recorded 2026-01-25), served by `responses`; nothing reaches the network."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest
import requests
import responses

from common.store import validate_day
from nas.sources.naver import URL, NaverError, NaverSource, parse
from nas.sources.pykrx_source import _parse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ANSWER = (FIXTURES / "naver" / "naver_fchart_sise.nhn_005930_day_recorded-20260125.euc-kr.xml").read_bytes()
XML = {"Content-Type": "text/xml;charset=EUC-KR"}
FAST_RETRY = {"attempts": 3, "deadline_s": 10, "wait_initial_s": 0.01, "wait_max_s": 0.02}


def source() -> NaverSource:
    return NaverSource(timeout_s=7, retry_cfg=FAST_RETRY)


def test_the_real_answer_parses() -> None:
    name, hist = parse(ANSWER, "005930")
    assert name == "삼성전자" and len(hist) == 1835
    assert hist.index[0] == dt.date(2018, 8, 2) and hist.index[-1] == dt.date(2026, 1, 23)
    assert hist.loc[dt.date(2026, 1, 23)].tolist() == [154700, 156000, 150100, 152100, 25195543]
    assert hist.index.is_monotonic_increasing and str(hist["volume"].dtype) == "int64"


def test_days_are_normalized_with_base_the_previous_close() -> None:
    days = [dt.date(2026, 1, 22), dt.date(2026, 1, 23)]
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=ANSWER, headers=XML)
        frames = source().fetch_days(["005930"], days, count=10, known={"005930": ("삼성전자", "KOSPI")})
        sent = rsps.calls[0].request
    assert sent.req_kwargs["timeout"] == 7
    assert "symbol=005930" in sent.url and "timeframe=day" in sent.url and "count=10" in sent.url
    day = validate_day(frames[days[1]], days[1], "naver")  # the store's own check of a source's frame
    row = day.iloc[0]
    assert (row["open"], row["close"], row["base"], row["market"]) == (154700, 152100, 152300, "KOSPI")
    assert row["change_pct"] == round((152100 - 152300) / 152300 * 100, 2) and not row["halted"]
    assert row["value"] == 152100 * 25195543


def test_naver_and_krx_agree_to_the_won_on_a_real_day() -> None:
    """KRX's real 2021-01-22 answer (every KOSPI stock) and Naver's row of that day for 005930: the same prices and
    volume, and Naver's previous close is KRX's base price (close - CMPPREVDD_PRC): the factors agree."""
    krx = json.loads(gzip.decompress((FIXTURES / "krx" / "real" / "MDCSTAT01501_mktId-STK_trdDd-20210122.json.gz")
                                     .read_bytes()))
    raw = _parse([r for r in krx["OutBlock_1"] if r["ISU_SRT_CD"] == "005930"]).loc["005930"]
    day = dt.date(2021, 1, 22)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=ANSWER, headers=XML)
        row = source().fetch_days(["005930"], [day], count=1835)[day].iloc[0]
    for field in ("open", "high", "low", "close", "volume"):
        assert row[field] == raw[field], field
    assert row["base"] == raw["close"] - raw["change"] == 88_100
    assert row["change_pct"] == raw["change_pct"] == -1.48


def test_a_server_error_is_retried_then_succeeds() -> None:
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, status=503, body="busy")
        rsps.add(responses.GET, URL, body=ANSWER, headers=XML)
        name, hist = source().history("005930", 5)
        assert len(rsps.calls) == 2 and name == "삼성전자"


def test_a_timeout_is_retried_within_bounds_then_fails_clearly() -> None:
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=requests.ReadTimeout("read timed out"))
        with pytest.raises(NaverError, match="005930: ReadTimeout"):
            source().history("005930", 5)
        assert len(rsps.calls) == FAST_RETRY["attempts"]


def test_an_html_page_is_a_clear_error_not_a_traceback() -> None:
    page = "<!DOCTYPE html><html><head><title>점검 중</title></head><body>서비스 점검<br></body></html>"
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=page.encode("euc-kr"), headers={"Content-Type": "text/html"})
        with pytest.raises(NaverError, match=r"005930: not XML .*starts '<!DOCTYPE html>"):
            source().history("005930", 5)


@pytest.mark.parametrize(("body", "expected"), [
    ('<protocol><chartdata symbol="005930" name="" count="0"></chartdata></protocol>', "no <item> rows"),
    ('<protocol><chartdata symbol="005930"><item data="20260123|1|2|3" /></chartdata></protocol>',
     r"item 0 data='20260123\|1\|2\|3': expected date\|open\|high\|low\|close\|volume"),
    ('<protocol><chartdata symbol="005930"><item data="2026-01-23|1|2|3|4|5" /></chartdata></protocol>',
     "item 0 .*expected YYYYMMDD then five whole numbers"),
    ("<protocol><error/></protocol>", "no <chartdata> element"),
])
def test_bad_answers_name_the_item_and_what_was_expected(body: str, expected: str) -> None:
    with pytest.raises(NaverError, match=expected):
        parse(body.encode(), "005930")


def test_a_day_missing_from_the_chart_is_an_error() -> None:
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=ANSWER, headers=XML)
        with pytest.raises(NaverError, match=r"no row for 2018-05-04 \(its chart starts 2018-08-02"):
            source().fetch_days(["005930"], [dt.date(2018, 5, 4)], count=1835)
