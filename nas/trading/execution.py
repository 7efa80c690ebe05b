"""The execution server's decisions: issuing tokens, the kill switch, and placing an order (DESIGN section 11).

`place_order` checks, in this order, and on any refusal makes zero broker calls and logs `order_refused` with why:
1. the kill switch (no `system_state` row means ACTIVE; ACTIVE, the emergency stop on or either unreadable: 403);
2. the token's signature, algorithm, audience and issuer (401);
3. its expiry (403);
4. the approval record: the token's hash matches, unused, unexpired, its proposal approved, the intent equal to the
   approved proposal's ticker, side and quantity (403);
5. then one `UPDATE ... WHERE token_used_at IS NULL` that must change one row marks the token used (a second use,
   even at the same moment, changes none: 403), the event, the broker call, the order. A broker failure records
   the order FAILED and the token stays used.
"""

from __future__ import annotations

import datetime as dt
import hmac
import sqlite3
from collections.abc import Mapping
from typing import Any

from common import events, switches
from common.errors import FAILED, REFUSED, OpsError
from common.home import Home
from common.log import now as clock_now
from nas.trading import broker as broker_mod
from nas.trading import db, ledger, proposals, tokens

ACTIVE, INACTIVE = "ACTIVE", "INACTIVE"


def kill_switch(conn: sqlite3.Connection) -> dict:
    """The newest system_state row; with none, ACTIVE (trading stopped until an operator says otherwise)."""
    row = conn.execute("SELECT * FROM system_state ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return {"kill_switch": ACTIVE, "reason": "never set: ACTIVE by default", "set_by": "default",
                "created_at": None}
    return dict(row)


def set_kill_switch(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], active: bool, reason: str,
                    operator: str) -> dict:
    reason = " ".join(str(reason or "").split())
    if not reason:
        raise OpsError("REASON_REQUIRED", "a kill switch change needs a reason (it goes into the event log)", FAILED)
    state = ACTIVE if active else INACTIVE
    with db.deciding(conn):
        db.insert(conn, "system_state", {"kill_switch": state, "reason": reason, "set_by": operator,
                                         "created_at": clock_now().isoformat(timespec="seconds"),
                                         **db.provenance(dict(cfg))})
    ledger.record(home, conn, "kill_switch_activated" if active else "kill_switch_deactivated", operator=operator,
                  reason=reason)
    return kill_switch(conn)


def issue_token(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], secret: bytes, proposal_id: int,
                ttl_s: int, now: dt.datetime | None = None) -> dict:
    """A token for a pending proposal (the approval side stores its hash and marks the proposal approved)."""
    if not 1 <= ttl_s <= cfg["execution"]["max_token_ttl_s"]:
        raise OpsError("BAD_TTL", f"expires_in_seconds: expected 1..{cfg['execution']['max_token_ttl_s']}", FAILED)
    p = proposals.get(conn, proposal_id)
    if p["status"] != "pending":
        raise OpsError("NOT_PENDING", f"proposal {proposal_id} is {p['status']}, not pending", REFUSED)
    token, claims = tokens.issue(secret, cfg["execution"], proposal_id, ttl_s, now or clock_now())
    ledger.record(home, conn, "token_issued", correlation_id=p["correlation_id"], proposal_id=proposal_id,
                  token_jti=claims["jti"], token_expires_at=tokens.expires_at(claims))
    return {"token": token, "jti": claims["jti"], "expires_at": tokens.expires_at(claims)}


def _refuse(home: Home, conn: sqlite3.Connection, exc: OpsError, check: int, intent: Mapping[str, Any]) -> OpsError:
    """Log why an order was refused (under the proposal's correlation id when the intent names a known one)."""
    cid = None
    try:
        cid = proposals.get(conn, int(intent.get("proposal_id"))).get("correlation_id")
    except (OpsError, TypeError, ValueError, sqlite3.Error):
        pass
    fields = {"check": check, "code": exc.code, "reason": exc.message, "proposal_id": intent.get("proposal_id")}
    try:
        ledger.record(home, conn, "order_refused", correlation_id=cid, **fields)
    except sqlite3.Error:  # the database is what failed: the chain still says why (verify-db-log shows the gap)
        events.append(home, "order_refused", correlation_id=cid, **fields)
    return exc


def _check_kill_switch(home: Home, conn: sqlite3.Connection) -> None:
    stop = switches.emergency_stop(home)
    if not stop.readable or stop.on:
        raise OpsError("EMERGENCY_STOP", "the emergency stop is on (or unreadable): no order is placed", REFUSED)
    try:
        state = kill_switch(conn)
    except sqlite3.Error as exc:
        raise OpsError("KILL_SWITCH_UNREADABLE", f"system_state unreadable ({exc}): treated as ACTIVE",
                       REFUSED) from None
    if state["kill_switch"] != INACTIVE:
        raise OpsError("KILL_SWITCH_ACTIVE", f"the kill switch is ACTIVE ({state['reason']})", REFUSED)


