"""The trading database: migrations, append-only enforced by SQLite itself, and the one event log (the JSONL chain
mirrored into event_log and checked against it)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import krx

from common import config, events
from common.home import Home
from nas.trading import db, ledger


def test_init_db_is_idempotent_and_versioned(home: Home) -> None:
    first = krx("trade", "init-db", home=home)
    again = krx("trade", "init-db", home=home)
    assert first.returncode == 0 and again.returncode == 0
    assert "Database initialized successfully" in first.stdout and "Database initialized successfully" in again.stdout
    conn = db.connect(home)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [db.SCHEMA_VERSION]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"snapshots", "proposals", "approvals", "orders", "fills", "system_state", "event_log"} <= tables


def test_commands_refuse_a_database_that_is_not_initialized(home: Home) -> None:
    out = krx("trade", "list", home=home)
    assert out.returncode == 3 and "krx trade init-db" in out.stderr


@pytest.fixture
def conn(home: Home) -> sqlite3.Connection:
    db.init_db(home)
    c = db.open_db(home)
    yield c
    c.close()


def test_event_log_is_append_only_in_the_database(home: Home, conn: sqlite3.Connection) -> None:
    rec = ledger.record(home, conn, "kill_switch_activated", operator="alice", reason="test")
    seq = rec["seq"]
    attempts = [
        ("UPDATE event_log SET event = 'forged' WHERE seq = ?", (seq,)),
        ("DELETE FROM event_log WHERE seq = ?", (seq,)),
        ("INSERT OR REPLACE INTO event_log VALUES (?, 'ts', 'forged', NULL, 'x', 'h2', '{}')", (seq,)),
        ("INSERT INTO event_log VALUES (?, 'ts', 'forged', NULL, 'x', 'h3', '{}') "
         "ON CONFLICT(seq) DO UPDATE SET event = 'forged'", (seq,)),
        ("REPLACE INTO event_log VALUES (?, 'ts', 'forged', NULL, 'x', 'h4', '{}')", (seq,)),
    ]
    for sql, params in attempts:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql, params)
    row = conn.execute("SELECT event, hash FROM event_log WHERE seq = ?", (seq,)).fetchone()
    assert tuple(row) == ("kill_switch_activated", rec["hash"])
    assert conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0] == 1


def test_append_only_guard_also_with_recursive_triggers_off(home: Home, conn: sqlite3.Connection) -> None:
    """The BEFORE INSERT guard alone stops REPLACE: it does not depend on the connection's pragmas."""
    conn.execute("PRAGMA recursive_triggers=OFF")
    db.insert(conn, "system_state", {"kill_switch": "INACTIVE", "reason": "r", "set_by": "a", "created_at": "t",
                                     **db.provenance({})})
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("INSERT OR REPLACE INTO system_state (id, kill_switch, reason, set_by, created_at, "
                     "git_commit_sha, schema_version, config_hash) VALUES (1, 'ACTIVE', 'x', 'x', 't', 'g', 1, 'c')")
    assert conn.execute("SELECT kill_switch FROM system_state").fetchall()[0][0] == "INACTIVE"


def test_proposal_status_moves_only_forward(home: Home, conn: sqlite3.Connection) -> None:
    prov = db.provenance({})
    snap = db.insert(conn, "snapshots", {"asof": "2025-11-28", "correlation_id": "c", "source": "file",
                                         "payload": "{}", "sha256": "0", "created_at": "t", **prov})
    pid = db.insert(conn, "proposals", {"snapshot_id": snap, "asof": "2025-11-28", "correlation_id": "c-1",
                                        "ticker": "005930", "name": "n", "market": "KOSPI", "side": "BUY",
                                        "quantity": 1, "limit_price": 100, "reason": "r", "status": "pending",
                                        "created_at": "t", **prov})
    for sql in ("UPDATE proposals SET status = 'executed' WHERE id = ?",
                "UPDATE proposals SET quantity = 2 WHERE id = ?", "DELETE FROM proposals WHERE id = ?"):
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql, (pid,))
    conn.execute("UPDATE proposals SET status = 'approved' WHERE id = ?", (pid,))
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("UPDATE proposals SET status = 'pending' WHERE id = ?", (pid,))


def test_db_log_equals_the_chain_and_a_gap_is_found(home: Home, conn: sqlite3.Connection) -> None:
    events.append(home, "scan_done", correlation_id="20251128-momentum_topN_v1")  # not a trade event: chain only
    ledger.record(home, conn, "proposal_created", correlation_id="cid-1", proposal_id=1)
    ledger.record(home, conn, "approval_granted", correlation_id="cid-1", proposal_id=1, operator="alice")
    ok, problems = ledger.verify(home, conn)
    assert ok and problems == []
    assert [r["event"] for r in ledger.by_correlation(conn, "cid-1")] == ["proposal_created", "approval_granted"]
    rows = conn.execute("SELECT * FROM event_log WHERE correlation_id = ?", ("cid-1",)).fetchall()  # the runbook's
    assert [json.loads(r["record"])["seq"] for r in rows] == [2, 3]
    events.append(home, "order_placed", correlation_id="cid-1")  # written around the mirror: the check sees it
    out = krx("trade", "verify-db-log", home=home)
    assert out.returncode == 3 and "seq 4 (order_placed): in the chain, missing from event_log" in out.stdout


def test_phase0_config_refuses_a_real_broker_and_remote_hosts(home: Home) -> None:
    for var, value in (("KRX__TRADING__BROKER__BASE_URL", "https://openapivts.koreainvestment.com:29443"),
                       ("KRX__TRADING__EXECUTION__HOST", "0.0.0.0"),
                       ("KRX__TRADING__EXECUTION__URL", "http://10.0.0.5:8002")):
        with pytest.raises(config.ConfigError, match="loopback"):
            config.load("trading", home, env={var: value})
    cfg = config.load("trading", home, env={})
    assert (cfg["approval"]["port"], cfg["execution"]["port"], cfg["broker"]["port"]) == (8000, 8002, 29443)
