"""The execution server's one-time tokens: JWTs signed with EXECUTION_JWT_SECRET, which only the execution server
reads. HS256 is pinned on decode (a token saying `alg: none` or any other algorithm is refused), and `exp`, `iat`,
`jti`, `aud`, `iss` and `proposal_id` are required. Expiry is checked apart from the signature, after it, so the
two refusals keep their own statuses (401 for a token we did not sign as is, 403 for one that is ours but stale).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from common.errors import FAILED, REFUSED, OpsError

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
REQUIRED = ["exp", "iat", "jti", "aud", "iss", "proposal_id"]


def load_secret(execution_cfg: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bytes:
    """The signing secret from the environment; refuses (exit 3) one missing or shorter than 32 bytes. The message
    names the variable, never the value."""
    name = execution_cfg["secret_env"]
    value = ((os.environ if environ is None else environ).get(name) or "").strip().encode("utf-8")
    if len(value) < MIN_SECRET_BYTES:
        raise OpsError("SECRET_MISSING", f"{name} must be set (environment or .env) to at least {MIN_SECRET_BYTES} "
                       f"bytes; it is {'unset' if not value else f'{len(value)} bytes'}", FAILED)
    return value


def digest(token: str) -> str:
    """What the approval side stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue(secret: bytes, execution_cfg: Mapping[str, Any], proposal_id: int, ttl_s: int,
          now: dt.datetime) -> tuple[str, dict]:
    iat = int(now.timestamp())
    claims = {"iss": execution_cfg["issuer"], "aud": execution_cfg["audience"], "iat": iat, "exp": iat + int(ttl_s),
              "jti": uuid.uuid4().hex, "proposal_id": int(proposal_id)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM), claims


def verify(secret: bytes, execution_cfg: Mapping[str, Any], token: str) -> dict:
    """The claims of a token we signed for this audience and issuer; OpsError TOKEN_INVALID otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=execution_cfg["audience"],
                            issuer=execution_cfg["issuer"],
                            options={"require": REQUIRED, "verify_exp": False, "verify_iat": False})
    except jwt.PyJWTError as exc:
        raise OpsError("TOKEN_INVALID", f"token refused: {type(exc).__name__}", REFUSED) from None
    if not isinstance(claims.get("proposal_id"), int) or not isinstance(claims.get("exp"), int):
        raise OpsError("TOKEN_INVALID", "token refused: proposal_id and exp must be integers", REFUSED)
    return claims


def check_expiry(claims: Mapping[str, Any], now: dt.datetime) -> None:
    if claims["exp"] <= now.timestamp():
        raise OpsError("TOKEN_EXPIRED", "token expired", REFUSED)


def expires_at(claims: Mapping[str, Any]) -> str:
    """The token's expiry as an ISO time (UTC), as the approval record stores it."""
    return dt.datetime.fromtimestamp(claims["exp"], dt.UTC).isoformat(timespec="seconds")