def _check_approval(conn: sqlite3.Connection, claims: Mapping[str, Any], token: str, intent: Mapping[str, Any],
                    now: dt.datetime) -> tuple[dict, dict]:
    row = conn.execute("SELECT * FROM approvals WHERE proposal_id = ?", (claims["proposal_id"],)).fetchone()
    if row is None or row["decision"] != "approved" or not row["token_hash"]:
        raise OpsError("NOT_APPROVED", f"proposal {claims['proposal_id']} has no approval", REFUSED)
    approval = dict(row)
    if not hmac.compare_digest(approval["token_hash"], tokens.digest(token)):
        raise OpsError("TOKEN_NOT_RECORDED", "the token is not the one recorded for the approval", REFUSED)
    if approval["token_used_at"] is not None:
        raise OpsError("TOKEN_USED", f"the token was used at {approval['token_used_at']}", REFUSED)
    if dt.datetime.fromisoformat(approval["token_expires_at"]) <= now:
        raise OpsError("APPROVAL_EXPIRED", "the approval's token has expired", REFUSED)
    p = proposals.get(conn, approval["proposal_id"])
    if p["status"] != "approved":
        raise OpsError("NOT_APPROVED", f"proposal {p['id']} is {p['status']}, not approved", REFUSED)
    wanted = {"proposal_id": p["id"], "ticker": p["ticker"], "side": p["side"], "quantity": p["quantity"]}
    given = {k: intent.get(k) for k in wanted}
    if given != wanted or any(isinstance(v, bool) for v in given.values()):  # True == 1 is not a quantity
        diff = ", ".join(f"{k} {given[k]!r} != {wanted[k]!r}" for k in wanted
                         if given[k] != wanted[k] or isinstance(given[k], bool))
        raise OpsError("INTENT_MISMATCH", f"the order differs from the approved proposal: {diff}", REFUSED)
    return approval, p


def place_order(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], secret: bytes, token: str,
                intent: Mapping[str, Any], client: broker_mod.BrokerClient, now: dt.datetime | None = None) -> dict:
    """Run the five checks, then the broker call; returns the order (and its fill when the broker reports one)."""
    now = now or clock_now()
    check = 1
    try:
        _check_kill_switch(home, conn)
        check = 2
        claims = tokens.verify(secret, cfg["execution"], token)
        check = 3
        tokens.check_expiry(claims, now)
        check = 4
        approval, p = _check_approval(conn, claims, token, intent, now)
        check = 5
        with db.deciding(conn):
            changed = conn.execute("UPDATE approvals SET token_used_at = ? WHERE id = ? AND token_hash = ? AND "
                                   "token_used_at IS NULL", (now.isoformat(timespec="milliseconds"), approval["id"],
                                                             approval["token_hash"])).rowcount
            if changed != 1:
                raise OpsError("TOKEN_USED", "the token was used by another request", REFUSED)
    except OpsError as exc:
        raise _refuse(home, conn, exc, check, intent) from None
    return _submit(home, conn, cfg, client, approval, p, now)


def _submit(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], client: broker_mod.BrokerClient,
            approval: dict, p: dict, now: dt.datetime) -> dict:
    prov = db.provenance(dict(cfg))
    order = {"proposal_id": p["id"], "approval_id": approval["id"], "ticker": p["ticker"], "side": p["side"],
             "quantity": p["quantity"], "limit_price": p["limit_price"]}
    try:
        answer = client.order_cash(p["ticker"], p["side"], p["quantity"], p["limit_price"])
    except broker_mod.BrokerError as exc:
        with db.deciding(conn):
            order["id"] = db.insert(conn, "orders", {**order, "status": "FAILED", "broker_message": exc.message,
                                                     "created_at": now.isoformat(timespec="seconds"), **prov})
            conn.execute("UPDATE proposals SET status = 'failed' WHERE id = ?", (p["id"],))
        ledger.record(home, conn, "order_failed", correlation_id=p["correlation_id"], proposal_id=p["id"],
                      order_id=order["id"], broker_code=exc.msg_cd, reason=exc.message)
        return {**order, "status": "FAILED", "broker_message": exc.message, "fill": None}
    odno = str(answer.get("ODNO", ""))
    with db.deciding(conn):
        order["id"] = db.insert(conn, "orders", {**order, "status": "PLACED", "broker_order_no": odno,
                                                 "broker_message": answer.get("ORD_TMD"),
                                                 "created_at": now.isoformat(timespec="seconds"), **prov})
        conn.execute("UPDATE proposals SET status = 'executed' WHERE id = ?", (p["id"],))
    ledger.record(home, conn, "order_placed", correlation_id=p["correlation_id"], proposal_id=p["id"],
                  order_id=order["id"], broker_order_no=odno, ticker=p["ticker"], side=p["side"],
                  quantity=p["quantity"], limit_price=p["limit_price"])
    fill = record_fill(home, conn, cfg, client, order, odno, p["correlation_id"], now)
    return {**order, "status": "PLACED", "broker_order_no": odno, "fill": fill}


def record_fill(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], client: broker_mod.BrokerClient,
                order: dict, odno: str, correlation_id: str, now: dt.datetime) -> dict | None:
    """Ask the broker for the order's fills and record them; None while it has none (or cannot say)."""
    try:
        line = client.order_fills(odno, now.date())
    except broker_mod.BrokerError:
        return None  # the order stands; reconcile reports a fill the broker has and we do not
    qty = int(line.get("tot_ccld_qty", "0")) if line else 0
    if qty <= 0:
        return None
    fill = {"order_id": order["id"], "ticker": order["ticker"], "side": order["side"], "quantity": qty,
            "price": float(line.get("avg_prvs", "0")), "broker_order_no": odno,
            "filled_at": now.isoformat(timespec="seconds")}
    with db.deciding(conn):
        fill["id"] = db.insert(conn, "fills", {**fill, **db.provenance(dict(cfg))})
    ledger.record(home, conn, "fill_recorded", correlation_id=correlation_id, order_id=order["id"],
                  broker_order_no=odno, ticker=order["ticker"], side=order["side"], quantity=qty, price=fill["price"])
    return fill
