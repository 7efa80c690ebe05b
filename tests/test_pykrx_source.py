"""The pykrx source: the real pykrx 1.2.9 code (login, request, parsing) against KRX answers served by `responses`.

Every test runs inside a `responses` mock that answers KRX's login pages and getJsonData.cmd and refuses any
other URL, so nothing ever reaches the network. The answers in tests/fixtures/krx are shaped exactly like
KRX's (see docs/pykrx.md on how they were made).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
import responses

from common import config
from common.calendar import TradingCalendar
from common.home import Home
from common.store import COLUMNS, EodStore, validate_day
from nas.ingest import ingest, make_source
from nas.sources.pykrx_source import (
    DATA_URL,
    ETF_BLD,
    STOCKS_BLD,
    KrxAuthError,
    KrxError,
    PykrxSource,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "krx"
LOGIN_PAGE = "https://data.krx.co.kr/contents/MDC/COMS/client/MDCCOMS001.cmd"
LOGIN_JSP = "https://data.krx.co.kr/contents/MDC/COMS/client/view/login.jsp?site=mdc"
LOGIN_URL = "https://data.krx.co.kr/contents/MDC/COMS/client/MDCCOMS001D1.cmd"
KRX_ID, KRX_PW = "alertor-test-member", "pw-S3cret-value!"
FAST_RETRY = {"attempts": 3, "deadline_s": 10, "wait_initial_s": 0.01, "wait_max_s": 0.02}
JSON = {"Content-Type": "application/json;charset=UTF-8"}  # as KRX sends them
TEXT = {"Content-Type": "text/html;charset=UTF-8"}
DAY, HOLIDAY, BIG_DAY = dt.date(2024, 1, 2), dt.date(2024, 2, 9), dt.date(2024, 1, 3)


def fixture(name: str) -> str:
    path = FIXTURES / name
    return (gzip.decompress(path.read_bytes()).decode("utf-8") if path.suffix == ".gz"
            else path.read_text(encoding="utf-8"))


class FakeKrx:
    """KRX as pykrx sees it: the login flow, then getJsonData.cmd answering by `bld` and `trdDd`.

    `answers[(bld, trdDd)]` is (status, body), an exception to raise, or a list of those served in turn (the last
    one again and again); anything unlisted is HTTP 500."""

    def __init__(self, rsps: responses.RequestsMock, login_code: str = "CD001"):
        self.rsps = rsps
        self.answers: dict[tuple[str, str], tuple[int, str] | Exception | list] = {
            (STOCKS_BLD, "20240102"): (200, fixture("MDCSTAT01501_20240102.json")),
            (ETF_BLD, "20240102"): (200, fixture("MDCSTAT04301_20240102.json")),
            (STOCKS_BLD, "20240209"): (200, fixture("MDCSTAT01501_20240209_holiday.json")),
            (STOCKS_BLD, "20240103"): (200, fixture("MDCSTAT01501_20240103_overflow.json")),
            # the ETF answer of the overflow day: the 2024-01-02 one is good enough for the benchmark row
            (ETF_BLD, "20240103"): (200, fixture("MDCSTAT04301_20240102.json")),
        }
        self.logins = 0
        rsps.add(responses.GET, LOGIN_PAGE, body="<html>login</html>")
        rsps.add(responses.GET, LOGIN_JSP, body="<html>login.jsp</html>")
        rsps.add_callback(responses.POST, LOGIN_URL, callback=self._login)
        rsps.add_callback(responses.POST, DATA_URL, callback=self._data)
        self._login_code = login_code

    def _login(self, request: requests.PreparedRequest) -> tuple[int, dict, str]:
        self.logins += 1
        form = parse_qs(request.body)
        ok = form.get("mbrId") == [KRX_ID] and form.get("pw") == [KRX_PW]
        # CD010: a password change is due; CD011: another session is open, taken over when sent with skipDup=Y
        code = ("CD001" if self._login_code == "CD011" and form.get("skipDup") == ["Y"] else self._login_code) \
            if ok else "CD999"
        ok = code == "CD001"
        return 200, JSON, json.dumps({"_error_code": code, "_error_message": "" if ok else "아이디/비밀번호 오류"})

    def _data(self, request: requests.PreparedRequest) -> tuple[int, dict, str]:
        form = parse_qs(request.body)
        answer = self.answers.get((form["bld"][0], form.get("trdDd", [""])[0]), (500, "<html>error</html>"))
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, Exception):
            raise answer
        return answer[0], JSON if answer[1].startswith("{") else TEXT, answer[1]

    def data_calls(self) -> list:
        return [c for c in self.rsps.calls if c.request.url.startswith(DATA_URL)]


@pytest.fixture
def krx(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKrx]:
    """Credentials in the environment, a fresh pykrx login per test, and no request past `responses`."""
    monkeypatch.setenv("KRX_ID", KRX_ID)
    monkeypatch.setenv("KRX_PW", KRX_PW)
    _forget_pykrx_login()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeKrx(rsps)
    _forget_pykrx_login()


def _forget_pykrx_login() -> None:
    """pykrx keeps its login in a module global: drop it so each test logs in against its own fake KRX."""
    auth = sys.modules.get("pykrx.website.comm.auth")
    if auth is not None:
        auth.set_auth_session(None)


def source() -> PykrxSource:
    return PykrxSource(timeout_s=7, retry_cfg=FAST_RETRY)


# --- a normal day ------------------------------------------------------------------------------------------------


def test_normal_day(krx: FakeKrx, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="krx")
    frame = source().fetch_day(DAY)
    assert list(frame.columns) == COLUMNS
    validate_day(frame, DAY, "pykrx")  # what ingest checks
    rows = frame.set_index("ticker")
    assert len(rows) == 13  # 12 stocks and the benchmark ETF
    sam = rows.loc["005930"]
    assert (sam["name"], sam["market"]) == ("삼성전자", "KOSPI")
    assert (sam["open"], sam["high"], sam["low"], sam["close"]) == (78200, 79800, 78200, 79600)
    assert (sam["volume"], sam["value"]) == (17142847, 1353427770650)
    assert sam["change_pct"] == 1.40 and sam["market_cap"] == 475194690980000 and not sam["halted"]
    assert sam["base"] == 79600 - 1100  # close - CMPPREVDD_PRC: KRX's base price, here the previous close
    # markets from MKT_ID: the KOSDAQ global segment is KOSDAQ, KONEX is kept
    assert rows.loc["196170", "market"] == "KOSDAQ" and rows.loc["217910", "market"] == "KONEX"
    etf = rows.loc["069500"]
    assert (etf["name"], etf["market"], etf["close"], etf["change_pct"]) == ("KODEX 200", "ETF", 35150, 0.86)
    assert etf["market_cap"] == 35150 * 138000000
    assert set(rows.index) & {"102110", "122630", "114800"} == set()  # only the benchmark of the ETF answer
    for col in ("open", "high", "low", "close", "volume", "value", "market_cap"):
        assert frame[col].dtype == "int64", col
    # two requests for the day, each with our timeout (pykrx sends none), both after one login
    assert [parse_qs(c.request.body)["bld"][0] for c in krx.data_calls()] == [STOCKS_BLD, ETF_BLD]
    assert all(c.request.req_kwargs["timeout"] == 7 for c in krx.data_calls())
    assert krx.logins == 1
    # pykrx printed the login id: none of it reached stdout/stderr, and our log has it redacted
    out, err = capfd.readouterr()
    assert KRX_ID not in out + err and KRX_PW not in out + err
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "로그인" in logged and "***" in logged
    assert KRX_ID not in logged and KRX_PW not in logged


def test_letter_ticker_and_halted(krx: FakeKrx) -> None:
    rows = source().fetch_day(DAY).set_index("ticker")
    cj = rows.loc["00104K"]
    assert isinstance(cj.name, str) and (cj["name"], cj["close"], cj["halted"]) == ("CJ4우(전환)", 70900, False)
    halted = rows.loc["900110"]
    assert bool(halted["halted"]) and halted["close"] == 159
    assert (halted["open"], halted["high"], halted["low"], halted["volume"]) == (0, 0, 0, 0)
    assert rows["halted"].sum() == 1
    assert all(isinstance(t, str) and len(t) == 6 for t in rows.index)


# --- KRX's base price, from real answers -------------------------------------------------------------------------

REAL_DAY = dt.date(2021, 1, 22)
REAL_STOCKS = "real/MDCSTAT01501_mktId-STK_trdDd-20210122.json.gz"  # every KOSPI stock, recorded from KRX
REAL_ETFS = "real/MDCSTAT04301_trdDd-20210325.json.gz"  # every ETF on 2021-03-25, served for the same day


def _won(text: str) -> int:
    return int(text.replace(",", ""))


def test_base_price_from_real_krx_answers(krx: FakeKrx) -> None:
    krx.answers[(STOCKS_BLD, "20210122")] = (200, fixture(REAL_STOCKS))
    krx.answers[(ETF_BLD, "20210122")] = (200, fixture(REAL_ETFS))
    frame = source().fetch_day(REAL_DAY)
    validate_day(frame, REAL_DAY, "pykrx")
    rows = frame.set_index("ticker")
    answer = json.loads(fixture(REAL_STOCKS))["OutBlock_1"]
    assert len(rows) == len(answer) + 1  # and 069500
    for r in answer:  # base = close - CMPPREVDD_PRC for every row, signed ("-1,300")
        assert rows.loc[r["ISU_SRT_CD"], "base"] == _won(r["TDD_CLSPRC"]) - _won(r["CMPPREVDD_PRC"]), r
    sam = rows.loc["005930"]
    assert (sam["close"], sam["base"], sam["change_pct"]) == (86800, 88100, -1.48)
    assert rows.loc["000210", "halted"] and rows.loc["000210", "base"] == rows.loc["000210", "close"] == 83000
    etf = rows.loc["069500"]
    assert (etf["close"], etf["base"], etf["change_pct"]) == (41520, 41520 - 180, 0.44)
    # KRX's FLUC_RT is the change against that base, to its two decimals, on every row
    change = ((rows["close"] / rows["base"] - 1) * 100).round(2)
    assert ((change - rows["change_pct"]).abs() < 0.011).all()


def test_unknown_base_price_is_the_close(krx: FakeKrx) -> None:
    """KRX writes "-" where it has no previous close (and a field may come empty): no corporate action is known
    there, so base = close, which corporate_actions reads as no action."""
    answer = json.loads(fixture(REAL_STOCKS))
    rows = answer["OutBlock_1"]
    rows[0]["CMPPREVDD_PRC"], rows[1]["CMPPREVDD_PRC"] = "-", ""
    del rows[2]["CMPPREVDD_PRC"]
    krx.answers[(STOCKS_BLD, "20210122")] = (200, json.dumps(answer, ensure_ascii=False))
    krx.answers[(ETF_BLD, "20210122")] = (200, fixture(REAL_ETFS))
    frame = source().fetch_day(REAL_DAY).set_index("ticker")
    for r in rows[:3]:
        assert frame.loc[r["ISU_SRT_CD"], "base"] == frame.loc[r["ISU_SRT_CD"], "close"] == _won(r["TDD_CLSPRC"])
    assert frame.loc[rows[3]["ISU_SRT_CD"], "base"] == _won(rows[3]["TDD_CLSPRC"]) - _won(rows[3]["CMPPREVDD_PRC"])


# --- what pykrx does wrong ------------------------------------------------------------------------------------


def test_holiday_all_zero_answer_is_none(krx: FakeKrx) -> None:
    assert source().fetch_day(HOLIDAY) is None
    # the ETF request is skipped on a closed day
    assert [parse_qs(c.request.body)["bld"][0] for c in krx.data_calls()] == [STOCKS_BLD]


@pytest.mark.parametrize("status", [200, 400])
def test_logout_answer_is_a_clear_login_error(krx: FakeKrx, status: int) -> None:
    krx.answers[(STOCKS_BLD, "20240102")] = (status, "LOGOUT")
    with pytest.raises(KrxAuthError, match=r"KRX login missing or rejected .*LOGOUT.*KRX_ID/KRX_PW") as info:
        source().fetch_day(DAY)
    assert KRX_ID not in str(info.value) and KRX_PW not in str(info.value)
    assert len(krx.data_calls()) == 1  # not retried


@pytest.mark.parametrize("status", [400, 404])
def test_http_400_404_is_a_clear_login_error(krx: FakeKrx, status: int) -> None:
    krx.answers[(STOCKS_BLD, "20240102")] = (status, "<html>Bad Request</html>")
    with pytest.raises(KrxAuthError, match=rf"HTTP {status} .*KRX_ID/KRX_PW"):
        source().fetch_day(DAY)
    assert len(krx.data_calls()) == 1


def test_logout_on_the_etf_request_too(krx: FakeKrx) -> None:
    # pykrx turns this one into an empty frame, not even a KeyError
    krx.answers[(ETF_BLD, "20240102")] = (400, "LOGOUT")
    with pytest.raises(KrxAuthError, match="LOGOUT"):
        source().fetch_day(DAY)


def test_timeout_is_retried_within_bounds_then_fails_clearly(krx: FakeKrx) -> None:
    krx.answers[(STOCKS_BLD, "20240102")] = requests.exceptions.ReadTimeout("read timed out (read timeout=7)")
    with pytest.raises(KrxError, match=r"stocks 2024-01-02: still failing after the retry policy's attempts "
                                       r"\(no answer within 7s, ReadTimeout"):
        source().fetch_day(DAY)
    calls = krx.data_calls()
    assert len(calls) == FAST_RETRY["attempts"]
    assert all(c.request.req_kwargs["timeout"] == 7 for c in calls)


def test_server_error_is_retried_then_succeeds(krx: FakeKrx) -> None:
    good = krx.answers[(STOCKS_BLD, "20240102")]
    krx.answers[(STOCKS_BLD, "20240102")] = [(503, "<html>busy</html>"), (429, "slow down"), good]
    frame = source().fetch_day(DAY)
    assert len(frame) == 13
    assert [parse_qs(c.request.body)["bld"][0] for c in krx.data_calls()] == [STOCKS_BLD] * 3 + [ETF_BLD]


def test_volume_above_int32_keeps_the_day(krx: FakeKrx, caplog: pytest.LogCaptureFixture) -> None:
    # pykrx itself cannot read this answer
    from pykrx import stock

    with pytest.raises(OverflowError):
        stock.get_market_ohlcv("20240103", market="ALL")
    calls_before = len(krx.data_calls())
    frame = source().fetch_day(BIG_DAY)
    rows = frame.set_index("ticker")
    assert rows.loc["005930", "volume"] == 3_000_000_000 and frame["volume"].dtype == "int64"
    assert rows.loc["005930", "close"] == 79600 and rows.loc["00104K", "name"] == "CJ4우(전환)"
    assert rows.loc["005930", "base"] == 78500 and frame["base"].dtype == "int64"  # our own parse keeps it too
    assert bool(rows.loc["900110", "halted"]) and "069500" in rows.index
    # the answer already fetched was parsed again: one stocks request, not two
    blds = [parse_qs(c.request.body)["bld"][0] for c in krx.data_calls()[calls_before:]]
    assert blds == [STOCKS_BLD, ETF_BLD]
    assert any(getattr(r, "event", "") == "PYKRX_OVERFLOW" for r in caplog.records)


# --- credentials and the lazy import ---------------------------------------------------------------------------


def test_missing_credentials_name_them(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX_ID", KRX_ID)
    with responses.RequestsMock() as rsps, pytest.raises(KrxAuthError, match=r"KRX_PW not set.*KRX_ID/KRX_PW") as e:
        source().fetch_day(DAY)
    assert KRX_ID not in str(e.value) and len(rsps.calls) == 0


def test_rejected_login_is_a_clear_error(krx: FakeKrx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX_PW", "wrong-password")
    with pytest.raises(KrxAuthError, match="KRX login missing or rejected") as info:
        source().fetch_day(DAY)
    assert "wrong-password" not in str(info.value) and KRX_ID not in str(info.value)
    assert krx.data_calls() == []  # never asked for data without a login


def test_import_is_lazy_and_its_login_output_captured(tmp_path: Path) -> None:
    """A fresh interpreter: constructing the source imports nothing; the first fetch imports pykrx, whose import
    logs in and prints the login id; stdout and stderr stay clean."""
    script = f"""
