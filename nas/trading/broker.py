"""The broker client: the Korea Investment & Securities (KIS) Open API's shape, in Phase 0 only against the local mock
(`krx trade mock-broker`). A later phase changes the base URL and the keys, not this code.

- `POST /oauth2/tokenP` (client credentials) gives a daily access token, kept until it expires;
- `POST /uapi/domestic-stock/v1/trading/order-cash` with the headers `authorization`, `appkey`, `appsecret`,
  `tr_id`, `custtype` and string fields `CANO`, `ACNT_PRDT_CD`, `PDNO`, `ORD_DVSN`, `ORD_QTY`, `ORD_UNPR`;
  TR_IDs VTTC0012U (buy) and VTTC0011U (sell) in the mock domain;
- `GET .../inquire-daily-ccld` (VTTC8001R) for an order's fills and `GET .../inquire-balance` (VTTC8434R);
- every answer carries `rt_cd` ("0" is success), `msg_cd`, `msg1`; EGW00201 is the per-second rate limit, answered
  by waiting and trying again (a rate-limited order was not accepted, so trying again never doubles it).

Phase 0: the base URL must be a loopback address (checked by the config and again here).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from common.config_rules import LOOPBACK_HOSTS
from common.errors import FAILED, OpsError

TOKEN_PATH = "/oauth2/tokenP"
ORDER_PATH = "/uapi/domestic-stock/v1/trading/order-cash"
CCLD_PATH = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"
BALANCE_PATH = "/uapi/domestic-stock/v1/trading/inquire-balance"
TR_ORDER = {"BUY": "VTTC0012U", "SELL": "VTTC0011U"}
TR_CCLD, TR_BALANCE = "VTTC8001R", "VTTC8434R"
RATE_LIMITED = "EGW00201"
RATE_RETRIES = 5


class BrokerError(OpsError):
    """The broker said no (rt_cd != "0") or did not answer; `msg_cd` is the broker's code."""

    def __init__(self, msg_cd: str, message: str):
        super().__init__("BROKER_FAILED", f"{msg_cd}: {message}", FAILED)
        self.msg_cd = msg_cd


class BrokerClient:
    def __init__(self, broker_cfg: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        env = os.environ if environ is None else environ
        url = urlsplit(broker_cfg["base_url"])
        if url.hostname not in LOOPBACK_HOSTS:  # Phase 0: nothing in config can point this at a real broker
            raise OpsError("PHASE0_BROKER", f"broker.base_url {broker_cfg['base_url']!r}: Phase 0 accepts only a "
                           "loopback mock broker", FAILED)
        self.cfg, self.sleep = broker_cfg, sleep
        self.app_key = (env.get(broker_cfg["app_key_env"]) or "").strip()
        self.app_secret = (env.get(broker_cfg["app_secret_env"]) or "").strip()
        if not self.app_key or not self.app_secret:
            raise OpsError("BROKER_CREDENTIALS_MISSING", f"{broker_cfg['app_key_env']} and "
                           f"{broker_cfg['app_secret_env']} must be set (environment or .env)", FAILED)
        self.http = httpx.Client(base_url=broker_cfg["base_url"], timeout=broker_cfg["timeout_s"])
        self._token: str | None = None
        self._token_expires = 0.0

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        for attempt in range(RATE_RETRIES):
            try:
                answer = self.http.request(method, path, **kwargs)
                body = answer.json()
            except httpx.HTTPError as exc:
                raise BrokerError("NETWORK", f"{path}: no answer ({type(exc).__name__})") from None
            except ValueError:
                raise BrokerError("BAD_ANSWER", f"{path}: HTTP {answer.status_code}, not JSON") from None
            if body.get("msg_cd") == RATE_LIMITED and attempt + 1 < RATE_RETRIES:
                self.sleep(1.0)  # the limit is per second
                continue
            if path == TOKEN_PATH:
                if answer.status_code != 200 or "access_token" not in body:
                    raise BrokerError(str(body.get("error_code", answer.status_code)),
                                      str(body.get("error_description", "token refused")))
                return body
            if str(body.get("rt_cd")) != "0":
                raise BrokerError(str(body.get("msg_cd", answer.status_code)), str(body.get("msg1", "")))
            return body
        raise BrokerError(RATE_LIMITED, "rate limit: still refused after retries")

    def token(self) -> str:
        if self._token is None or time.monotonic() >= self._token_expires:
            body = self._call("POST", TOKEN_PATH, json={"grant_type": "client_credentials", "appkey": self.app_key,
                                                        "appsecret": self.app_secret})
            self._token = body["access_token"]
            self._token_expires = time.monotonic() + float(body.get("expires_in", 86400)) - 60
        return self._token

    def _headers(self, tr_id: str) -> dict[str, str]:
        return {"content-type": "application/json; charset=utf-8", "authorization": f"Bearer {self.token()}",
                "appkey": self.app_key, "appsecret": self.app_secret, "tr_id": tr_id, "custtype": "P"}

    def _account(self) -> dict[str, str]:
        return {"CANO": self.cfg["account"], "ACNT_PRDT_CD": self.cfg["product_code"]}

    def order_cash(self, ticker: str, side: str, quantity: int, limit_price: int) -> dict:
        """Place a limit order ("00"); the answer's `output` (ODNO, ORD_TMD, ...)."""
        body = {**self._account(), "PDNO": ticker, "ORD_DVSN": "00", "ORD_QTY": str(int(quantity)),
                "ORD_UNPR": str(int(limit_price))}
        return self._call("POST", ORDER_PATH, json=body, headers=self._headers(TR_ORDER[side]))["output"]

    def order_fills(self, odno: str, day: dt.date) -> dict | None:
        """The day's line of order `odno` (tot_ccld_qty, avg_prvs, ...), None when the broker has none."""
        params = {**self._account(), "INQR_STRT_DT": f"{day:%Y%m%d}", "INQR_END_DT": f"{day:%Y%m%d}",
                  "SLL_BUY_DVSN_CD": "00", "INQR_DVSN": "00", "PDNO": "", "CCLD_DVSN": "00", "ORD_GNO_BRNO": "",
                  "ODNO": odno, "INQR_DVSN_3": "00", "INQR_DVSN_1": "", "CTX_AREA_FK100": "", "CTX_AREA_NK100": ""}
        out = self._call("GET", CCLD_PATH, params=params, headers=self._headers(TR_CCLD)).get("output1") or []
        return next((line for line in out if line.get("odno") == odno), None)

    def balance(self) -> dict[str, int]:
        """Shares held by ticker."""
        params = {**self._account(), "AFHR_FLPR_YN": "N", "OFL_YN": "", "INQR_DVSN": "02", "UNPR_DVSN": "01",
                  "FUND_STTL_ICLD_YN": "N", "FNCG_AMT_AUTO_RDPT_YN": "N", "PRCS_DVSN": "00", "CTX_AREA_FK100": "",
                  "CTX_AREA_NK100": ""}
        out = self._call("GET", BALANCE_PATH, params=params, headers=self._headers(TR_BALANCE)).get("output1") or []
        return {line["pdno"]: int(line["hldg_qty"]) for line in out if int(line.get("hldg_qty", "0")) != 0}
