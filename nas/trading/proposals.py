"""Proposals: the day's decision as order intents (DESIGN section 11).

The decision is the scan's (nas.scan): each row whose `order` (signed shares to trade at the next open) is at least
one whole share becomes a proposal: ticker, side, whole-share quantity, a limit price from the last close within the
configured band, and the decision's reason. The Phase 0 limits (markets allowed, maximum order value, orders per
day) refuse a proposal outside them, with the reason; refused proposals are stored too, so the day's decision is
complete in the database. The decision is first saved as a market snapshot (`market_snapshot/1`), which is also what
`--snapshot FILE` reads for runs without a store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

from common import events, formats, strategy
from common.errors import FAILED, REFUSED, OpsError
from common.home import Home
from common.log import now as clock_now
from nas.trading import db, ledger

SNAPSHOT_SCHEMA = formats.MARKET_SNAPSHOT
ROW_FIELDS = {"ticker": str, "name": str, "market": str, "close": (int, float), "order": (int, float, type(None)),
              "state": str, "reason": str}


def snapshot_from_scan(home: Home, day: dt.date | None) -> dict:
    """The scan's decision for `day` against the model portfolio, with each row's market (the limits need it)."""
    from common.store import EodStore
    from nas import scan

    try:
        result, _state, _before = scan.scan(home, day)
    except scan.ScanError as exc:
        raise OpsError("SCAN_FAILED", str(exc), FAILED) from None
    markets = EodStore.for_home(home).tickers()["market"].to_dict()
    rows = [{"ticker": r["ticker"], "name": r["name"], "market": str(markets.get(r["ticker"], "")),
             "close": r["close"], "shares": r["shares"], "order": r["order"], "state": r["state"],
             "reason": r["reason"]}
            for r in result["rows"] if r["close"] is not None]
    return {"schema": SNAPSHOT_SCHEMA, "asof": result["asof"], "strategy": result["strategy"],
            "correlation_id": result["correlation_id"], "source": "scan", "rows": rows}


def read_snapshot(path: str | Path) -> dict:
    """A market snapshot JSON file, checked field by field (names the file, the field and what was expected)."""
    path = Path(path)

    def bad(field: str, expected: str) -> OpsError:
        return OpsError("BAD_SNAPSHOT", f"{path}: {field}: expected {expected}", FAILED)

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OpsError("BAD_SNAPSHOT", f"{path}: cannot read ({exc.strerror})", FAILED) from None
    except ValueError:
        raise bad("<file>", "valid JSON") from None
    if not isinstance(data, dict) or data.get("schema") != SNAPSHOT_SCHEMA:
        raise bad("schema", repr(SNAPSHOT_SCHEMA))
    try:
        dt.date.fromisoformat(str(data.get("asof")))
    except ValueError:
        raise bad("asof", "a date YYYY-MM-DD") from None
    if not isinstance(data.get("rows"), list):
        raise bad("rows", "a list")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise bad(f"rows[{i}]", "an object")
        for field, kind in ROW_FIELDS.items():
            if not isinstance(row.get(field), kind) or isinstance(row.get(field), bool):
                raise bad(f"rows[{i}].{field}", f"a {kind.__name__ if isinstance(kind, type) else 'number'}")
        if not (math.isfinite(row["close"]) and row["close"] > 0):
            raise bad(f"rows[{i}].close", "a positive price")
        if not isinstance(row.get("shares", 0), (int, float)) or row.get("shares", 0) < 0:
            raise bad(f"rows[{i}].shares", "a number of shares held, at least 0 (optional)")
    data.setdefault("strategy", strategy.NAME)
    data.setdefault("correlation_id", events.correlation_id(data["asof"], data["strategy"]))
    return data


def intents(snapshot: dict, limits: dict) -> list[dict]:
    """The snapshot's orders as intents with the Phase 0 limits applied: sells first (they free the cash buys
    need), then buys, each larger order first; `refusal_reason` is None for an intent within the limits."""
    band = limits["limit_band_pct"] / 100
    out = []
    for row in snapshot["rows"]:
        order = row.get("order") or 0
        quantity = int(abs(order))  # whole shares; a fraction is never proposed
        if quantity < 1:
            continue
        side = "BUY" if order > 0 else "SELL"
        # a buy may pay up to the band above the last close, a sell accept down to the band below it
        limit = math.ceil(row["close"] * (1 + band)) if side == "BUY" else math.floor(row["close"] * (1 - band))
        out.append({"ticker": row["ticker"], "name": row["name"], "market": row["market"], "side": side,
                    "quantity": quantity, "limit_price": max(limit, 1),
                    "reason": f"{row['state']}: {row['reason']}", "refusal_reason": None})
    out.sort(key=lambda i: (i["side"] != "SELL", -i["quantity"] * i["limit_price"], i["ticker"]))
    accepted = 0
    for intent in out:
        value = intent["quantity"] * intent["limit_price"]
        if intent["market"] not in limits["markets"]:
            intent["refusal_reason"] = (f"market {intent['market'] or 'unknown'} is not allowed (limits.markets: "
                                        f"{', '.join(limits['markets'])})")
        elif value > limits["max_order_value"]:
            intent["refusal_reason"] = (f"order value {value:,} KRW is above limits.max_order_value "
                                        f"{limits['max_order_value']:,}")
        elif accepted >= limits["max_orders_per_day"]:
            intent["refusal_reason"] = f"more than limits.max_orders_per_day ({limits['max_orders_per_day']}) orders"
        else:
            accepted += 1
    return out


def propose(home: Home, conn: sqlite3.Connection, snapshot: dict, cfg: dict) -> list[dict]:
    """Store the snapshot and its proposals (pending, or refused with the reason) and log each; refuses a day that
    has proposals already (PROPOSALS_EXIST), so running it twice never doubles an order."""
    planned = intents(snapshot, cfg["limits"])
    prov = db.provenance(cfg)
    at = clock_now().isoformat(timespec="seconds")
    payload = json.dumps(snapshot, sort_keys=True, ensure_ascii=False)
    with db.deciding(conn):
        have = conn.execute("SELECT COUNT(*) FROM proposals WHERE asof = ?", (snapshot["asof"],)).fetchone()[0]
        if have:
            raise OpsError("PROPOSALS_EXIST", f"{snapshot['asof']} has {have} proposals already (see `krx trade "
                           "list`); a day is proposed once", REFUSED)
        snap_id = db.insert(conn, "snapshots", {
            "asof": snapshot["asof"], "correlation_id": snapshot["correlation_id"], "source": snapshot.get(
                "source", "file"), "payload": payload, "sha256": hashlib.sha256(payload.encode()).hexdigest(),
            "created_at": at, **prov})
        for intent in planned:
            intent["id"] = db.insert(conn, "proposals", {
                "snapshot_id": snap_id, "asof": snapshot["asof"],
                "correlation_id": f"{snapshot['correlation_id']}-{intent['ticker']}",
                **{k: intent[k] for k in ("ticker", "name", "market", "side", "quantity", "limit_price", "reason",
                                          "refusal_reason")},
                "status": "refused" if intent["refusal_reason"] else "pending", "created_at": at, **prov})
    # logged after the commit: the chain and event_log never hold an event for a decision that was rolled back
    created = [get(conn, i["id"]) for i in planned]
    for p in created:
        ledger.record(home, conn, "proposal_refused" if p["status"] == "refused" else "proposal_created",
                      correlation_id=p["correlation_id"], proposal_id=p["id"], ticker=p["ticker"], side=p["side"],
                      quantity=p["quantity"], limit_price=p["limit_price"], reason=p["reason"],
                      refusal_reason=p["refusal_reason"], snapshot_id=snap_id)
    return created


def get(conn: sqlite3.Connection, proposal_id: int) -> dict:
    row = conn.execute("SELECT * FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
    if row is None:
        raise OpsError("UNKNOWN_PROPOSAL", f"no proposal {proposal_id}", REFUSED)
    return dict(row)


def listing(conn: sqlite3.Connection, *, asof: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    sql, args = "SELECT * FROM proposals WHERE 1=1", []
    if asof:
        sql, args = sql + " AND asof = ?", [*args, asof]
    if status:
        sql, args = sql + " AND status = ?", [*args, status]
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", args)]
