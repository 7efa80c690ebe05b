"""The one artifact reader of `krx serve`, and the backtests.

  GET /api/ops/resolve?ref=REF           the artifact a `*_ref` / `snapshot` / `ref` of another answer names
  GET /api/backtests                     {rows: [{id, result_ref, report_ref}]} newest first
  GET /api/backtests/{id}                {id, result, result_ref, report_ref}
  GET /api/backtests/{id}/report.html    the report

A ref is a home-relative path of one of the artifact kinds in KINDS (a cycle receipt or its snapshot, a preflight
ticket, the summary, a live fire receipt, a postmortem, a live cycle receipt, a signals file, an alert outbox, a
backtest's result files). Anything else is UNKNOWN_REF (404), and so is an absolute path, a `..`, a hidden name, a
symbolic link anywhere on the way (it could lead out of the home) and a file that is not regular. Reads are bounded
(common.safeio). A report is served with a sandboxing Content-Security-Policy: its scripts never run as this origin.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from common import queue, safeio
from common.errors import FAILED, OpsError
from common.home import Home
from nas import status

MAX_ARTIFACT_BYTES = 64 << 20
_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
KINDS = {
    "cycle receipt": r"reports/ops/daily/ops_report_latest\.json|reports/ops/daily/snapshots/ops_run_[0-9_-]+\.json",
    "preflight ticket": r"reports/tickets/preflight/[0-9_-]+\.json",
    "summary": r"reports/ops/summary/ops_summary_latest\.json",
    "live fire": r"reports/ops/push/live_fire/(live_fire_latest|snapshots/live_fire_[0-9A-Za-z_-]+)\.json",
    "postmortem": r"reports/ops/push/postmortem/postmortem_latest\.(json|md)",
    "live cycle": r"reports/ops/live/(live_cycle_latest|snapshots/live_cycle_[0-9_-]+)\.json",
    "signals": r"reports/signals/signals_[0-9]{8}\.json",
    "alert outbox": r"reports/outbox/[0-9]{8}\.json",
    "backtest result": rf"reports/done/{_ID}/(result\.json|report\.html|equity\.csv|trades\.csv)",
}
_KIND_RE = re.compile("|".join(f"(?:{p})" for p in KINDS.values()))
MEDIA = {".json": "application/json", ".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8",
         ".csv": "text/csv; charset=utf-8"}
REPORT_HEADERS = {"Content-Security-Policy": "sandbox allow-scripts; default-src 'none'; img-src data:; "
                  "style-src 'unsafe-inline'; script-src 'unsafe-inline'", "X-Content-Type-Options": "nosniff"}


def _unknown(ref: str) -> OpsError:
    shown = ref if len(ref) <= 200 else ref[:200] + "..."
    return OpsError("UNKNOWN_REF", f"ref {shown!r}: not an artifact of this home (expected a home-relative path of "
                    f"one of: {', '.join(KINDS)})", FAILED)


def resolve(home: Home, ref: str) -> Path:
    """The artifact file `ref` names; OpsError UNKNOWN_REF for anything else (see the module docstring)."""
    if "\\" in ref or "\x00" in ref or not _KIND_RE.fullmatch(ref):
        raise _unknown(ref)
    parts = ref.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise _unknown(ref)
    path = home.root
    for part in parts:  # no link anywhere on the way, and a regular file at the end
        path = path / part
        try:
            st = os.lstat(path)
        except OSError:
            raise _unknown(ref) from None
        if stat.S_ISLNK(st.st_mode):
            raise _unknown(ref)
    if not stat.S_ISREG(st.st_mode):
        raise _unknown(ref)
    return path


def _file(home: Home, ref: str) -> Response:
    path = resolve(home, ref)
    try:
        data = safeio.read_bytes(path, MAX_ARTIFACT_BYTES)
    except (OSError, ValueError):
        raise _unknown(ref) from None
    headers = REPORT_HEADERS if path.suffix == ".html" else {"X-Content-Type-Options": "nosniff"}
    return Response(content=data, media_type=MEDIA.get(path.suffix, "application/octet-stream"), headers=headers)


def _backtest(home: Home, backtest_id: str) -> dict:
    if not queue.is_valid_id(backtest_id):
        raise OpsError("UNKNOWN_BACKTEST", f"backtest {backtest_id[:80]!r}: not a request id", FAILED)
    folder = home.queue("done") / backtest_id
    if folder.is_symlink() or not folder.is_dir():
        raise OpsError("UNKNOWN_BACKTEST", f"no result for backtest {backtest_id!r} in reports/done", FAILED)
    refs = {name: f"reports/done/{backtest_id}/{file}" for name, file in (("result_ref", "result.json"),
                                                                           ("report_ref", "report.html"))}
    return {k: v if (home.root / v).is_file() else None for k, v in refs.items()}


def router(home: Home) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["artifacts"])

    @r.get("/ops/resolve")
    def get_resolve(ref: str) -> Response:
        return _file(home, ref)

    @r.get("/backtests")
    def get_backtests(limit: int = 50) -> dict:
        return {"rows": status.recent_backtests(home, max(1, min(limit, 500)))}

    @r.get("/backtests/{backtest_id}")
    def get_backtest(backtest_id: str) -> dict:
        refs = _backtest(home, backtest_id)
        result = None
        if refs["result_ref"]:
            try:
                result = safeio.read_json(resolve(home, refs["result_ref"]))
            except (OSError, ValueError):
                result = None
        return {"id": backtest_id, "result": result, **refs}

    @r.get("/backtests/{backtest_id}/report.html")
    def get_report(backtest_id: str) -> Response:
        refs = _backtest(home, backtest_id)
        if not refs["report_ref"]:
            raise OpsError("UNKNOWN_BACKTEST", f"backtest {backtest_id!r} has no report.html", FAILED)
        return _file(home, refs["report_ref"])

    return r
