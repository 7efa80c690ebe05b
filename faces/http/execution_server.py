"""The execution server (`krx trade execution-server`, 127.0.0.1:8002 by default): the only process that holds
EXECUTION_JWT_SECRET and the only one that calls the broker. The decisions live in nas.trading.execution.

  POST /issue_token   header X-Service-Credential; {"proposal_id", "expires_in_seconds"} -> {token, jti, expires_at}
  POST /place_order   header Authorization: Bearer <token>; {"proposal_id", "ticker", "side", "quantity"}
  GET  /health        the kill switch as the server sees it
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Body, Depends, FastAPI, Header

from common.errors import FAILED, OpsError
from common.home import Home
from common.log import now as clock_now
from faces.http import install_error_handlers
from nas.trading import approvals, broker, db, execution, tokens


def create_app(home: Home, cfg: dict, *, now: Callable[[], dt.datetime] = clock_now) -> FastAPI:
    """The app; refuses (OpsError, exit 3) without a signing secret of >= 32 bytes or a service credential."""
    secret = tokens.load_secret(cfg["execution"])
    credential = approvals.service_credential(cfg).encode("utf-8")
    client = broker.BrokerClient(cfg["broker"])
    db.open_db(home).close()  # refuse to start on a database that is missing or at another version
    app = FastAPI(title="krx execution server", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    def conn() -> Iterator[Any]:
        c = db.open_db(home)  # one connection per request: concurrent requests never share a transaction
        try:
            yield c
        finally:
            c.close()

    @app.post("/issue_token")
    def issue_token(body: dict = Body(...), x_service_credential: str = Header(default=""),
                    c: Any = Depends(conn)) -> dict:
        if not hmac.compare_digest(x_service_credential.encode("utf-8"), credential):
            raise OpsError("SERVICE_CREDENTIAL_INVALID", "issue_token needs the approval side's service credential")
        proposal_id, ttl = body.get("proposal_id"), body.get("expires_in_seconds")
        if not isinstance(proposal_id, int) or not isinstance(ttl, int) or isinstance(ttl, bool):
            raise OpsError("BAD_REQUEST", "expected {proposal_id: integer, expires_in_seconds: integer}", FAILED)
        return execution.issue_token(home, c, cfg, secret, proposal_id, ttl, now())

    @app.post("/place_order")
    def place_order(body: dict = Body(...), authorization: str = Header(default=""),
                    c: Any = Depends(conn)) -> dict:
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        order = execution.place_order(home, c, cfg, secret, token, body, client, now())
        if order["status"] == "FAILED":
            raise OpsError("BROKER_FAILED", f"order {order['id']} FAILED at the broker: {order['broker_message']}",
                           FAILED)
        return order

    @app.get("/health")
    def health(c: Any = Depends(conn)) -> dict:
        state = execution.kill_switch(c)
        return {"status": "ok", "kill_switch": state["kill_switch"], "reason": state["reason"]}

    return app
