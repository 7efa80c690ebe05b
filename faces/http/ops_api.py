"""The ops API's state endpoints (in `krx serve`): status and health, the switches, the real-enable window and its
approval, the secrets self-test, the event log. Each calls the core function its `krx ops` command calls.

  GET  /api/status                               nas.status snapshot (keys: nas/status.py)
  GET  /api/ops/health                           200 when the home is readable and its state sane, else 503
  GET  /api/emergency_stop                       {enabled, readable, updated_at, updated_by, reason}
  POST /api/emergency_stop       {enabled, reason}                      krx ops estop on|off --reason
  GET  /api/execution_gate                       {mode, effective, readable, updated_at, updated_by, reason, window_id}
  POST /api/execution_gate       {mode, reason}                         krx ops gate MODE --reason
  GET  /api/real_sender_enable                   {enabled, channel, readable, updated_at, updated_by, reason}
  POST /api/real_sender_enable   {enabled, reason, channel}             krx ops sender on|off --reason [--channel]
  POST /api/real_enable_window/request  {duration_minutes, reason}      krx ops window request
  GET  /api/real_enable_window/latest                                   krx ops window status
  GET  /api/approvals/real_enable/latest                                krx ops approval status
  POST /api/approvals/real_enable/{id}/approve  {key}                   krx ops approve ID --key K
  GET  /api/secrets/self_test                    presence only           krx ops self-test
  GET  /api/events[?correlation_id=C&limit=N]    {rows: [...]} newest last
  GET  /api/events/verify                        {ok, first_bad_line, message}   krx ops verify-log

Every POST names its operator (`Authorization: Bearer`, faces/http/auth.py); errors are mapped to statuses in
faces/http/__init__.py only.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from common import events, switches, window
from common.errors import FAILED, OpsError
from common.home import Home
from faces.http import auth
from nas import status

MAX_EVENTS = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SwitchBody(_Body):
    enabled: StrictBool
    reason: StrictStr = ""


class SenderBody(SwitchBody):
    channel: StrictStr | None = None


class GateBody(_Body):
    mode: StrictStr
    reason: StrictStr = ""


class WindowBody(_Body):
    duration_minutes: StrictInt
    reason: StrictStr = ""


class KeyBody(_Body):
    key: StrictStr | StrictInt


def encode(data: Any) -> bytes:
    """JSON as JSONResponse writes it, for an answer kept encoded between requests."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def acting(home: Home, authorization: str | None, action: str) -> str:
    """The operator of a change, after completing a live fire's lockdown that a killed process left recorded (as
    every `krx ops` command does first)."""
    from nas import live_fire

    who = auth.operator(home, authorization, action)
    live_fire.recover(home)
    return who


def require_confirm(confirm: bool, action: str) -> None:
    """A runbook POST that runs something needs `?confirm=true`; without it nothing runs (400)."""
    if not confirm:
        raise OpsError("CONFIRM_REQUIRED", f"{action} runs for real: add ?confirm=true", FAILED)


def switch_view(item: switches.Switch) -> dict[str, Any]:
    view = {"enabled": item.on, "readable": item.readable, "updated_at": item.at, "updated_by": item.by,
            "reason": item.reason}
    return {**view, "channel": item.channel} if item.name == "sender" else view


def gate_view(home: Home, g: switches.Gate) -> dict[str, Any]:
    return {"mode": g.mode, "effective": switches.effective_gate(home), "readable": g.readable, "updated_at": g.at,
            "updated_by": g.by, "reason": g.reason, "window_id": g.window_id}


