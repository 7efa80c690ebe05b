"""The real source: KRX end-of-day prices through pykrx 1.2.9, hardened against what pykrx does on its own.

Requests per trading day: two POSTs to getJsonData.cmd, one for every stock (MDCSTAT01501 through
`stock.get_market_ohlcv(date, market="ALL")`) and one for every ETF (MDCSTAT04301 through
`stock.get_etf_ohlcv_by_ticker(date)`, for the benchmark 069500). A holiday costs one (the ETF request is
skipped). Names and markets come from the same MDCSTAT01501 answer pykrx parsed (pykrx drops those columns, so
we keep the raw answer): no ticker-list request, no pykrx singleton, and the names are those of that day, which
a backfill needs (a per-run ticker list would label old days with today's names and miss delisted tickers).

What pykrx does and what we do about it (DESIGN section 4):
- it logs in when imported and prints the login id: imported lazily, every pykrx call runs with stdout/stderr
  captured; the captured lines go to our DEBUG log with the credentials redacted (never to a log file or Slack
  with the id in it).
- KRX keeps one session per member: a second login answers CD011 and pykrx sends it again with skipDup=Y, which
  ends the first session (its next request answers LOGOUT). One login per process, and a login lock
  (state/.krx_login.lock, held from the login to the end of the process) makes KRX jobs on the NAS take turns;
  a LOGOUT after our own login says that another login took the session over.
- KRX forces a password change every three months: the login answers CD010, which pykrx only prints. We read
  that print and raise KrxPasswordChangeError naming the fix.
- an outage or maintenance page (HTML with HTTP 200, at login or on a data request) is retried under the retry
  policy, then a clear KrxOutageError.
- it sets no HTTP timeout: an HTTPAdapter with a default timeout is mounted on the session pykrx uses, before
  every call (pykrx replaces its session when it logs in again).
- it never retries and swallows errors (HTTP status, LOGOUT, JSON) into an empty frame or a KeyError: the same
  adapter keeps the raw answer, which we check ourselves; transient failures go through common.retry.
- a volume above 2^31-1 raises OverflowError in its int32 cast: the kept answer is parsed again with int64.
- it drops CMPPREVDD_PRC, the change against KRX's base price: we read it from the kept answer and store
  base = close - CMPPREVDD_PRC, which is how corporate actions are found (common.corporate_actions).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import requests
from requests.adapters import HTTPAdapter

from common import config, log, retry, statefile
from common.errors import AlertorError
from common.home import Home
from common.redact import redact
from common.store import COLUMNS

_log = log.get("pykrx")

FIRST_DATE = dt.date(1995, 5, 2)  # KRX's first day of MDCSTAT01501 (전종목시세) data
BENCHMARK_ETFS = ("069500",)  # KODEX 200: the regime filter's benchmark, listed 2002-10-14
DATA_URL = "https://data.krx.co.kr/comm/bldAttendant/getJsonData.cmd"
STOCKS_BLD = "dbms/MDC/STAT/standard/MDCSTAT01501"
ETF_BLD = "dbms/MDC/STAT/standard/MDCSTAT04301"
# MKT_ID rather than MKT_NM: KRX names the KOSDAQ global segment "KOSDAQ GLOBAL"
_MARKETS = {"STK": "KOSPI", "KSQ": "KOSDAQ", "KNX": "KONEX"}
# pykrx's column names -> ours, and the raw KRX fields they come from (for our own parse)
_PYKRX_STOCK = {"시가": "open", "고가": "high", "저가": "low", "종가": "close", "거래량": "volume",
                "거래대금": "value", "등락률": "change_pct", "시가총액": "market_cap"}
_RAW = {"TDD_OPNPRC": "open", "TDD_HGPRC": "high", "TDD_LWPRC": "low", "TDD_CLSPRC": "close",
        "ACC_TRDVOL": "volume", "ACC_TRDVAL": "value", "FLUC_RT": "change_pct", "MKTCAP": "market_cap",
        "CMPPREVDD_PRC": "change"}  # signed won against KRX's base price ("-1,100"); pykrx drops it
_INTS = ["open", "high", "low", "close", "volume", "value", "market_cap"]
_PRICES = ["open", "high", "low", "close"]
AUTH_HINT = "set KRX_ID/KRX_PW (a data.krx.co.kr member login) in the environment or the home's .env"
LOGIN_LOCK = "krx_login"  # state/.krx_login.lock (common.statefile): shared by every job that logs in to KRX
PASSWORD_CHANGE = "비밀번호 변경이 필요합니다"  # what pykrx prints for KRX's CD010 answer (and nothing else does)
PASSWORD_FIX = ("log in at https://data.krx.co.kr with this id, change the password as KRX asks, then put the new "
                "one in KRX_PW (the home's .env) and run `krx ingest` again")


class KrxError(AlertorError, RuntimeError):
    """KRX or pykrx failed in a way another try will not fix (or the retries ran out)."""


class KrxAuthError(KrxError):
    """The KRX login is missing or was rejected: KRX answers LOGOUT or HTTP 400/404 without it."""


class KrxPasswordChangeError(KrxAuthError):
    """KRX refuses the login until the password is changed (CD010, every three months)."""


class KrxBusyError(KrxError):
    """Another job holds the KRX login lock: a second login would end its session."""


class KrxOutageError(KrxError, retry.TransientError):
    """KRX answered an HTML page (an outage or maintenance page) where data or a login answer belongs; retried."""


def _outage(what: str, text: str) -> KrxOutageError:
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    said = f" titled {title.group(1).strip()[:60]!r}" if title else f" starting {text.strip()[:40]!r}"
    return KrxOutageError(f"KRX answered {what} with an HTML page{said}, not data: an outage or maintenance page")


class _KrxAdapter(HTTPAdapter):
    """A default timeout for every request sent without one (pykrx sends none), and the raw data answers."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s
        self.answers: list[requests.Response] = []

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        resp = super().send(request, stream=stream, timeout=self.timeout_s if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)
        if (request.url or "").startswith(DATA_URL):
            self.answers.append(resp)
        return resp


