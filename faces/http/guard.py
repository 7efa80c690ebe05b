"""What `krx serve` asks of every request before a route runs: a rate limit on POSTs, and a token when remote.

- POSTs are rate-limited per caller (the operator token's digest, else the client address): a token bucket of
  app.yaml `api.post_burst` requests refilled at `api.post_per_minute`; beyond it RATE_LIMITED (429) with
  Retry-After. In process, so it resets with a restart; it bounds a runaway script, not a determined attacker (the
  tokens do that).
- Bound to a non-loopback address (`api.allow_remote: true`), every request needs a current operator token, GETs
  and the OpenAPI pages included: a person on the network sees nothing without one. A browser shows it once, at the
  dashboard's sign-in (`/` and `/login` show nothing but that form), and then carries the dashboard's session
  cookie instead (faces/http/session.py: checked against the registry on every request). The cookie only passes
  this gate: an API POST still needs its Bearer token, so the cookie cannot change anything the API changes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from fastapi import FastAPI

from common.errors import AlertorError, OpsError
from common.home import Home
from faces.http import auth, session


class RateLimited(AlertorError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after_s: int):
        super().__init__(f"too many changes: try again in {retry_after_s} s (app.yaml api.post_burst, "
                         "api.post_per_minute)")
        self.headers = {"Retry-After": str(retry_after_s)}


class TokenBucket:
    """Per-key buckets of `burst` tokens refilled at `per_minute`; `take(key)` is the seconds to wait (0: go)."""

    def __init__(self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.clock = float(burst), per_minute / 60.0, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def caller(authorization: str | None, client: str) -> str:
    """Whose bucket: the token's digest (never the token), else the client's address."""
    token = auth.bearer(authorization)
    if token:
        return "t:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return "c:" + client


class Guard:
    """The rate limit on POSTs and, when `remote`, the token on every request: a plain ASGI middleware (cheaper
    than Starlette's BaseHTTPMiddleware on every GET), before routing."""

    def __init__(self, app, home: Home, api_cfg: dict, remote: bool) -> None:
        self.app, self.home, self.remote = app, home, remote
        self.bucket = TokenBucket(int(api_cfg["post_burst"]), float(api_cfg["post_per_minute"]))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from faces.http import error_response

        method = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"authorization", b"cookie")}
        try:
            if self.remote and not _signed_in_or_signing_in(self.home, scope["path"], headers.get("cookie")):
                auth.operator(self.home, headers.get("authorization"), f"{method} {scope['path']}", change=False)
            if method == "POST":
                wait = self.bucket.take(caller(headers.get("authorization"), (scope.get("client") or ("?",))[0]))
                if wait:
                    raise RateLimited(max(1, int(wait + 0.999)))
        except (OpsError, RateLimited) as exc:  # answered here: a middleware's error never reaches the handlers
            return await error_response(exc)(scope, receive, send)
        return await self.app(scope, receive, send)


def _signed_in_or_signing_in(home: Home, path: str, cookie_header: str | None) -> bool:
    """The dashboard's way past the remote gate: its sign-in form, or a current session cookie."""
    if path in ("/", "/login"):  # without a session these show only the sign-in form
        return True
    jar = SimpleCookie()
    try:
        jar.load(cookie_header or "")
    except CookieError:
        return False
    morsel = jar.get(session.COOKIE)
    return morsel is not None and session.current(home, morsel.value) is not None


def install(app: FastAPI, home: Home, api_cfg: dict, *, remote: bool) -> None:
    """The rate limit on POSTs and, when `remote`, the token on every request."""
    app.add_middleware(Guard, home=home, api_cfg=api_cfg, remote=remote)
