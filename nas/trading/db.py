"""The trading database: state/trading.sqlite3 on the NAS's own disk (DESIGN section 11; never on a share: SQLite's
locks do not hold over SMB/NFS, which is why the PC never opens it).

WAL, a busy timeout, `BEGIN IMMEDIATE` for every write that decides something (`deciding`), a `schema_version` table
and numbered migrations. Append-only tables (snapshots, system_state, fills, event_log) are enforced by the
database itself: triggers abort UPDATE and DELETE, and a BEFORE INSERT guard aborts an insert whose key exists,
which is what `INSERT OR REPLACE` and an upsert do (REPLACE deletes the old row without firing delete triggers
unless recursive triggers are on; they are on too). The tables whose rows move through states (proposals,
approvals, orders) allow only their legal transitions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import config
from common.errors import FAILED, OpsError
from common.home import Home

FILE = "trading.sqlite3"
REPO = Path(__file__).resolve().parents[2]
APPEND_ONLY = {"snapshots": "id", "system_state": "id", "fills": "id", "event_log": "seq"}


def _append_only(table: str, key: str) -> list[str]:
    return [
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
            BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
            BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END""",
        f"""CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table}
            WHEN NEW.{key} IS NOT NULL AND EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key})
            BEGIN SELECT RAISE(ABORT, '{table} is append-only: INSERT OR REPLACE / upsert refused'); END""",
    ]


PROVENANCE = "git_commit_sha TEXT NOT NULL, schema_version INTEGER NOT NULL, config_hash TEXT NOT NULL"

