"""KRX login realities (pykrx 1.2.9): the login id pykrx prints never reaches a log line or Slack, a second login
(CD011 + skipDup) ends the first one's session, the login lock makes KRX jobs take turns, a forced password change
(CD010) and an outage page are clear errors. The real pykrx against KRX answers served by `responses`."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import responses
from test_pykrx_source import FAST_RETRY, KRX_ID, KRX_PW, LOGIN_URL, FakeKrx, _forget_pykrx_login

from common import log, statefile
from common.home import Home
from nas.sources.naver import URL as NAVER_URL
from nas.sources.pykrx_source import (
    LOGIN_LOCK,
    STOCKS_BLD,
    KrxAuthError,
    KrxBusyError,
    KrxOutageError,
    KrxPasswordChangeError,
    PykrxSource,
)

DAY = dt.date(2024, 1, 2)
NAVER_ANSWER = (Path(__file__).resolve().parent / "fixtures" / "naver"
                / "naver_fchart_sise.nhn_005930_day_recorded-20260125.euc-kr.xml").read_bytes()
OUTAGE = ("<!DOCTYPE html><html><head><title>KRX 정보데이터시스템 서비스 점검 안내</title></head>"
          "<body>서비스 점검 중입니다</body></html>")


@pytest.fixture
def rsps(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[responses.RequestsMock]:
    monkeypatch.setenv("KRX_ID", KRX_ID)
    monkeypatch.setenv("KRX_PW", KRX_PW)
    _forget_pykrx_login()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
    _forget_pykrx_login()


@contextlib.contextmanager
def records(name: str) -> Iterator[list[logging.LogRecord]]:
    """Every record of one of the project's loggers, DEBUG included, whatever an earlier job's setup_logging left."""
    logger, seen = log.get(name), []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def source(home: Home | None = None, wait: float = 5) -> PykrxSource:
    return PykrxSource(timeout_s=7, retry_cfg=FAST_RETRY, home=home, lock_wait_s=wait)


def login_forms(rsps: responses.RequestsMock) -> list[dict]:
    return [parse_qs(c.request.body) for c in rsps.calls if c.request.url == LOGIN_URL]


def test_a_forced_password_change_is_a_clear_error_and_one_slack_error_line(
        rsps: responses.RequestsMock, home: Home, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, in_process_cli: None) -> None:
    krx = FakeKrx(rsps, login_code="CD010")
    with records("pykrx") as seen, pytest.raises(KrxPasswordChangeError) as info:
        source().fetch_day(DAY)
    assert "KRX requires a password change before it accepts this login (CD010" in str(info.value)
    assert "change the password as KRX asks, then put the new one in KRX_PW" in str(info.value)
    assert krx.data_calls() == [] and KRX_ID not in str(info.value) and KRX_PW not in str(info.value)
    # pykrx printed the login id: it reached only our DEBUG log, redacted
    debug = [r.getMessage() for r in seen if r.levelno == logging.DEBUG]
    assert any("로그인 ID: ***" in line for line in debug) and not any(KRX_ID in line for line in debug)

    # the CLI: an ERROR line (Slack) naming the fix, Naver fills in the benchmark; the id appears nowhere
    from faces.cli import main

    monkeypatch.setenv("KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__BENCHMARK", "005930")
    monkeypatch.setenv("KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__REGIME__TICKER", "005930")
    rsps.add(responses.GET, NAVER_URL, body=NAVER_ANSWER)
    _forget_pykrx_login()
    capsys.readouterr()
    assert main(["ingest", "--source", "pykrx", "--date", "2024-01-02"]) == 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "KrxPasswordChangeError: KRX requires a password change" in errors[0]
    assert "Naver filled in 1 tickers" in errors[0]
    logged = "".join(p.read_text() for p in home.logs.glob("*.log"))
    assert "KrxPasswordChangeError" in logged and KRX_ID not in err + logged and KRX_PW not in err + logged


def test_a_second_login_ends_the_first_session_with_a_clear_error(rsps: responses.RequestsMock) -> None:
    """KRX answers CD011 to a login while another session of the id is open; pykrx sends it again with skipDup=Y
    and takes the session over. The job that held it gets LOGOUT on its next request: said clearly."""
    krx = FakeKrx(rsps, login_code="CD011")
    src = source()
    assert len(src.fetch_day(DAY)) == 13  # our login took another session over
    assert [f.get("skipDup") for f in login_forms(rsps)] == [None, ["Y"]]
    krx.answers[(STOCKS_BLD, "20240102")] = (200, "LOGOUT")  # now another job's login took ours over
    with pytest.raises(KrxAuthError, match=r"LOGOUT to stocks 2024-01-02 although this process logged in at "
                                           r"\d\d:\d\d:\d\d\): most likely another login with the same KRX_ID") as e:
        src.fetch_day(DAY)
    assert f"login lock state/.{LOGIN_LOCK}.lock" in str(e.value) and "CD011" in str(e.value)
    assert len(login_forms(rsps)) == 2  # never logged in again to take it back (the two jobs would take turns)


def test_the_login_lock_makes_krx_jobs_take_turns(rsps: responses.RequestsMock, home: Home) -> None:
    krx = FakeKrx(rsps)
    with statefile.locked(home, LOGIN_LOCK) as held:  # another job is logged in
        assert held
        with pytest.raises(KrxBusyError, match=r"another KRX job holds the login lock .*\.krx_login\.lock "
                                               r"\(waited 0.2s\).*Run KRX jobs one after another"):
            source(home, wait=0.2).fetch_day(DAY)
        assert krx.logins == 0  # refused before any login
    first = source(home)
    assert len(first.fetch_day(DAY)) == 13 and krx.logins == 1
    with pytest.raises(KrxBusyError):  # held by `first` until its process ends
        source(home, wait=0).fetch_day(DAY)
    first.close()
    assert len(source(home, wait=0).fetch_day(DAY)) == 13


def test_an_outage_page_is_retried_then_a_clear_error(rsps: responses.RequestsMock) -> None:
    krx = FakeKrx(rsps)
    krx.answers[(STOCKS_BLD, "20240102")] = (200, OUTAGE)
    with pytest.raises(KrxOutageError, match=r"KRX answered stocks 2024-01-02 with an HTML page titled 'KRX 정보데이터"
                                             r"시스템 서비스 점검 안내', not data: an outage or maintenance page; "
                                             r"still so after the retry policy's attempts"):
        source().fetch_day(DAY)
    assert len(krx.data_calls()) == FAST_RETRY["attempts"]
    good = krx.answers[(STOCKS_BLD, "20240103")]
    krx.answers[(STOCKS_BLD, "20240103")] = [(200, OUTAGE), good]  # a short outage: the retry gets the data
    assert len(source().fetch_day(dt.date(2024, 1, 3))) == 13


def test_an_outage_page_at_login_is_retried_then_a_clear_error(rsps: responses.RequestsMock) -> None:
    FakeKrx(rsps)
    source().fetch_day(DAY)  # pykrx imported (its import logs in once per process)
    _forget_pykrx_login()
    rsps.replace(responses.POST, LOGIN_URL, body=OUTAGE, content_type="text/html")
    with pytest.raises(KrxOutageError, match=r"KRX answered the login with an HTML page titled .*; still so after"):
        source().fetch_day(DAY)
    assert len(login_forms(rsps)) == 1 + FAST_RETRY["attempts"]
