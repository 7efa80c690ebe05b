"""The PC's backtest API (runbook section 3-B), served by `krx worker --http` beside the worker loop (127.0.0.1:8000
by default): another door into the same file queue, so the same worker runs what it takes and a PC that restarts
loses nothing.

  POST /backtest?strategy=momentum_topN_v1   a backtest_request/1 (or backtest_sweep/1) JSON body, or query
                                              parameters start, end[, universe, params (JSON), id, correlation_id]
       -> 202 {id, status: pending, status_url, report_url, queued: true}; the same id again -> 200 queued: false
  GET  /backtest/{id}          {id, status: pending|processing|done|failed, metrics (done), error (failed)}
  GET  /backtest/{id}/report   the result's report.html once done

Every POST needs an operator (`Authorization: Bearer <operator token>`, the registry of `krx ops operator`, as on
the NAS's API). A body is validated exactly as a queue file is (common.schemas) before anything is written; a
refusal names the field and queues nothing. Errors become statuses only through faces.http.STATUS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from common import config_rules, events, log, safeio, schemas
from common.errors import FAILED, OpsError
from common.home import Home
from common.queue import Queue
from common.queue_names import ERROR_SUFFIX, is_valid_id
from faces.http import auth, install_error_handlers

BODY = "request body"  # how refusals name a POSTed request (a queue file is named by its file name)
QUERY_FIELDS = ("start", "end", "universe", "params", "id", "correlation_id")
MAX_RESULT_BYTES = 16 << 20  # result.json and error records: small, but never read without a bound
MAX_REPORT_BYTES = 256 << 20  # a self-contained report with its chart

_log = log.get("backtest_api")


def check_bind(host: str, allow_remote: bool) -> None:
    """Loopback only unless app.yaml `worker.http.allow_remote` (the NAS's `api.allow_remote` rule)."""
    if host not in config_rules.LOOPBACK_HOSTS and not allow_remote:
        raise OpsError("REMOTE_NOT_ALLOWED", f"configs/app.yaml: worker.http.host: {host} is not a loopback address "
                       f"({', '.join(config_rules.LOOPBACK_HOSTS)}); set worker.http.allow_remote: true to serve other "
                       "machines (every POST still needs an operator token)", FAILED)


def _too_large(limit: int) -> schemas.RequestError:
    return schemas.RequestError(schemas.TOO_LARGE, f"{BODY}: larger than {limit} bytes (worker.max_request_bytes)",
                                file=BODY)


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused once it passes `limit` bytes (a false Content-Length cannot make us read more)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    return bytes(data)


def _from_query(home: Home, strategy: str | None, query: dict[str, str], who: str) -> dict:
    """A backtest_request/1 from query parameters, built and validated by common.schemas."""
    if not strategy:
        raise schemas.RequestError(schemas.INVALID_REQUEST, "query: strategy: missing (or send a backtest_request/1 "
                                   "body)", file="query", field="strategy")
    for name in ("start", "end"):
        if not query.get(name):
            raise schemas.RequestError(schemas.INVALID_REQUEST, f"query: {name}: missing (a date YYYY-MM-DD)",
                                       file="query", field=name)
    params: Any = {}
    if query.get("params"):
        try:
            params = safeio.loads_json(query["params"])
        except ValueError:
            raise schemas.RequestError(schemas.INVALID_REQUEST, "query: params: expected a JSON object of "
                                       "parameter overrides", file="query", field="params") from None
    universe = query.get("universe") or "ALL"
    if universe not in schemas.UNIVERSES:
        universe = universe.split(",")  # a list of tickers, checked by the schema
    return schemas.new_request(strategy, query["start"], query["end"], params=params, universe=universe,
                               requested_by=who, correlation_id=query.get("correlation_id"), id=query.get("id"),
                               home=home, file="query")


def _status(queue: Queue, request_id: str, base: str) -> dict:
    """Where the request is and, once done, its metrics; once failed, its error record."""
    if not is_valid_id(request_id):
        raise schemas.RequestError(schemas.INVALID_REQUEST, f"id: expected a request id matching "
                                   f"[A-Za-z0-9._-]{{1,128}}, got {safeio.clip(request_id, 80)}", field="id")
    where = queue.where(request_id)
    if where is None:
        raise OpsError("UNKNOWN_REQUEST", f"no request {request_id} in the queue (pending, processing, done or "
                       "failed)")
    out: dict[str, Any] = {"id": request_id, "status": where, "status_url": f"{base}backtest/{request_id}"}
    if where == "done":
        result = _read_json(queue.out / request_id / "result.json")
        out.update(metrics=result.get("metrics"), data=result.get("data"), elapsed_ms=result.get("elapsed_ms"),
                   report_url=f"{base}backtest/{request_id}/report")
    elif where == "failed":
        try:
            record = _read_json(queue.failed / f"{request_id}{ERROR_SUFFIX}")
        except OpsError:  # the request moved a moment before its record: the status says enough
            record = {}
        out["error"] = {k: record.get(k) for k in ("error_code", "message", "attempts", "field") if k in record}
    return out


def _read_json(path: Any) -> dict:
    try:
        data = safeio.read_json(path, MAX_RESULT_BYTES)
    except (OSError, ValueError) as exc:
        raise OpsError("RESULT_UNREADABLE", f"{path.parent.name}/{path.name}: {type(exc).__name__}: {exc}",
                       FAILED) from None
    return data if isinstance(data, dict) else {}


def create_app(home: Home, queue: Queue, *, max_bytes: int = schemas.DEFAULT_MAX_BYTES,
               on_queued: Callable[[], None] | None = None) -> FastAPI:
    """The app on `queue` (the worker's own); `on_queued` wakes the worker for a new request."""
    app = FastAPI(title="krx worker: the PC's backtest API")
    install_error_handlers(app)

    def queue_request(request: dict, who: str) -> bool:
        queued = queue.submit(request)
        what = "queued" if queued else "already queued or done; nothing new"
        log.event(_log, "REQUEST_QUEUED" if queued else "REQUEST_EXISTS",
                  f"id={request['id']} path=http operator={who} {request['start']}..{request['end']} {what}")
        if queued:
            events.append_quietly(home, "request_queued", correlation_id=request.get("correlation_id"),
                                  id=request["id"], start=request["start"], end=request["end"], via="http",
                                  operator=who)
            if on_queued is not None:
                on_queued()
        return queued

    @app.post("/backtest", status_code=202)
    async def submit(request: Request, strategy: str | None = None,
                     authorization: str = Header(default="")) -> JSONResponse:
        who = await run_in_threadpool(auth.operator, home, authorization, "queue a backtest request")
        data = await _body(request, max_bytes)
        query = {k: v for k, v in request.query_params.items() if k in QUERY_FIELDS}
        if data.strip():
            if query:
                raise schemas.RequestError(schemas.INVALID_REQUEST, f"query: {next(iter(query))}: give the request "
                                           "either as a JSON body or as query parameters, not both", file="query",
                                           field=next(iter(query)))
            body = schemas.parse(data, file=BODY)
            if strategy is not None and "strategy" in body and body["strategy"] != strategy:
                raise schemas.RequestError(schemas.INVALID_REQUEST, f"{BODY}: strategy: "
                                           f"{safeio.clip(body.get('strategy'), 80)} differs from the query's "
                                           f"strategy={safeio.clip(strategy, 80)}", file=BODY, field="strategy")
            checked = await run_in_threadpool(schemas.validate, body, home=home, file=BODY)
        else:
            checked = await run_in_threadpool(_from_query, home, strategy, query, who)
        queued = await run_in_threadpool(queue_request, checked, who)
        answer = await run_in_threadpool(_status, queue, checked["id"], str(request.base_url))
        return JSONResponse({**answer, "queued": queued}, status_code=202 if queued else 200,
                            headers={"Location": answer["status_url"]})

    @app.get("/backtest/{request_id}")
    def status(request_id: str, request: Request) -> dict:
        return _status(queue, request_id, str(request.base_url))

    @app.get("/backtest/{request_id}/report", response_class=HTMLResponse)
    def report(request_id: str, request: Request) -> HTMLResponse:
        answer = _status(queue, request_id, str(request.base_url))
        if answer["status"] != "done":
            raise OpsError("NOT_DONE", f"request {request_id} is {answer['status']}: no report yet", FAILED)
        path = queue.out / request_id / "report.html"
        try:
            html = safeio.read_bytes(path, MAX_REPORT_BYTES)
        except FileNotFoundError:
            raise OpsError("NO_REPORT", f"done/{request_id}/ has no report.html", FAILED) from None
        except (OSError, ValueError) as exc:
            raise OpsError("RESULT_UNREADABLE", f"done/{request_id}/report.html: {exc}", FAILED) from None
        return HTMLResponse(html)

    return app

