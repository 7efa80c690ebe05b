"""The approval side's HTTP face (in `krx serve`, 127.0.0.1:8000 by default): the day's proposals, approve and reject.

  GET  /proposals[?date=YYYY-MM-DD&status=S]     the proposals as JSON
  POST /proposals/{id}/approve  {"expires_in_seconds": N}   -> {proposal, token, expires_at}; the token only here
  POST /proposals/{id}/reject   {"rejection_reason": "..."}
  GET  /proposals/page                           the page: the day's proposals with approve and reject buttons

Every POST needs an operator: `Authorization: Bearer <operator token>` (common.operators); the approver is that
operator, never a field of the body. This process never holds EXECUTION_JWT_SECRET: it asks the execution server
for tokens with the service credential and stores only their sha256.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, Header
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from common.errors import FAILED, OpsError
from common.home import Home
from faces.http import auth
from nas.trading import approvals, db, proposals

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]))


def router(home: Home, cfg: dict) -> APIRouter:
    r = APIRouter()

    def conn() -> Iterator[Any]:
        c = db.open_db(home)
        try:
            yield c
        finally:
            c.close()

    @r.get("/proposals")
    def listing(date: dt.date | None = None, status: str | None = None, c: Any = Depends(conn)) -> list[dict]:
        return proposals.listing(c, asof=date.isoformat() if date else None, status=status)

    @r.post("/proposals/{proposal_id}/approve")
    def approve(proposal_id: int, body: dict = Body(default={}), authorization: str = Header(default=""),
                c: Any = Depends(conn)) -> dict:
        who = auth.operator(home, authorization, f"approve proposal {proposal_id}")
        ttl = body.get("expires_in_seconds")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
            raise OpsError("BAD_REQUEST", "expires_in_seconds: expected an integer number of seconds", FAILED)
        return approvals.approve(home, c, cfg, proposal_id, who, ttl)

    @r.post("/proposals/{proposal_id}/reject")
    def reject(proposal_id: int, body: dict = Body(default={}), authorization: str = Header(default=""),
               c: Any = Depends(conn)) -> dict:
        who = auth.operator(home, authorization, f"reject proposal {proposal_id}")
        return approvals.reject(home, c, cfg, proposal_id, who, str(body.get("rejection_reason") or ""))

    @r.get("/proposals/page", response_class=HTMLResponse)
    def page(date: dt.date | None = None, c: Any = Depends(conn)) -> str:
        day = date.isoformat() if date else (c.execute("SELECT MAX(asof) FROM proposals").fetchone()[0] or "")
        return TEMPLATES.get_template("proposals.html").render(day=day, rows=proposals.listing(c, asof=day))

    return r
