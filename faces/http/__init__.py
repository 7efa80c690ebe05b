"""The HTTP faces (FastAPI on uvicorn): the ops API and the dashboard of `krx serve`, the execution server, the
approval API and page, the mock KIS broker, the PC's backtest API.

They parse input, call the core and map its errors to HTTP statuses here, in one place: the code of the project's
one error base (common.errors.AlertorError) picks the status (STATUS), any other REFUSED error is 403 and a FAILED
one 500; anything unexpected is a 500 whose body
names only its type, never a value (a token or a secret never reaches an answer).
"""

from __future__ import annotations

import logging
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.errors import REFUSED, AlertorError

STATUS = {
    "TOKEN_INVALID": 401, "OPERATOR_REQUIRED": 401, "UNKNOWN_OPERATOR": 401, "SERVICE_CREDENTIAL_INVALID": 401,
    "ACTION_NOT_ALLOWED": 403, "CONFIRM_REQUIRED": 400,
    "UNKNOWN_PROPOSAL": 404, "UNKNOWN_WINDOW": 404, "UNKNOWN_APPROVAL": 404, "UNKNOWN_REF": 404,
    "UNKNOWN_BACKTEST": 404, "NO_RECEIPT": 404, "NO_WINDOW": 404, "NO_APPROVAL": 404, "NO_LIVE_FIRE": 404,
    "NO_POSTMORTEM": 404,
    "BAD_TTL": 422, "REASON_REQUIRED": 422, "BAD_REQUEST": 422, "BAD_MINUTES": 422, "WINDOW_TOO_LONG": 422,
    "BAD_KEY": 422, "BAD_CHANNEL": 422, "SWITCH_REFUSED": 422,
    "NOT_PENDING": 409, "PROPOSALS_EXIST": 409, "CYCLE_RUNNING": 409, "LIVE_FIRE_RUNNING": 409,
    "SESSION_REQUIRED": 401, "CSRF_INVALID": 403,
    "RATE_LIMITED": 429, "STATE_UNREADABLE": 503,
    "EXECUTION_UNREACHABLE": 502, "BROKER_FAILED": 502,
    # the PC's backtest API: a request refused exactly as a queue file would be (common.schemas codes)
    "INVALID_JSON": 400, "INVALID_REQUEST": 422, "STRATEGY_NOT_ALLOWED": 422, "TOO_LARGE": 413,
    "UNKNOWN_REQUEST": 404, "NOT_DONE": 409, "NO_REPORT": 404,
}


def status_of(exc: AlertorError) -> int:
    return STATUS.get(exc.code, 403 if exc.exit_code == REFUSED else 500)


def error_response(exc: AlertorError) -> JSONResponse:
    """The answer for a project error: its status, `{code, message}`, and the headers it carries (RATE_LIMITED:
    Retry-After)."""
    content = {"code": exc.code, "message": exc.message}
    if getattr(exc, "field", None):  # a refused request names its field (common.schemas.RequestError)
        content["field"] = exc.field
    return JSONResponse(status_code=status_of(exc), content=content, headers=getattr(exc, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AlertorError)
    async def _project_error(_request: Request, exc: AlertorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # the field and what was expected, never the value sent (it could be a token pasted into the wrong field)
        what = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse(status_code=422, content={"code": "BAD_REQUEST", "message": what})

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("krx.http").error("unexpected %s", type(exc).__name__)
        return JSONResponse(status_code=500, content={"code": "INTERNAL", "message": type(exc).__name__})


def run(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` until interrupted (uvicorn; its access log stays off: request lines could carry a token)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)



class Background:
    """`app` served by uvicorn in a thread of this process, on a socket bound here (so a port in use is an OSError
    for the caller, not a log line in a thread). `krx worker --http` runs it beside the worker loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        import socket

        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.port = self.socket.getsockname()[1]
        # uvicorn installs signal handlers only in the main thread: in this one it leaves them to the caller
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="krx-http", daemon=True)

    def start(self, limit_s: float = 30) -> None:
        """Start serving; returns once uvicorn accepts connections (or raises if its thread ended instead)."""
        self.thread.start()
        deadline = time.monotonic() + limit_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the HTTP server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Finish the requests in flight (at most timeout_graceful_shutdown), then close."""
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()
