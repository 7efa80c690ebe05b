"""Who is asking: the operator behind an HTTP request's `Authorization: Bearer <operator token>`.

Operators are looked up in the registry on every request (common.operators), so a token removed with
`krx ops operator remove` stops working at once, without a restart.
"""

from __future__ import annotations

from common import operators
from common.home import Home


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None for any other header."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def operator(home: Home, authorization: str | None, action: str, *, change: bool = True) -> str:
    """The operator's name; raises OpsError OPERATOR_REQUIRED / UNKNOWN_OPERATOR (401), for a `change` by a viewer
    ACTION_NOT_ALLOWED (403; common.operators' roles), and logs the refusal."""
    return operators.identify(home, bearer(authorization), action=action, change=change)
