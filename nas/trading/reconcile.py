"""Reconcile: the model portfolio against the broker's positions and our recorded fills (`krx trade reconcile`).

Per ticker: the model's shares and its target once the day's orders fill (the newest proposed decision's snapshot:
the model portfolio as the scan saw it), the broker's shares
(inquire-balance) and the net shares of our recorded fills. A difference gets a reason: the proposal that would
have closed it was refused, rejected, failed or is still waiting; or the broker holds what we have no fill for.
Written to reports/phase_c/latest/recon_summary.json (the git sync carries it back like results).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from common import atomic, formats
from common.home import Home
from common.log import now as clock_now
from nas.trading import broker as broker_mod

SCHEMA = formats.RECON_SUMMARY


def summary_path(home: Home) -> Path:
    return home.reports / "phase_c" / "latest" / "recon_summary.json"


def _model(conn: sqlite3.Connection) -> tuple[str | None, dict[str, float], dict[str, float]]:
    """(asof, shares held, target shares) of the model portfolio as of the newest decision proposed: the snapshot
    rows carry the model's holdings and the day's orders (the target is what the portfolio holds once they fill)."""
    row = conn.execute("SELECT payload FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None, {}, {}
    snap = json.loads(row["payload"])
    held = {r["ticker"]: float(r.get("shares") or 0) for r in snap["rows"]}
    target = {r["ticker"]: held[r["ticker"]] + float(r.get("order") or 0) for r in snap["rows"]}
    return snap["asof"], {k: v for k, v in held.items() if v}, {k: v for k, v in target.items() if v}


def _reason(model: float, target: float, broker: int, filled: int, status: str | None) -> str:
    if int(target) == broker:
        return "matches the model's target" if int(model) != broker else "matches the model"
    if status in ("refused", "rejected", "failed", "pending", "approved"):
        return f"the proposal for it is {status}"
    if status == "executed":
        return "ordered, but the broker's position differs from the model's target (unfilled or partly filled)"
    if broker != filled:
        return "the broker holds shares we have no fill for (bought before Phase 0 or outside this system)"
    return "no proposal covers it"


def run(home: Home, conn: sqlite3.Connection, client: broker_mod.BrokerClient) -> tuple[Path, dict]:
    asof, held, target = _model(conn)
    positions = client.balance()
    fills: dict[str, int] = {}
    for r in conn.execute("SELECT ticker, side, SUM(quantity) AS q FROM fills GROUP BY ticker, side"):
        fills[r["ticker"]] = fills.get(r["ticker"], 0) + (r["q"] if r["side"] == "BUY" else -r["q"])
    status = {r["ticker"]: r["status"] for r in conn.execute(
        "SELECT ticker, status FROM proposals WHERE asof = (SELECT MAX(asof) FROM proposals) ORDER BY id")}
    rows = []
    for ticker in sorted(set(held) | set(target) | set(positions) | set(fills)):
        model, goal, have = held.get(ticker, 0.0), target.get(ticker, 0.0), positions.get(ticker, 0)
        row = {"ticker": ticker, "model_shares": model, "model_target_shares": goal, "broker_shares": have,
               "filled_shares": fills.get(ticker, 0), "proposal_status": status.get(ticker),
               "difference": have - int(goal)}
        row["reason"] = _reason(model, goal, have, fills.get(ticker, 0), status.get(ticker))
        rows.append(row)
    summary = {"schema": SCHEMA, "generated_at": clock_now().isoformat(timespec="seconds"), "model_asof": asof,
               "differences": sum(1 for r in rows if r["difference"]), "tickers": rows}
    path = summary_path(home)
    atomic.write_json(path, summary)
    return path, summary
