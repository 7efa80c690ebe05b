"""Operators: the people allowed to act on the REAL path (DESIGN section 10).

`add` makes a random token (`secrets.token_urlsafe(32)`) and returns it once; only its sha256 is stored, in
state/operators.json. A command that needs an identity gets the token from KRX_OPERATOR_TOKEN or a token file and
calls `identify`, which compares hashes in constant time. An unknown or missing token is refused (exit 2) and the
refusal is logged, never the token (nor its hash).

Roles (`krx ops operator add NAME --role ROLE`, recorded with the operator): `operator` (the default, and what a
record without a role reads as) may do every action; `viewer` may only read (the HTTP faces refuse its changes
with ACTION_NOT_ALLOWED, 403), e.g. for a wall display when `api.allow_remote` makes every read need a token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import events, formats, statefile
from common.errors import FAILED, REFUSED, OpsError
from common.home import Home
from common.log import now as clock_now

FILE = "operators.json"
SCHEMA = formats.OPERATORS
TOKEN_ENV = "KRX_OPERATOR_TOKEN"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TOKEN_FILE = 4096
OPERATOR, VIEWER = "operator", "viewer"
ROLES = (OPERATOR, VIEWER)


@dataclass(frozen=True)
class Operator:
    name: str
    created_at: str
    created_by: str
    role: str = OPERATOR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _path(home: Home) -> Path:
    return home.state / FILE


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _load(home: Home) -> dict[str, dict]:
    return statefile.load_records(_path(home), SCHEMA, "operators", lambda v: isinstance(v, dict) and isinstance(
        v.get("token_sha256"), str), "{name: {token_sha256, ...}}")


def _save(home: Home, ops: dict[str, dict]) -> None:
    statefile.save(_path(home), {"schema": SCHEMA, "operators": ops})


def _public(name: str, rec: dict) -> Operator:
    return Operator(name, str(rec.get("created_at", "")), str(rec.get("created_by", "")),
                    rec.get("role") if rec.get("role") in ROLES else OPERATOR)


def add(home: Home, name: str, *, by: str | None = None, now: dt.datetime | None = None,
        role: str = OPERATOR) -> tuple[Operator, str]:
    """Create operator `name` with `role`; returns it and its token, which is never stored or shown again."""
    if not NAME_RE.match(name or ""):
        raise OpsError("BAD_OPERATOR_NAME", f"operator name {name!r}: expected 1-64 of A-Z a-z 0-9 . _ - "
                       "(starting with a letter or digit)", FAILED)
    if role not in ROLES:
        raise OpsError("BAD_ROLE", f"role {role!r}: expected one of {', '.join(ROLES)}", FAILED)
    token = secrets.token_urlsafe(32)
    with statefile.locked(home, "operators"):
        ops = _load(home)
        if name in ops:
            raise OpsError("OPERATOR_EXISTS", f"operator {name!r} exists already (remove it first to replace "
                           "its token)", REFUSED)
        at = (now or clock_now()).isoformat(timespec="seconds")
        ops[name] = {"token_sha256": _digest(token), "created_at": at, "created_by": by or events.who(),
                     "role": role}
        _save(home, ops)
    events.append(home, "operator_added", operator=by, name=name, role=role)
    return _public(name, ops[name]), token


def remove(home: Home, name: str, *, by: str | None = None) -> Operator:
    """Remove operator `name`: its token stops working, and windows it approved stop being ACTIVE."""
    with statefile.locked(home, "operators"):
        ops = _load(home)
        if name not in ops:
            raise OpsError("UNKNOWN_OPERATOR", f"no operator named {name!r}", REFUSED)
        rec = ops.pop(name)
        _save(home, ops)
    events.append(home, "operator_removed", operator=by, name=name)
    return _public(name, rec)


def listing(home: Home) -> list[Operator]:
    return [_public(n, r) for n, r in sorted(_load(home).items())]


def names(home: Home) -> set[str]:
    """Names of the current operators (raises OpsError STATE_UNREADABLE when the file is damaged)."""
    return set(_load(home))


def identify(home: Home, token: str | None, *, action: str, change: bool = True) -> str:
    """The name of the operator holding `token`; refuses (OPERATOR_REQUIRED, UNKNOWN_OPERATOR, and for a `change`
    by a viewer ACTION_NOT_ALLOWED) and logs it."""
    token = (token or "").strip()
    if not token:
        events.append(home, "operator_refused", action=action, code="OPERATOR_REQUIRED")
        raise OpsError("OPERATOR_REQUIRED", f"{action} needs an operator: the CLI reads {TOKEN_ENV} or --token-file, "
                       "HTTP an `Authorization: Bearer` header")
    try:
        ops = _load(home)
    except OpsError as exc:
        events.append(home, "operator_refused", action=action, code=exc.code)
        raise
    digest = _digest(token)
    found = [n for n, rec in ops.items() if hmac.compare_digest(rec["token_sha256"], digest)]
    if len(found) != 1:
        events.append(home, "operator_refused", action=action, code="UNKNOWN_OPERATOR")
        raise OpsError("UNKNOWN_OPERATOR", f"{action}: the operator token matches no operator")
    if change and _public(found[0], ops[found[0]]).role == VIEWER:
        events.append(home, "operator_refused", action=action, operator=found[0], code="ACTION_NOT_ALLOWED")
        raise OpsError("ACTION_NOT_ALLOWED", f"{action}: operator {found[0]} has the role {VIEWER}, which may "
                       "only read")
    return found[0]


def token_from(environ: Mapping[str, str], token_file: str | os.PathLike | None) -> str | None:
    """The token from `token_file` (a small regular file; its first line) or else from KRX_OPERATOR_TOKEN."""
    if token_file is None:
        return (environ.get(TOKEN_ENV) or "").strip() or None
    path = Path(token_file)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_TOKEN_FILE:
            raise OpsError("TOKEN_FILE_INVALID", f"{path}: expected a regular file of at most {MAX_TOKEN_FILE} "
                           "bytes holding the operator token")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsError("TOKEN_FILE_INVALID", f"{path}: cannot read the operator token "
                       f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else None
