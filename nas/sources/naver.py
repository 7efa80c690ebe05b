"""The fallback source: Naver's daily chart, one request per ticker, for the days KRX fails (docs/naver.md).

`GET https://fchart.stock.naver.com/sise.nhn?symbol=005930&timeframe=day&count=N&requestType=0` answers EUC-KR
XML, the last N trading days of one ticker (today's row too while the market is open):

    <chartdata symbol="005930" name="삼성전자" count="1835" timeframe="day" ...>
      <item data="20260123|154700|156000|150100|152100|25195543" />   date|open|high|low|close|volume

Naver's prices are split-adjusted as of the moment they are fetched (the whole history in today's share basis),
so our `base` of a Naver row is Naver's previous close: on an ordinary day that is the previous close, and on a
corporate action's day it is the previous close in the new share basis, which is exactly KRX's base price. A day
filled from Naver therefore gives the same factor (stored previous close / base) as KRX would. Naver gives no
traded value and no market cap: value is close x volume (an estimate; KRX sums every trade), market_cap is 0.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import requests

from common import log, retry
from common.errors import AlertorError
from common.store import COLUMNS

_log = log.get("naver")

URL = "https://fchart.stock.naver.com/sise.nhn"
ENCODING = "euc-kr"
_FIELDS = ("date", "open", "high", "low", "close", "volume")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")  # expat reads no EUC-KR: parse the decoded text without it


class NaverError(AlertorError, RuntimeError):
    """Naver answered something that is not a usable daily chart (or the retries ran out)."""


def parse(body: bytes, ticker: str) -> tuple[str, pd.DataFrame]:
    """Naver's answer for `ticker` -> (its name, a frame indexed by date: open, high, low, close, volume int64,
    oldest first). NaverError names the ticker, the item and what was expected."""
    what = f"Naver's daily chart of {ticker}"
    try:
        text = body.decode(ENCODING)
    except UnicodeDecodeError as exc:
        raise NaverError(f"{what}: not {ENCODING.upper()} text ({exc.reason} at byte {exc.start})") from None
    try:
        root = ET.fromstring(_DECLARATION.sub("", text, count=1))
    except ET.ParseError as exc:
        raise NaverError(f"{what}: not XML ({exc}); the answer starts {text.strip()[:60]!r}") from None
    chart = root.find("chartdata")
    if chart is None:
        raise NaverError(f"{what}: no <chartdata> element (root <{root.tag}>)")
    if chart.get("symbol") not in (None, ticker):
        raise NaverError(f"{what}: the answer is for symbol {chart.get('symbol')!r}")
    rows = []
    for k, item in enumerate(chart.iter("item")):
        data = item.get("data", "")
        parts = data.split("|")
        if len(parts) != len(_FIELDS):
            raise NaverError(f"{what}: item {k} data={data!r:.60}: expected {'|'.join(_FIELDS)}")
        try:
            day = dt.datetime.strptime(parts[0], "%Y%m%d").date()
            values = [int(v) for v in parts[1:]]
        except ValueError:
            raise NaverError(f"{what}: item {k} data={data!r:.60}: expected YYYYMMDD then five whole numbers") \
                from None
        if min(values) < 0:
            raise NaverError(f"{what}: item {k} data={data!r:.60}: expected no negative price or volume")
        rows.append((day, *values))
    if not rows:
        raise NaverError(f"{what}: no <item> rows (an unknown ticker, or one Naver does not chart)")
    frame = pd.DataFrame(rows, columns=list(_FIELDS)).set_index("date")
    if frame.index.duplicated().any():
        raise NaverError(f"{what}: day {frame.index[frame.index.duplicated()][0]} appears twice")
    return chart.get("name", "") or "", frame.sort_index().astype(np.int64)


class NaverSource:
    """Per-ticker daily rows from Naver under the KRX source's timeout and retry policy."""

    name = "naver"

    def __init__(self, timeout_s: float = 20.0, retry_cfg: dict | None = None):
        self.timeout_s = float(timeout_s)
        self.retry_cfg = retry_cfg
        self.session = requests.Session()

    def history(self, ticker: str, count: int) -> tuple[str, pd.DataFrame]:
        """The last `count` daily rows of one ticker (see `parse`)."""

        def naver_chart() -> bytes:
            resp = self.session.get(URL, params={"symbol": ticker, "timeframe": "day", "count": int(count),
                                                 "requestType": 0}, timeout=self.timeout_s)
            resp.raise_for_status()  # 5xx and 429 are retried by the policy; other statuses fail below
            return resp.content

        try:
            body = retry.call(naver_chart, retry_cfg=self.retry_cfg)
        except requests.RequestException as exc:
            status = getattr(exc.response, "status_code", None)
            said = f"HTTP {status}" if status else f"{type(exc).__name__}"
            raise NaverError(f"Naver's daily chart of {ticker}: {said} (after the retry policy's attempts where "
                             f"worth another try): {exc}") from None
        return parse(body, ticker)

    def fetch_days(self, tickers: Iterable[str], days: list[dt.date], count: int,
                   known: Mapping[str, tuple[str, str]] | None = None) -> dict[dt.date, pd.DataFrame]:
        """Normalized frames (common.store.COLUMNS) of `days` for `tickers`, one request per ticker asking for the
        last `count` rows (enough to reach the day before the first of `days`). `known`: ticker -> (name,
        market) from the store. Every ticker must have a row on every day: a missing one is a NaverError (a
        holding absent from a stored day would read as delisted)."""
        known = known or {}
        parts: dict[dt.date, list[dict]] = {d: [] for d in days}
        for ticker in sorted(set(tickers)):
            name, hist = self.history(ticker, count)
            name, market = known.get(ticker, (name, ""))
            prev_close = hist["close"].shift(1)
            for day in days:
                if day not in hist.index:
                    first = hist.index[0]
                    why = f"its chart starts {first}: ask for more rows" if day < first else "no row that day"
                    raise NaverError(f"Naver's daily chart of {ticker} has no row for {day} ({why})")
                row = hist.loc[day]
                base = int(prev_close.loc[day]) if pd.notna(prev_close.loc[day]) else int(row["close"])
                parts[day].append({
                    "date": day, "ticker": ticker, "name": name, "market": market,
                    **{c: int(row[c]) for c in ("open", "high", "low", "close", "volume")},
                    "value": int(row["close"]) * int(row["volume"]),
                    "change_pct": round((row["close"] - base) / base * 100, 2) if base > 0 else 0.0,
                    "base": base, "market_cap": 0, "halted": bool(row["volume"] == 0),
                })
        return {d: pd.DataFrame(rows, columns=COLUMNS) for d, rows in parts.items()}
