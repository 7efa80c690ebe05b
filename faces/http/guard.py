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

from fastapi import FastAPI, Request

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


def caller(request: Request) -> str:
    """Whose bucket: the token's digest (never the token), else the client's address."""
    token = auth.bearer(request.headers.get("authorization"))
    if token:
        return "t:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return "c:" + (request.client.host if request.client else "?")


def _signed_in_or_signing_in(home: Home, request: Request) -> bool:
    """The dashboard's way past the remote gate: its sign-in form, or a current session cookie."""
    if request.url.path in ("/", "/login"):  # without a session these show only the sign-in form
        return True
    return session.current(home, request.cookies.get(session.COOKIE)) is not None


def install(app: FastAPI, home: Home, api_cfg: dict, *, remote: bool) -> None:
    """The rate limit on POSTs and, when `remote`, the token on every request (a middleware, before routing)."""
    from faces.http import error_response

    bucket = TokenBucket(int(api_cfg["post_burst"]), float(api_cfg["post_per_minute"]))

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        try:
            if remote and not _signed_in_or_signing_in(home, request):
                auth.operator(home, request.headers.get("authorization"), f"{request.method} {request.url.path}",
                              change=False)
            if request.method == "POST":
                wait = bucket.take(caller(request))
                if wait:
                    raise RateLimited(max(1, int(wait + 0.999)))
        except (OpsError, RateLimited) as exc:  # a middleware's error never reaches the app's handlers
            return error_response(exc)
        return await call_next(request)