# Each migration is a list of statements run in one BEGIN IMMEDIATE transaction with its schema_version row.
MIGRATIONS: list[list[str]] = [
    [
        f"""CREATE TABLE snapshots (id INTEGER PRIMARY KEY, asof TEXT NOT NULL, correlation_id TEXT NOT NULL,
            source TEXT NOT NULL, payload TEXT NOT NULL, sha256 TEXT NOT NULL, created_at TEXT NOT NULL,
            {PROVENANCE})""",
        f"""CREATE TABLE proposals (id INTEGER PRIMARY KEY, snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
            asof TEXT NOT NULL, correlation_id TEXT NOT NULL UNIQUE, ticker TEXT NOT NULL, name TEXT NOT NULL,
            market TEXT NOT NULL, side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
            quantity INTEGER NOT NULL CHECK (quantity > 0), limit_price INTEGER NOT NULL CHECK (limit_price > 0),
            reason TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'refused', 'approved', 'rejected', 'executed',
                                                   'failed')),
            refusal_reason TEXT, created_at TEXT NOT NULL, {PROVENANCE})""",
        """CREATE TRIGGER proposals_transition BEFORE UPDATE ON proposals
            WHEN NOT (NEW.id = OLD.id AND NEW.correlation_id = OLD.correlation_id AND NEW.ticker = OLD.ticker
                      AND NEW.side = OLD.side AND NEW.quantity = OLD.quantity AND NEW.limit_price = OLD.limit_price
                      AND ((OLD.status = 'pending' AND NEW.status IN ('approved', 'rejected'))
                           OR (OLD.status = 'approved' AND NEW.status IN ('executed', 'failed'))))
            BEGIN SELECT RAISE(ABORT, 'proposals: only pending -> approved|rejected -> executed|failed'); END""",
        "CREATE TRIGGER proposals_no_delete BEFORE DELETE ON proposals "
        "BEGIN SELECT RAISE(ABORT, 'proposals are never deleted'); END",
        f"""CREATE TABLE approvals (id INTEGER PRIMARY KEY, proposal_id INTEGER NOT NULL UNIQUE
            REFERENCES proposals(id), decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
            decided_by TEXT NOT NULL, rejection_reason TEXT, token_hash TEXT, token_jti TEXT,
            token_expires_at TEXT, token_used_at TEXT, created_at TEXT NOT NULL, {PROVENANCE})""",
        """CREATE TRIGGER approvals_token_once BEFORE UPDATE ON approvals
            WHEN NOT (OLD.token_used_at IS NULL AND NEW.token_used_at IS NOT NULL AND NEW.id = OLD.id
                      AND NEW.proposal_id = OLD.proposal_id AND NEW.decision = OLD.decision
                      AND NEW.token_hash IS OLD.token_hash AND NEW.token_expires_at IS OLD.token_expires_at)
            BEGIN SELECT RAISE(ABORT, 'approvals: only token_used_at may be set, once'); END""",
        "CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals "
        "BEGIN SELECT RAISE(ABORT, 'approvals are never deleted'); END",
        f"""CREATE TABLE orders (id INTEGER PRIMARY KEY, proposal_id INTEGER NOT NULL REFERENCES proposals(id),
            approval_id INTEGER NOT NULL UNIQUE REFERENCES approvals(id), ticker TEXT NOT NULL, side TEXT NOT NULL,
            quantity INTEGER NOT NULL, limit_price INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('PLACED', 'FAILED')), broker_order_no TEXT, broker_message TEXT,
            created_at TEXT NOT NULL, {PROVENANCE})""",
        "CREATE TRIGGER orders_no_update BEFORE UPDATE ON orders "
        "BEGIN SELECT RAISE(ABORT, 'orders are recorded once'); END",
        "CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders "
        "BEGIN SELECT RAISE(ABORT, 'orders are never deleted'); END",
        f"""CREATE TABLE fills (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
            ticker TEXT NOT NULL, side TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL NOT NULL,
            broker_order_no TEXT NOT NULL, filled_at TEXT NOT NULL, {PROVENANCE})""",
        f"""CREATE TABLE system_state (id INTEGER PRIMARY KEY,
            kill_switch TEXT NOT NULL CHECK (kill_switch IN ('ACTIVE', 'INACTIVE')), reason TEXT NOT NULL,
            set_by TEXT NOT NULL, created_at TEXT NOT NULL, {PROVENANCE})""",
        """CREATE TABLE event_log (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, event TEXT NOT NULL,
            correlation_id TEXT, by_who TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, record TEXT NOT NULL)""",
        "CREATE INDEX event_log_correlation ON event_log(correlation_id)",
        *[stmt for table, key in APPEND_ONLY.items() for stmt in _append_only(table, key)],
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def path(home: Home) -> Path:
    return home.state / FILE


def connect(home: Home) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys and recursive triggers on."""
    home.state.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path(home), isolation_level=None, timeout=30, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA recursive_triggers=ON")  # REPLACE's implicit delete then fires the delete guard too
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        raise OpsError("DB_UNREADABLE", f"{path(home)}: cannot open the trading database ({exc})", FAILED) from None
    return conn


@contextlib.contextmanager
def deciding(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write that decides something: BEGIN IMMEDIATE takes the write lock before the first read, so two deciders
    never both read the same "before"."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def version(conn: sqlite3.Connection) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if not exists:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def init_db(home: Home) -> tuple[int, int]:
    """Apply the migrations not applied yet; (version before, version after). Idempotent and safe to race."""
    conn = connect(home)
    try:
        with deciding(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at TEXT NOT NULL, git_commit_sha TEXT NOT NULL)")
            before = version(conn)
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number <= before:
                    continue
                for stmt in statements:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version VALUES (?, datetime('now'), ?)", (number, git_sha()))
        return before, version(conn)
    finally:
        conn.close()


def open_db(home: Home) -> sqlite3.Connection:
    """A connection to a database at the current schema version; refuses (exit 3) one that is not initialized."""
    if not path(home).exists():
        raise OpsError("DB_MISSING", f"{path(home)} does not exist: run `krx trade init-db` first", FAILED)
    conn = connect(home)
    have = version(conn)
    if have != SCHEMA_VERSION:
        conn.close()
        raise OpsError("DB_VERSION", f"{path(home)}: schema version {have}, this code needs {SCHEMA_VERSION}: run "
                       "`krx trade init-db`", FAILED)
    return conn


@functools.cache
def git_sha() -> str:
    """The code's commit, recorded on every deciding row ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of the trading config as loaded (names of secrets, never their values)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def provenance(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"git_commit_sha": git_sha(), "schema_version": SCHEMA_VERSION, "config_hash": config_hash(cfg)}


def insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    """INSERT one row (column names are ours, values bound); returns its rowid."""
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    return int(conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values())).lastrowid)


def load_config(home: Home) -> dict[str, Any]:
    return config.load("trading", home)