import sys, datetime as dt, json
sys.path.insert(0, {str(Path(__file__).parent)!r})
import responses
from nas.sources.pykrx_source import PykrxSource
src = PykrxSource(timeout_s=5, retry_cfg={FAST_RETRY!r})
assert "pykrx" not in sys.modules and "matplotlib" not in sys.modules
from test_pykrx_source import FakeKrx
with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
    krx = FakeKrx(rsps)
    frame = src.fetch_day(dt.date(2024, 1, 2))
assert "pykrx" in sys.modules and len(frame) == 13 and krx.logins == 1, krx.logins
sys.__stdout__.write("OK\\n")
"""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KRX") or k == "KRX_EVENT_LOG_KEY_FILE"},
           "KRX_ID": KRX_ID, "KRX_PW": KRX_PW,
           "KRX_HOME": str(tmp_path), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "OK\n"
    assert KRX_ID not in proc.stdout + proc.stderr and "로그인" not in proc.stdout + proc.stderr


# --- the ingest path -----------------------------------------------------------------------------------------


def test_ingest_stores_a_day_and_records_a_closed_day(krx: FakeKrx, home: Home, cal: TradingCalendar,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`krx ingest --source pykrx --date ...` in-process: the source as the CLI builds it (app.yaml's timeout and
    retry), the real ingest and store."""
    monkeypatch.setenv("KRX__APP__INGEST__HTTP_TIMEOUT_S", "9")
    src = make_source("pykrx", home, cal, config.load("app", home))
    assert isinstance(src, PykrxSource) and src.timeout_s == 9 and src.retry_cfg["attempts"] >= 1
    summary = ingest(home, src, [DAY, HOLIDAY])
    assert summary == {"source": "pykrx", "days_fetched": 1, "days_skipped": 0, "days_closed": 1, "rows": 13}
    store = EodStore.for_home(home)
    assert store.stored_dates() == {DAY} and store.closed_dates() == {HOLIDAY}
    close = store.load_panel(["close", "halted", "base"])
    assert close["close"].loc["2024-01-02", "00104K"] == 70900 and close["halted"].loc["2024-01-02", "900110"]
    assert close["base"].loc["2024-01-02", "005930"] == 78500
    assert store.read_rows(columns=["close"])["close"].to_pylist().count(0) == 0
    assert {c.request.req_kwargs["timeout"] for c in krx.data_calls()} == {9}
    tickers = store.tickers()
    assert tickers.loc["069500", "market"] == "ETF" and tickers.loc["005930", "name"] == "삼성전자"
    # a re-run asks KRX nothing
    before = len(krx.data_calls())
    again = ingest(home, source(), [DAY, HOLIDAY])
    assert again["days_skipped"] == 2 and len(krx.data_calls()) == before
