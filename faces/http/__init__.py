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
from fastapi.responses import JSONResponse

from common.errors import REFUSED, AlertorError

STATUS = {
    "TOKEN_INVALID": 401, "OPERATOR_REQUIRED": 401, "UNKNOWN_OPERATOR": 401, "SERVICE_CREDENTIAL_INVALID": 401,
    "UNKNOWN_PROPOSAL": 404, "BAD_TTL": 422, "REASON_REQUIRED": 422, "BAD_REQUEST": 422,
    "NOT_PENDING": 409, "PROPOSALS_EXIST": 409, "EXECUTION_UNREACHABLE": 502, "BROKER_FAILED": 502,
    "SESSION_REQUIRED": 401, "CSRF_INVALID": 403,
}


def status_of(exc: AlertorError) -> int:
    return STATUS.get(exc.code, 403 if exc.exit_code == REFUSED else 500)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AlertorError)
    async def _project_error(_request: Request, exc: AlertorError) -> JSONResponse:
        return JSONResponse(status_code=status_of(exc), content={"code": exc.code, "message": exc.message})

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("krx.http").error("unexpected %s", type(exc).__name__)
        return JSONResponse(status_code=500, content={"code": "INTERNAL", "message": type(exc).__name__})


def run(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` until interrupted (uvicorn; its access log stays off: request lines could carry a token)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

