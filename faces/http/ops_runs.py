"""The ops API's runs (in `krx serve`): the daily cycle, the risk summary, the live fire and its postmortem, the live
cycle. Each POST calls the core function its `krx ops` command calls; a POST that runs the day needs `?confirm=true`
(else 400 and nothing ran).

  POST /api/ops/cycle/run?confirm=true           krx ops cycle         -> the receipt, with exit_code
  GET  /api/ops/daily                            the latest cycle receipt (404 NO_RECEIPT before the first)
  GET  /api/ops/scheduler/latest                 {rows: [{run_id, result, reason, observed_modes, live_fire_step,
                                                  snapshot_ref, ...}]}
  POST /api/ops/summary/regenerate?confirm=true  krx ops summary       -> {rows: [summary], ref}
  GET  /api/ops/summary/latest                   {rows: [{overall_status, top_risks, ...}]} (the written summary)
  POST /api/ops/push/live_fire/run               krx ops live-fire run -> the receipt (result, exit_code)
  GET  /api/ops/push/live_fire/latest            {rows: [receipt]}
  POST /api/ops/push/postmortem/regenerate       krx ops postmortem regenerate -> {rows: [postmortem], ref}
  GET  /api/ops/push/postmortem/latest           krx ops postmortem latest --json -> {rows: [postmortem], ref}
  POST /api/live/cycle/run?confirm=true          krx ops live-cycle    -> the receipt
  GET  /api/live/cycle/latest                    {rows: [{result, decision, snapshot_ref, push: {delivery_actual}}]}

A run that a safety check blocked is still a 200: the answer's `result` (and `exit_code`, as the CLI's) says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header
from fastapi.responses import Response

from common import safeio
from common.errors import FAILED, OpsError
from common.home import Home
from faces import KRX
from faces.http.ops_api import acting, encode, require_confirm
from nas import cycle, live_cycle, live_fire, postmortem, summary

SCHEDULER_KEYS = ("run_id", "started_at", "finished_at", "result", "reason", "date", "correlation_id",
                  "observed_modes", "live_fire_step", "warnings")


def _ref(home: Home, path: Path) -> str:
    return str(path.relative_to(home.root))


def read_json(home: Home, path: Path, missing: str | None) -> Any:
    """A written answer (receipt, summary); OpsError `missing` (404) when absent, or None when `missing` is None;
    STATE_UNREADABLE (503) when damaged."""
    try:
        data = safeio.read_json(path)
    except FileNotFoundError:
        if missing is None:
            return None
        raise OpsError(missing, f"{_ref(home, path)} does not exist yet", FAILED) from None
    except (OSError, ValueError) as exc:
        raise OpsError("STATE_UNREADABLE", f"{_ref(home, path)} unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise OpsError("STATE_UNREADABLE", f"{_ref(home, path)}: expected a JSON object")
    return data


def router(home: Home) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["ops runs"])

    @r.post("/ops/cycle/run")
    def post_cycle(confirm: bool = False, authorization: str = Header(default="")) -> dict:
        acting(home, authorization, "ops cycle")
        require_confirm(confirm, "the daily cycle")
        rc, receipt = cycle.run_exclusive(home, command=KRX)
        return {**receipt, "exit_code": rc, "snapshot_ref": receipt.get("snapshot")}

    @r.get("/ops/daily")
    def get_daily() -> dict:
        receipt = read_json(home, cycle.latest_receipt_path(home), "NO_RECEIPT")
        return {**receipt, "snapshot_ref": receipt.get("snapshot")}

    @r.get("/ops/scheduler/latest")
    def get_scheduler() -> dict:
        receipt = read_json(home, cycle.latest_receipt_path(home), None)
        if receipt is None:
            return {"rows": []}
        return {"rows": [{**{k: receipt.get(k) for k in SCHEDULER_KEYS}, "snapshot_ref": receipt.get("snapshot")}]}

    @r.post("/ops/summary/regenerate")
    def post_summary(confirm: bool = False, authorization: str = Header(default="")) -> dict:
        acting(home, authorization, "ops summary")
        require_confirm(confirm, "the summary regeneration")
        data, path = summary.regenerate(home)
        return {"rows": [data], "ref": _ref(home, path)}

    last: dict[str, Any] = {"version": None, "body": b""}

    @r.get("/ops/summary/latest")
    async def get_summary() -> Response:
        # polled: on the event loop (no thread hop), read and encoded again only when the file was replaced
        path = summary.summary_path(home)
        try:
            st = os.stat(path)
            version: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            version = None
        if version is None or version != last["version"]:
            data = read_json(home, path, None)
            last.update(version=version, body=encode({"rows": [data] if data else [],
                                                      "ref": _ref(home, path) if data else None}))
        return Response(last["body"], media_type="application/json")

    @r.post("/ops/push/live_fire/run")
    def post_live_fire(authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, "ops live-fire run")
        return live_fire.run(home, operator=who, trigger="api")

    @r.get("/ops/push/live_fire/latest")
    def get_live_fire() -> dict:
        receipt = live_fire.latest(home)
        return {"rows": [receipt] if receipt else []}

    @r.post("/ops/push/postmortem/regenerate")
    def post_postmortem(authorization: str = Header(default="")) -> dict:
        acting(home, authorization, "ops postmortem regenerate")
        data, md = postmortem.regenerate(home)
        return {"rows": [data], "ref": _ref(home, md)}

    @r.get("/ops/push/postmortem/latest")
    def get_postmortem() -> dict:
        data, _text = postmortem.latest(home)
        return {"rows": [data], "ref": _ref(home, postmortem.postmortem_dir(home) / "postmortem_latest.md")}

    @r.post("/live/cycle/run")
    def post_live_cycle(confirm: bool = False, authorization: str = Header(default="")) -> dict:
        who = acting(home, authorization, "ops live-cycle")
        require_confirm(confirm, "the live cycle")
        return live_cycle.run(home, command=KRX, operator=who)

    @r.get("/live/cycle/latest")
    def get_live_cycle() -> dict:
        receipt = live_cycle.latest(home)
        return {"rows": [receipt] if receipt else []}

    return r