class PykrxSource:
    name = "pykrx"
    first_date = FIRST_DATE

    def __init__(self, timeout_s: float = 20.0, retry_cfg: dict | None = None, home: Home | None = None,
                 lock_wait_s: float = 600.0):
        self.timeout_s = float(timeout_s)
        self.retry_cfg = retry_cfg
        self.home = home
        self.lock_wait_s = float(lock_wait_s)
        self._adapter = _KrxAdapter(self.timeout_s)
        self._stock: Any = None  # pykrx.stock, imported on first use
        self._auth: Any = None   # pykrx.website.comm.auth
        self._secrets: tuple[str, ...] = ()
        self._lock = contextlib.ExitStack()  # the login lock, held until the process ends (or close())
        self._logged_in: float | None = None  # when this process's login succeeded
        self._import_said: list[str] = []  # pykrx's (redacted) prints while it logged in at import

    def close(self) -> None:
        """Let the next KRX job log in (the end of the process does the same)."""
        self._lock.close()

    # --- the day ---------------------------------------------------------------------------------------------

    def fetch_day(self, day: dt.date) -> pd.DataFrame | None:
        """The normalized frame of one day (common.store.COLUMNS), or None when KRX answered all zeros."""
        ymd = day.strftime("%Y%m%d")
        frame, error, payload = self._request(f"stocks {day}", lambda stock: stock.get_market_ohlcv(ymd, market="ALL"))
        rows = _rows(payload, "OutBlock_1", f"stocks {day}")
        if not rows:
            # not a holiday signature (that is every ticker with zeros): unpublished or unknown; do not guess
            raise KrxError(f"KRX answered no rows for {day}: not published yet, or a day KRX has no data for")
        raw = _parse(rows)
        if isinstance(error, OverflowError):
            log.event(_log, "PYKRX_OVERFLOW", f"{day}: pykrx's int32 cast failed ({error}); the same answer was "
                      "parsed with int64", level=logging.WARNING)
            prices = raw[list(_RAW.values())]
        elif error is not None:
            raise KrxError(f"pykrx could not read KRX's stocks answer for {day}: {type(error).__name__}: {error}")
        else:
            prices = frame.rename(columns=_PYKRX_STOCK)[list(_PYKRX_STOCK.values())]
            prices.index = prices.index.astype(str)
        if (prices[_PRICES] == 0).all(axis=None):
            return None  # KRX's holiday answer: every ticker with zero prices
        out = _normalize(prices, raw, day, raw["market"])
        etf = self._benchmark(day)
        return pd.concat([out, etf], ignore_index=True) if len(etf) else out

    def _benchmark(self, day: dt.date) -> pd.DataFrame:
        """The benchmark ETF rows of the day from the all-ETF answer (one request for every ETF)."""
        ymd = day.strftime("%Y%m%d")
        frame, error, payload = self._request(f"ETFs {day}", lambda stock: stock.get_etf_ohlcv_by_ticker(ymd))
        rows = [r for r in _rows(payload, "output", f"ETFs {day}") if r.get("ISU_SRT_CD") in BENCHMARK_ETFS]
        if not rows:
            if day >= dt.date(2002, 10, 14):
                log.event(_log, "PYKRX_NO_BENCHMARK", f"{day}: {','.join(BENCHMARK_ETFS)} not in KRX's ETF answer",
                          level=logging.WARNING)
            return pd.DataFrame(columns=COLUMNS)
        raw = _parse(rows)
        if error is None and len(frame) and raw.index.isin(frame.index).all():
            # pykrx's own parse for the prices it reads; FLUC_RT and MKTCAP it drops
            prices = frame.loc[raw.index, ["시가", "고가", "저가", "종가", "거래량", "거래대금"]]
            prices.columns = ["open", "high", "low", "close", "volume", "value"]
            prices = prices.assign(change_pct=raw["change_pct"], market_cap=raw["market_cap"])
        else:
            if error is not None and not isinstance(error, OverflowError):
                raise KrxError(f"pykrx could not read KRX's ETF answer for {day}: {type(error).__name__}: {error}")
            prices = raw[list(_RAW.values())]
        if (prices[_PRICES] == 0).all(axis=None):
            return pd.DataFrame(columns=COLUMNS)
        return _normalize(prices, raw, day, pd.Series("ETF", index=raw.index))

    # --- one pykrx call --------------------------------------------------------------------------------------

    def _request(self, what: str, call: Callable[[Any], pd.DataFrame]) -> tuple[Any, BaseException | None, dict]:
        """Run one pykrx call (one request) under the retry policy; return pykrx's frame, the parse error pykrx
        raised if any, and the raw JSON answer it parsed. Raises KrxAuthError / KrxError on a bad answer."""

        def attempt() -> tuple[Any, BaseException | None, dict]:
            stock = self._session()
            self._adapter.answers.clear()
            frame, error = None, None
            try:
                with self._captured():
                    frame = call(stock)
            except (KeyError, OverflowError, ValueError, TypeError, AttributeError) as exc:
                # pykrx's parse failures; network errors (requests exceptions) go on to the retry policy
                error = exc
            answer = self._adapter.answers[-1] if self._adapter.answers else None
            try:
                return frame, error, _check(answer, what, error)
            except KrxAuthError as exc:
                if self._logged_in is None or "LOGOUT" not in str(exc):
                    raise
                at = time.strftime("%H:%M:%S", time.localtime(self._logged_in))
                raise KrxAuthError(
                    f"KRX login missing or rejected (KRX answered LOGOUT to {what} although this process logged in at "
                    f"{at}): most likely another login with the same KRX_ID took the session over (KRX keeps one "
                    "session per member; a second login answers CD011 and pykrx's skipDup ends the first). KRX jobs "
                    f"on the NAS take turns under the login lock state/.{LOGIN_LOCK}.lock; keep browsers and other "
                    f"machines off this id while jobs run. If it persists: {AUTH_HINT}") from None

        attempt.__name__ = f"pykrx_{what.split()[0].lower()}"
        return self._retrying(attempt, what)

    def _retrying(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return retry.call(fn, retry_cfg=self.retry_cfg)
        except KrxOutageError as exc:
            raise KrxOutageError(f"{exc}; still so after the retry policy's attempts") from None
        except KrxError:
            raise
        except Exception as exc:
            if retry.is_transient(exc):
                waited = f"no answer within {self.timeout_s:g}s, " if isinstance(exc, requests.Timeout) else ""
                raise KrxError(f"KRX {what}: still failing after the retry policy's attempts "
                               f"({waited}{type(exc).__name__}: {exc})") from exc
            raise

    def _session(self) -> Any:
        """pykrx.stock, with pykrx's login session current and our adapter mounted on it."""
        stock, auth = self._load()
        with self._captured() as said:
            try:
                krxs = auth.get_auth_session()  # logs in again when pykrx's hour-long session is near its end
            except ValueError as exc:  # pykrx reads the login answer as JSON without checking it
                raise _outage("the login", getattr(exc, "doc", "") or "") from None
        if krxs is None:
            detail = f" (pykrx said: {' / '.join(said)})" if said else ""
            if any(PASSWORD_CHANGE in line for line in said + self._import_said):
                raise KrxPasswordChangeError(f"KRX requires a password change before it accepts this login (CD010, "
                                             f"every three months): {PASSWORD_FIX}{detail}")
            raise KrxAuthError(f"KRX login missing or rejected: {AUTH_HINT}{detail}")
        if self._logged_in is None:
            self._logged_in = krxs.login_time
        session = krxs.session
        if session.adapters.get("https://") is not self._adapter:
            # a new session each login: mount again; longest prefix wins, so "https://" covers data.krx.co.kr
            session.mount("https://", self._adapter)
            session.mount("http://", self._adapter)
        return stock

    def _load(self) -> tuple[Any, Any]:
        """Import pykrx on first use: its import logs in (KRX_ID/KRX_PW from the environment) and prints."""
        if self._stock is None:
            user, password = config.secret("KRX_ID"), config.secret("KRX_PW")
            missing = [n for n, v in (("KRX_ID", user), ("KRX_PW", password)) if not v]
            if missing:
                raise KrxAuthError(f"KRX credentials missing ({', '.join(missing)} not set): {AUTH_HINT}")
            self._secrets = (user, password)
            self._take_login_lock()

            def import_pykrx() -> tuple[Any, Any]:
                with self._captured() as said:
                    try:
                        from pykrx import stock
                        from pykrx.website.comm import auth
                    except ValueError as exc:  # pykrx reads the login answer as JSON without checking it
                        raise _outage("the login", getattr(exc, "doc", "") or "") from None
                self._import_said = said
                return stock, auth

            self._stock, self._auth = self._retrying(import_pykrx, "login at pykrx import")
        return self._stock, self._auth

    def _take_login_lock(self) -> None:
        """One KRX login at a time on this home: wait up to lock_wait_s for another job's, then KrxBusyError."""
        if self.home is None:
            return
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            held = self._lock.enter_context(statefile.locked(self.home, LOGIN_LOCK, wait=False))
            if held:
                return
            self._lock.close()
            if time.monotonic() >= deadline:
                raise KrxBusyError(f"another KRX job holds the login lock {self.home.state}/.{LOGIN_LOCK}.lock "
                                   f"(waited {self.lock_wait_s:g}s): KRX keeps one session per member, so a second "
                                   "login would end that job's session. Run KRX jobs one after another")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    @contextlib.contextmanager
    def _captured(self) -> Iterator[list[str]]:
        """Keep pykrx's prints (which include the login id) off stdout; log them redacted at DEBUG."""
        buf = io.StringIO()
        lines: list[str] = []
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                yield lines
        finally:
            for line in buf.getvalue().splitlines():
                line = self._redact(line).strip()
                if line:
                    lines.append(line)
                    log.event(_log, "PYKRX_OUTPUT", line, level=logging.DEBUG)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def _check(answer: requests.Response | None, what: str, error: BaseException | None) -> dict:
    """The JSON of KRX's answer, or the error pykrx swallowed: LOGOUT and HTTP 400/401/403/404 mean the login is
    missing or rejected (not retried); 429 and 5xx raise HTTPError, which the retry policy retries."""
    if answer is None:
        raise KrxError(f"pykrx sent no request for {what}" + (f" ({type(error).__name__}: {error})" if error else ""))
    status = answer.status_code
    logout = len(answer.content) < 64 and answer.content.strip() == b"LOGOUT"  # a whole day's answer is ~1 MB
    if logout or status in (400, 401, 403, 404):
        said = "LOGOUT" if logout else f"HTTP {status}"
        raise KrxAuthError(f"KRX login missing or rejected (KRX answered {said} to {what}): {AUTH_HINT}")
    if status == 429 or status >= 500:
        raise requests.HTTPError(f"KRX answered HTTP {status} to {what}", response=answer)
    if status != 200:
        raise KrxError(f"KRX answered HTTP {status} to {what}")
    try:
        payload = json.loads(answer.content)  # bytes: UTF-8 found whatever charset the header claims
    except ValueError:
        if answer.content.lstrip()[:1] == b"<":
            raise _outage(what, answer.text) from None
        raise KrxError(f"KRX answered {what} with something that is not JSON: {answer.text[:60]!r}") from None
    if not isinstance(payload, dict):
        raise KrxError(f"KRX answered {what} with JSON that is not an object")
    return payload


def _rows(payload: dict, key: str, what: str) -> list[dict]:
    rows = payload.get(key)
    if not isinstance(rows, list):
        raise KrxError(f"KRX's answer to {what} has no {key} list (keys: {sorted(payload)[:5]})")
    return rows


def _parse(rows: list[dict]) -> pd.DataFrame:
    """KRX's raw rows as our columns, cleaned the way pykrx cleans them but cast to int64 and float64."""
    raw = pd.DataFrame(rows)
    out = pd.DataFrame(index=pd.Index(raw["ISU_SRT_CD"].astype(str), name="ticker"))
    for field, col in _RAW.items():
        # a field absent from a row reads like KRX's "-": no value
        text = raw[field].fillna("").astype(str) if field in raw else pd.Series("0", index=raw.index)
        text = text.str.replace(r"[^-\w\.]", "", regex=True).str.replace(r"-$", "0", regex=True).replace("", "0")
        values = text.to_numpy()
        out[col] = values.astype(np.float64) if col == "change_pct" else values.astype(np.int64)
    out["name"] = raw.get("ISU_ABBRV", pd.Series("", index=raw.index)).astype(str).str.strip().to_numpy()
    market_id = raw.get("MKT_ID", pd.Series("", index=raw.index)).map(_MARKETS)
    market_nm = raw.get("MKT_NM", pd.Series("", index=raw.index)).astype(str).str.split().str[0]
    out["market"] = np.where(market_id.notna(), market_id, market_nm)
    return out


def _normalize(prices: pd.DataFrame, raw: pd.DataFrame, day: dt.date, market: pd.Series) -> pd.DataFrame:
    """One day in common.store.COLUMNS: int64 prices, halted where open/high/low are 0 and a close is kept."""
    out = prices.copy()
    for col in _INTS:
        out[col] = out[col].astype(np.int64)
    out["change_pct"] = out["change_pct"].astype(np.float64).round(2)  # pykrx's float32 -> KRX's two decimals
    no_close = out["close"] <= 0
    if no_close.any():
        # a row with no price on a trading day: storing it would store zero prices
        log.event(_log, "PYKRX_DROPPED", f"{day}: {int(no_close.sum())} row(s) without a close, e.g. "
                  f"{out.index[no_close][0]}", level=logging.WARNING)
        out = out[~no_close]
    out["halted"] = (out[["open", "high", "low"]] == 0).all(axis=1)
    # KRX's base price (common.corporate_actions): "-" or empty (no previous close known) parses as 0, so base = close
    out["base"] = out["close"] - raw["change"].reindex(out.index).fillna(0).astype(np.int64)
    out["name"] = raw["name"].reindex(out.index).fillna("")
    out["market"] = market.reindex(out.index)
    out["date"] = day
    out = out.rename_axis("ticker").reset_index()
    out["ticker"] = out["ticker"].astype(str)
    return out[COLUMNS]
