"""Approving or rejecting a proposal (the approval side: `krx trade approve|reject` and `krx serve`).

Approving asks the execution server's `/issue_token` for a one-time token (authenticated by the service credential,
which only the approval side has), stores only the token's sha256 with its expiry, marks the proposal `approved`
and returns the token once. The approval side never holds the signing secret. The approver is always an operator
identified by its own token, never a name given in a request.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from typing import Any

import httpx

from common.errors import FAILED, REFUSED, OpsError
from common.home import Home
from common.log import now as clock_now
from nas.trading import db, ledger, proposals, tokens

SERVICE_HEADER = "X-Service-Credential"


def service_credential(cfg: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    name = cfg["execution"]["service_credential_env"]
    value = ((os.environ if environ is None else environ).get(name) or "").strip()
    if not value:
        raise OpsError("SERVICE_CREDENTIAL_MISSING", f"{name} is not set (environment or .env): the approval side "
                       "needs it to ask the execution server for tokens", FAILED)
    return value


def _pending(conn: sqlite3.Connection, proposal_id: int) -> dict:
    p = proposals.get(conn, proposal_id)
    if p["status"] != "pending":
        raise OpsError("NOT_PENDING", f"proposal {proposal_id} is {p['status']}, not pending", REFUSED)
    return p


def request_token(cfg: Mapping[str, Any], proposal_id: int, ttl_s: int) -> dict:
    """Ask the execution server for a token; {token, jti, expires_at}."""
    url = cfg["execution"]["url"].rstrip("/") + "/issue_token"
    try:
        answer = httpx.post(url, json={"proposal_id": proposal_id, "expires_in_seconds": ttl_s},
                            headers={SERVICE_HEADER: service_credential(cfg)}, timeout=cfg["execution"]["timeout_s"])
    except httpx.HTTPError as exc:
        raise OpsError("EXECUTION_UNREACHABLE", f"the execution server at {cfg['execution']['url']} did not answer "
                       f"({type(exc).__name__}); start it with `krx trade execution-server`", FAILED) from None
    if answer.status_code != 200:
        detail = _detail(answer)
        raise OpsError("TOKEN_NOT_ISSUED", f"the execution server refused a token: HTTP {answer.status_code} "
                       f"{detail}", REFUSED if answer.status_code < 500 else FAILED)
    return answer.json()


def _detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return str(body.get("code", "")) + ": " + str(body.get("message", ""))
    except ValueError:
        return answer.text[:200]


def approve(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], proposal_id: int, operator: str,
            expires_in_seconds: int | None = None) -> dict:
    """Approve a pending proposal as `operator`; returns {proposal, token, expires_at} (the token only here)."""
    ttl = int(expires_in_seconds or cfg["execution"]["default_token_ttl_s"])
    if not 1 <= ttl <= cfg["execution"]["max_token_ttl_s"]:
        raise OpsError("BAD_TTL", f"expires_in_seconds: expected 1..{cfg['execution']['max_token_ttl_s']}, got {ttl}",
                       FAILED)
    _pending(conn, proposal_id)
    issued = request_token(dict(cfg), proposal_id, ttl)  # no write lock held while the other process works
    now = clock_now()
    with db.deciding(conn):
        p = _pending(conn, proposal_id)  # a decision made meanwhile wins; this token is then never stored: useless
        db.insert(conn, "approvals", {
            "proposal_id": proposal_id, "decision": "approved", "decided_by": operator,
            "token_hash": tokens.digest(issued["token"]), "token_jti": issued["jti"],
            "token_expires_at": issued["expires_at"], "created_at": now.isoformat(timespec="seconds"),
            **db.provenance(dict(cfg))})
        conn.execute("UPDATE proposals SET status = 'approved' WHERE id = ?", (proposal_id,))
    ledger.record(home, conn, "approval_granted", correlation_id=p["correlation_id"], proposal_id=proposal_id,
                  operator=operator, token_jti=issued["jti"], token_expires_at=issued["expires_at"])
    return {"proposal": proposals.get(conn, proposal_id), "token": issued["token"],
            "expires_at": issued["expires_at"]}


def reject(home: Home, conn: sqlite3.Connection, cfg: Mapping[str, Any], proposal_id: int, operator: str,
           rejection_reason: str) -> dict:
    reason = " ".join(str(rejection_reason or "").split())
    if not reason:
        raise OpsError("REASON_REQUIRED", "a rejection needs a reason (it goes into the event log)", FAILED)
    with db.deciding(conn):
        p = _pending(conn, proposal_id)
        db.insert(conn, "approvals", {
            "proposal_id": proposal_id, "decision": "rejected", "decided_by": operator, "rejection_reason": reason,
            "created_at": clock_now().isoformat(timespec="seconds"), **db.provenance(dict(cfg))})
        conn.execute("UPDATE proposals SET status = 'rejected' WHERE id = ?", (proposal_id,))
    ledger.record(home, conn, "approval_rejected", correlation_id=p["correlation_id"], proposal_id=proposal_id,
                  operator=operator, rejection_reason=reason)
    return proposals.get(conn, proposal_id)
