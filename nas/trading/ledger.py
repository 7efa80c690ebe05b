"""The trade flow's events: one log, the JSONL chain (docs/trading.md "One event log").

state/events.jsonl (common.events) is the one tamper-evident log: both machines can append to it (the PC over a
share, where SQLite must never be used), and its hash chain and head record prove nothing was edited, removed or
reordered. On the NAS every trade event is appended through `common.events.append` and, in the same call, the
record as written (seq, hash and all) is mirrored into the database's append-only `event_log` table, so the
runbook's `SELECT * FROM event_log WHERE correlation_id = ?` works. `verify` proves the table equals the chain's
trade events: same seq, same hash, same record, none missing on either side.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from common import events
from common.home import Home

TRADE_EVENTS = frozenset({
    "proposal_created", "proposal_refused", "approval_granted", "approval_rejected", "token_issued",
    "order_refused", "order_placed", "order_failed", "fill_recorded", "kill_switch_activated",
    "kill_switch_deactivated",
})


def record(home: Home, conn: sqlite3.Connection, event: str, *, correlation_id: str | None = None,
           **fields: Any) -> dict:
    """Append a trade event to the chain and mirror it into `event_log`; returns the record as written."""
    if event not in TRADE_EVENTS:
        raise ValueError(f"{event!r} is not a trade event (one of {', '.join(sorted(TRADE_EVENTS))})")
    rec = events.append(home, event, correlation_id=correlation_id, **fields)
    conn.execute("INSERT INTO event_log (seq, ts, event, correlation_id, by_who, hash, record) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (rec["seq"], rec["ts"], rec["event"], rec["correlation_id"], rec["by"], rec["hash"],
                  events.canonical(rec).decode("utf-8")))
    return rec


def by_correlation(conn: sqlite3.Connection, correlation_id: str) -> list[dict]:
    rows = conn.execute("SELECT record FROM event_log WHERE correlation_id = ? ORDER BY seq", (correlation_id,))
    return [json.loads(r["record"]) for r in rows]


def verify(home: Home, conn: sqlite3.Connection) -> tuple[bool, list[str]]:
    """(ok, problems): the chain is intact and `event_log` holds exactly its trade events, byte for byte."""
    problems: list[str] = []
    ok, _line, message = events.verify(home)
    if not ok:
        problems.append(f"event chain: {message}")
    chain = {rec["seq"]: rec for rec in events.read(home) if rec.get("event") in TRADE_EVENTS}
    table = {int(r["seq"]): r for r in conn.execute("SELECT seq, hash, record FROM event_log")}
    for seq in sorted(set(chain) - set(table)):
        problems.append(f"seq {seq} ({chain[seq]['event']}): in the chain, missing from event_log")
    for seq in sorted(set(table) - set(chain)):
        problems.append(f"seq {seq}: in event_log, not a trade event of the chain")
    for seq in sorted(set(chain) & set(table)):
        row = table[seq]
        if row["hash"] != chain[seq].get("hash") or row["record"] != events.canonical(chain[seq]).decode("utf-8"):
            problems.append(f"seq {seq} ({chain[seq]['event']}): event_log differs from the chain")
    return not problems, problems