def health(home: Home) -> tuple[bool, dict[str, Any]]:
    """(healthy, answer): the home's folders readable, every switch and real-path state file readable, the event
    log intact."""
    snap = status.cached_snapshot(home)
    folders = all(p.is_dir() and os.access(p, os.R_OK | os.X_OK) for p in (home.root, home.state, home.reports))
    checks = {
        "home_readable": folders,
        "switches_readable": all(snap[k]["readable"] for k in ("emergency_stop", "gate", "sender")),
        "real_path_state_readable": not any(isinstance(snap[k], dict) and "error" in snap[k]
                                            for k in ("window", "approval")),
        "event_log_ok": snap["event_log"]["ok"],
    }
    last = snap["last_cycle"] or {}
    return all(checks.values()), {
        "ok": all(checks.values()), "checks": checks, "version": snap["version"], "home": snap["home"],
        "emergency_stop": snap["emergency_stop"]["enabled"], "effective_gate": snap["gate"]["effective"],
        "last_cycle": {k: last.get(k) for k in ("run_id", "result", "reason", "finished_at", "error")},
        "store_last_day": snap["store"]["last_day"], "queue": snap["queue"]}


def router(home: Home) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["ops"])

    last: dict[str, Any] = {"snap": None, "body": b""}

    @r.get("/status")
    async def get_status() -> Response:
        # polled: on the event loop (no thread hop; a cache hit is a few stat calls), and the same snapshot is
        # encoded once
        snap = status.cached_snapshot(home)
        if snap is not last["snap"]:
            last.update(snap=snap, body=encode(snap))
        return Response(last["body"], media_type="application/json")

    @r.get("/ops/health")
    def get_health() -> JSONResponse:
        ok, body = health(home)
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @r.get("/emergency_stop")
    def get_estop() -> dict:
        return switch_view(switches.emergency_stop(home))

    @r.post("/emergency_stop")
    def post_estop(body: SwitchBody, authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, f"ops estop {'on' if body.enabled else 'off'}")
        return switch_view(switches.set_emergency_stop(home, body.enabled, body.reason, operator=who))

    @r.get("/execution_gate")
    def get_gate() -> dict:
        return gate_view(home, switches.gate_state(home))

    @r.post("/execution_gate")
    def post_gate(body: GateBody, authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, f"ops gate {body.mode}")
        return gate_view(home, switches.set_gate(home, body.mode, body.reason, operator=who))

    @r.get("/real_sender_enable")
    def get_sender() -> dict:
        return switch_view(switches.sender(home))

    @r.post("/real_sender_enable")
    def post_sender(body: SenderBody, authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, f"ops sender {'on' if body.enabled else 'off'}")
        channel = body.channel.upper() if body.channel else None
        return switch_view(switches.set_sender(home, body.enabled, body.reason, operator=who, channel=channel))

    @r.post("/real_enable_window/request")
    def post_window(body: WindowBody, authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, "ops window request")
        return window.request(home, body.duration_minutes, body.reason, who)

    @r.get("/real_enable_window/latest")
    def get_window() -> dict:
        view = window.status(home)
        if view is None:
            raise OpsError("NO_WINDOW", "no real-enable window was requested yet", FAILED)
        return view

    @r.get("/approvals/real_enable/latest")
    def get_approval() -> dict:
        view = window.approval_status(home)
        if view is None:
            raise OpsError("NO_APPROVAL", "no approval was requested yet", FAILED)
        return view

    @r.post("/approvals/real_enable/{approval_id}/approve")
    def post_approve(approval_id: str, body: KeyBody, authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, "ops approve")
        return window.approve(home, approval_id, str(body.key), who)

    @r.get("/secrets/self_test")
    def get_self_test() -> dict:
        from nas import selftest

        reqs = selftest.requirements(home)
        return {"complete": not selftest.missing(reqs), "missing": [x.channel for x in selftest.missing(reqs)],
                "requirements": [x.to_dict() for x in reqs]}

    @r.get("/events")
    def get_events(correlation_id: str | None = None, limit: int = Query(default=100, ge=1, le=MAX_EVENTS)) -> dict:
        rows = events.read(home)
        if correlation_id is not None:
            rows = [e for e in rows if e.get("correlation_id") == correlation_id]
        return {"rows": rows[-limit:]}

    @r.get("/events/verify")
    def get_verify() -> dict:
        ok, line, message = events.verify(home)
        return {"ok": ok, "first_bad_line": line, "message": message}

    return r
