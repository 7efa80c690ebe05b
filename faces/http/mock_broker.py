"""The mock KIS broker (`krx trade mock-broker`, 127.0.0.1:29443 by default): the shape of the KIS Open API's mock
(paper trading) domain, so the client never knows it is not the real one. Phase 0 never reaches anything else.

It keeps one paper account in memory: cash, positions (optionally seeded from the snapshot's holdings) and the
day's orders. A limit order fills at once at the day's price (the snapshot's close, or the store's) when the limit
allows it (buy: limit >= price; sell: limit <= price and enough shares), else it stays open unfilled. More than
`rate_limit_per_s` calls in one second answer EGW00201. `GET /mock/calls` counts every call by path (tests assert
that a refusal made none).
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Body, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from common.log import now as clock_now
from nas.trading import broker

CASH = 100_000_000  # the KIS mock account's usual paper money


def _fail(msg_cd: str, msg1: str, status: int = 200) -> JSONResponse:
    return JSONResponse(status_code=status, content={"rt_cd": "1", "msg_cd": msg_cd, "msg1": msg1})


def create_app(prices: Mapping[str, float], app_key: str, app_secret: str, *, rate_limit_per_s: int = 2,
               account: str = "50000000", product_code: str = "01", positions: Mapping[str, int] | None = None,
               now: Callable[[], dt.datetime] = clock_now) -> FastAPI:
    app = FastAPI(title="mock KIS broker", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    state: dict[str, Any] = {"cash": CASH, "positions": Counter({k: int(v) for k, v in (positions or {}).items()}),
                             "orders": {}, "tokens": set(), "calls": Counter(), "window": (0, 0)}

    @app.middleware("http")
    async def count_and_limit(request: Request, call_next):
        if request.url.path.startswith("/mock/"):
            return await call_next(request)
        with lock:
            state["calls"][request.url.path] += 1
            second, used = state["window"]
            current = int(time.monotonic())
            used = used + 1 if current == second else 1
            state["window"] = (current, used)
        if used > rate_limit_per_s:
            with lock:
                state["calls"]["rate_limited"] += 1
            return _fail(broker.RATE_LIMITED, "초당 거래건수를 초과하였습니다.", 500)
        return await call_next(request)

    def authorized(authorization: str, appkey: str, appsecret: str) -> bool:
        token = authorization.removeprefix("Bearer ").strip()
        return (token in state["tokens"] and hmac.compare_digest(appkey, app_key)
                and hmac.compare_digest(appsecret, app_secret))

    @app.post(broker.TOKEN_PATH)
    def token_p(body: dict = Body(...)) -> Any:
        if body.get("grant_type") != "client_credentials" or not (
                hmac.compare_digest(str(body.get("appkey", "")), app_key)
                and hmac.compare_digest(str(body.get("appsecret", "")), app_secret)):
            return JSONResponse(status_code=403, content={"error_code": "EGW00103",
                                                          "error_description": "유효하지 않은 AppKey입니다."})
        token = secrets.token_urlsafe(32)
        with lock:
            state["tokens"].add(token)
        expires = now() + dt.timedelta(days=1)
        return {"access_token": token, "token_type": "Bearer", "expires_in": 86400,
                "access_token_token_expired": expires.strftime("%Y-%m-%d %H:%M:%S")}

    def check_account(fields: Mapping[str, Any]) -> JSONResponse | None:
        if fields.get("CANO") != account or fields.get("ACNT_PRDT_CD") != product_code:
            return _fail("OPSQ2000", "ERROR : INPUT INVALID_CHECK_ACNO")
        return None

    @app.post(broker.ORDER_PATH)
    def order_cash(body: dict = Body(...), authorization: str = Header(default=""), appkey: str = Header(default=""),
                   appsecret: str = Header(default=""), tr_id: str = Header(default="", convert_underscores=False),
                   custtype: str = Header(default="")) -> Any:
        if not authorized(authorization, appkey, appsecret):
            return _fail("EGW00123", "기간이 만료된 token 입니다.", 500)
        sides = {"VTTC0012U": "BUY", "VTTC0802U": "BUY", "VTTC0011U": "SELL", "VTTC0801U": "SELL"}
        if tr_id not in sides or custtype not in ("P", "B"):
            return _fail("EGW00205", f"tr_id or custtype invalid ({tr_id!r}, {custtype!r})")
        bad = check_account(body)
        fields = ("PDNO", "ORD_DVSN", "ORD_QTY", "ORD_UNPR")
        if bad or not all(isinstance(body.get(f), str) for f in fields):
            return bad or _fail("OPSQ0002", "필수항목 누락 또는 문자열이 아닙니다: " + ", ".join(fields))
        if not (body["ORD_QTY"].isdigit() and body["ORD_UNPR"].isdigit() and int(body["ORD_QTY"]) > 0):
            return _fail("APBK0915", "주문수량 또는 단가가 올바르지 않습니다.")
        ticker, side, qty, limit = body["PDNO"], sides[tr_id], int(body["ORD_QTY"]), int(body["ORD_UNPR"])
        if ticker not in prices:
            return _fail("APBK0656", f"종목코드 {ticker} 가 없습니다.")
        price = float(prices[ticker])
        with lock:
            if side == "SELL" and state["positions"][ticker] < qty:
                return _fail("APBK0400", "주문가능수량을 초과 했습니다.")
            if side == "BUY" and qty * limit > state["cash"]:
                return _fail("APBK0952", "주문가능금액을 초과 했습니다.")
            odno = f"{len(state['orders']) + 1:010d}"
            filled = limit >= price if side == "BUY" else limit <= price
            if filled:
                sign = 1 if side == "BUY" else -1
                state["positions"][ticker] += sign * qty
                state["cash"] -= sign * qty * price
            at = now()
            state["orders"][odno] = {"odno": odno, "pdno": ticker, "sll_buy_dvsn_cd": "02" if side == "BUY" else "01",
                                     "ord_qty": str(qty), "ord_unpr": str(limit),
                                     "tot_ccld_qty": str(qty if filled else 0),
                                     "avg_prvs": f"{price if filled else 0:.0f}", "ord_dt": f"{at:%Y%m%d}",
                                     "ord_tmd": f"{at:%H%M%S}"}
        return {"rt_cd": "0", "msg_cd": "40600000", "msg1": "모의투자 매수주문이 완료 되었습니다." if side == "BUY"
                else "모의투자 매도주문이 완료 되었습니다.",
                "output": {"KRX_FWDG_ORD_ORGNO": "00950", "ODNO": odno, "ORD_TMD": f"{at:%H%M%S}"}}

    @app.get(broker.CCLD_PATH)
    def daily_ccld(request: Request, authorization: str = Header(default=""), appkey: str = Header(default=""),
                   appsecret: str = Header(default=""),
                   tr_id: str = Header(default="", convert_underscores=False)) -> Any:
        if not authorized(authorization, appkey, appsecret):
            return _fail("EGW00123", "기간이 만료된 token 입니다.", 500)
        q = request.query_params
        if tr_id != broker.TR_CCLD or check_account(q):
            return check_account(q) or _fail("EGW00205", f"tr_id {tr_id!r} invalid")
        with lock:
            lines = [dict(o) for o in state["orders"].values()
                     if (not q.get("ODNO") or o["odno"] == q["ODNO"])
                     and q.get("INQR_STRT_DT", "") <= o["ord_dt"] <= q.get("INQR_END_DT", "99999999")]
        return {"rt_cd": "0", "msg_cd": "70070000", "msg1": "조회가 완료되었습니다.", "output1": lines, "output2": {}}

    @app.get(broker.BALANCE_PATH)
    def balance(request: Request, authorization: str = Header(default=""), appkey: str = Header(default=""),
                appsecret: str = Header(default=""), tr_id: str = Header(default="", convert_underscores=False)) -> Any:
        if not authorized(authorization, appkey, appsecret):
            return _fail("EGW00123", "기간이 만료된 token 입니다.", 500)
        if tr_id != broker.TR_BALANCE or check_account(request.query_params):
            return check_account(request.query_params) or _fail("EGW00205", f"tr_id {tr_id!r} invalid")
        with lock:
            held = [{"pdno": t, "hldg_qty": str(q), "prpr": f"{prices.get(t, 0):.0f}"}
                    for t, q in sorted(state["positions"].items()) if q]
            cash = state["cash"]
        return {"rt_cd": "0", "msg_cd": "20310000", "msg1": "모의투자 조회가 완료되었습니다.", "output1": held,
                "output2": [{"dnca_tot_amt": f"{cash:.0f}"}]}

    @app.get("/mock/calls")
    def calls() -> dict:
        with lock:
            counted = dict(state["calls"])
            accepted = len(state["orders"])
        limited = counted.pop("rate_limited", 0)
        return {"total": sum(counted.values()), "by_path": counted, "orders": counted.get(broker.ORDER_PATH, 0),
                "orders_accepted": accepted, "rate_limited": limited}

    return app
