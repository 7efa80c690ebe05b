"""The HTTP faces (FastAPI on uvicorn): the execution server, the approval API and page, the dashboard, the mock KIS
broker.

They parse input, call the core and map its errors to HTTP statuses here, in one place: the code of the project's
one error base (common.errors.AlertorError) picks the status (STATUS), any other REFUSED error is 403 and a FAILED
one 500; anything unexpected is a 500 whose body
names only its type, never a value (a token or a secret never reaches an answer).
"""

from __future__ import annotations

import logging

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
}


def status_of(exc: AlertorError) -> int:
    return STATUS.get(exc.code, 403 if exc.exit_code == REFUSED else 500)


def error_response(exc: AlertorError) -> JSONResponse:
    """The answer for a project error: its status, `{code, message}`, and the headers it carries (RATE_LIMITED:
    Retry-After)."""
    return JSONResponse(status_code=status_of(exc), content={"code": exc.code, "message": exc.message},
                        headers=getattr(exc, "headers", None))


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

