"""The dashboard's sign-in: an operator token exchanged once for a signed session cookie, and the CSRF token its
forms carry.

The cookie is a JWT (PyJWT, HS256 pinned on decode) holding the operator's name, the time that operator was
created (so a removed operator, even one added again under the same name, no longer matches), a random CSRF token
and an expiry. Its key is state/dashboard_session.key, made 0600 on first use; deleting it signs everybody out.
Every request checks the operator against the registry again (common.operators), so `krx ops operator remove`
ends that operator's sessions at once, without a restart. Signing out ends every session of that operator issued
until then (state/dashboard_signouts.json keeps one time per operator), so a copied cookie stops working too. The
token itself is never kept, in the cookie or anywhere else.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass

import jwt

from common import atomic, events, formats, operators, safeio, statefile
from common.errors import FAILED, OpsError
from common.home import Home
from common.log import now as clock_now

COOKIE = "krx_session"
KEY_FILE = "dashboard_session.key"
SIGNOUTS_FILE = "dashboard_signouts.json"
SIGNOUTS_SCHEMA = formats.DASHBOARD_SIGNOUTS
LIFETIME = dt.timedelta(hours=8)
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Session:
    operator: str
    csrf: str
    expires_at: dt.datetime
    issued_ms: int  # sign-in time in milliseconds: a sign-out ends the sessions issued up to its own time
    role: str = operators.OPERATOR  # read from the registry on every request, never from the cookie

    @property
    def can_change(self) -> bool:
        return self.role != operators.VIEWER


def _key(home: Home) -> bytes:
    path = home.state / KEY_FILE
    for _ in range(2):
        try:
            key = safeio.read_bytes(path, 4096).strip()
        except FileNotFoundError:
            atomic.create_secret(path, secrets.token_hex(32).encode() + b"\n")
            continue
        except (OSError, ValueError) as exc:
            raise OpsError("SESSION_KEY_UNREADABLE", f"{path}: cannot read the dashboard's session key ({exc}); "
                           "delete it to make a new one (everybody signs in again)", FAILED) from None
        if len(key) >= 32:
            return key
        raise OpsError("SESSION_KEY_UNREADABLE", f"{path}: expected at least 32 bytes of key; delete it to make a "
                       "new one (everybody signs in again)", FAILED)
    raise OpsError("SESSION_KEY_UNREADABLE", f"{path}: could not be created", FAILED)


def _operator(home: Home, name: str) -> operators.Operator | None:
    return next((op for op in operators.listing(home) if op.name == name), None)


def _signouts(home: Home) -> dict[str, int]:
    data = statefile.load(home.state / SIGNOUTS_FILE, SIGNOUTS_SCHEMA) or {}
    times = data.get("signed_out_ms", {})
    if not isinstance(times, dict) or not all(isinstance(v, int) for v in times.values()):
        raise statefile.unreadable(home.state / SIGNOUTS_FILE, "signed_out_ms: expected {operator: milliseconds}")
    return times


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def sign_in(home: Home, token: str | None, *, now: dt.datetime | None = None) -> tuple[str, Session]:
    """(cookie value, session) for the operator holding `token`; refuses like common.operators.identify (401). A
    viewer signs in too: it sees the page, and its forms are refused (ACTION_NOT_ALLOWED)."""
    name = operators.identify(home, token, action="dashboard sign-in", change=False)
    op = _operator(home, name)
    now = now or clock_now()
    session = Session(name, secrets.token_urlsafe(32), now + LIFETIME, _ms(now), op.role if op else operators.VIEWER)
    claims = {"sub": name, "op_created": op.created_at if op else None, "csrf": session.csrf,
              "iat": int(now.timestamp()), "iat_ms": session.issued_ms, "exp": int(session.expires_at.timestamp())}
    events.append(home, "dashboard_sign_in", operator=name)
    return jwt.encode(claims, _key(home), algorithm=ALGORITHM), session


def current(home: Home, cookie: str | None, *, now: dt.datetime | None = None) -> Session | None:
    """The session of a cookie, or None when it is missing, forged, expired, or its operator was removed."""
    if not cookie:
        return None
    at = (now or clock_now()).timestamp()
    try:
        claims = jwt.decode(cookie, _key(home), algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp", "iat", "iat_ms", "csrf"], "verify_exp": False})
    except jwt.InvalidTokenError:
        return None
    name, exp, issued = claims["sub"], claims["exp"], claims["iat_ms"]
    # expiry against the project's clock (tests inject it), not the decoder's own
    if not isinstance(exp, int) or exp <= at or not isinstance(name, str) or not isinstance(issued, int):
        return None
    op = _operator(home, name)
    if op is None or claims.get("op_created") != op.created_at:
        return None
    if issued <= _signouts(home).get(name, -1):
        return None
    return Session(name, str(claims["csrf"]), dt.datetime.fromtimestamp(exp, dt.UTC), issued, op.role)


def sign_out(home: Home, session: Session, *, now: dt.datetime | None = None) -> None:
    """End every session of this operator issued until now (this browser's and any copy of its cookie)."""
    with statefile.locked(home, "dashboard_signouts"):
        times = _signouts(home)
        times[session.operator] = max(_ms(now or clock_now()), session.issued_ms)
        statefile.save(home.state / SIGNOUTS_FILE, {"schema": SIGNOUTS_SCHEMA, "signed_out_ms": times})
    events.append(home, "dashboard_sign_out", operator=session.operator)


def require(home: Home, cookie: str | None, csrf: str | None, *, change: bool = True) -> Session:
    """The session of a form POST: 401 SESSION_REQUIRED without a valid one, 403 CSRF_INVALID when the form's CSRF
    token is missing or is not this session's, 403 ACTION_NOT_ALLOWED for a `change` by a viewer."""
    session = current(home, cookie)
    if session is None:
        raise OpsError("SESSION_REQUIRED", "sign in with an operator token first (the session is missing, expired, "
                       "or its operator was removed)")
    if not csrf or not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
        events.append(home, "operator_refused", action="dashboard form", code="CSRF_INVALID",
                      operator=session.operator)
        raise OpsError("CSRF_INVALID", "the form's CSRF token is missing or is not this session's: reload the page "
                       "and submit again; nothing was changed")
    if change and not session.can_change:
        events.append(home, "operator_refused", action="dashboard form", code="ACTION_NOT_ALLOWED",
                      operator=session.operator)
        raise OpsError("ACTION_NOT_ALLOWED", f"operator {session.operator} has the role {session.role}, which may "
                       "only read; nothing was changed")
    return session
