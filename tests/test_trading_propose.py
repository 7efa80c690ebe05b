"""Proposals from the day's decision with the Phase 0 limits; reject, list and events on the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, krx

from common import operators
from common.home import Home
from nas.trading import db, proposals

SNAPSHOT = REPO / "data" / "sample_snapshot.json"


@pytest.fixture
def snap(home: Home) -> Path:
    db.init_db(home)
    return Path(shutil.copy(SNAPSHOT, home.data / "snapshot.json"))


def test_propose_from_a_snapshot(home: Home, snap: Path) -> None:
    out = krx("trade", "propose", "--snapshot", str(snap), home=home)
    assert out.returncode == 0, out.stderr
    rows = json.loads(krx("trade", "list", "--json", home=home).stdout)
    decision = {r["ticker"]: r for r in json.loads(snap.read_text())["rows"] if int(abs(r["order"] or 0)) >= 1}
    assert len(rows) == len(decision) and all(r["status"] == "pending" for r in rows)
    assert [r["side"] for r in rows] == sorted((r["side"] for r in rows), key=lambda s: s != "SELL")  # sells first
    for r in rows:
        d = decision[r["ticker"]]
        assert r["side"] == ("BUY" if d["order"] > 0 else "SELL") and r["quantity"] == int(abs(d["order"]))
        band = 1.01 if r["side"] == "BUY" else 0.99  # limit_band_pct 1.0 around the last close
        assert abs(r["limit_price"] - d["close"] * band) < 1
        assert r["reason"].startswith(d["state"]) and r["correlation_id"].endswith(r["ticker"])
        assert r["git_commit_sha"] and r["config_hash"] and r["schema_version"] == db.SCHEMA_VERSION
    again = krx("trade", "propose", "--snapshot", str(snap), home=home)
    assert again.returncode == 2 and "PROPOSALS_EXIST" in again.stderr


def test_limits_refuse_with_the_reason(home: Home, snap: Path) -> None:
    env = {"KRX__TRADING__LIMITS__MAX_ORDER_VALUE": "15000000", "KRX__TRADING__LIMITS__MAX_ORDERS_PER_DAY": "2",
           "KRX__TRADING__LIMITS__MARKETS": "[KOSPI]"}
    out = krx("trade", "propose", "--snapshot", str(snap), home=home, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(krx("trade", "list", "--json", home=home).stdout)
    pending = [r for r in rows if r["status"] == "pending"]
    refused = {r["ticker"]: r["refusal_reason"] for r in rows if r["status"] == "refused"}
    assert len(pending) <= 2 and all(r["market"] == "KOSPI" for r in pending)
    assert all(r["quantity"] * r["limit_price"] <= 15_000_000 for r in pending)
    reasons = " | ".join(refused.values())
    assert "market KOSDAQ is not allowed" in reasons and "above limits.max_order_value 15,000,000" in reasons
    events = [json.loads(ln) for ln in (home.state / "events.jsonl").read_text().splitlines()]
    assert sorted(e["ticker"] for e in events if e["event"] == "proposal_refused") == sorted(refused)


def test_a_bad_snapshot_names_the_file_and_field(home: Home, snap: Path) -> None:
    data = json.loads(snap.read_text())
    data["rows"][1]["close"] = "12,000"
    snap.write_text(json.dumps(data))
    out = krx("trade", "propose", "--snapshot", str(snap), home=home)
    assert out.returncode == 3 and f"{snap}: rows[1].close: expected a number" in out.stderr
    assert "Traceback" not in out.stderr
    assert krx("trade", "list", "--json", home=home).stdout.strip() == "[]"  # nothing half-written


def test_reject_needs_an_operator_and_a_reason(home: Home, snap: Path) -> None:
    krx("trade", "propose", "--snapshot", str(snap), home=home)
    _op, token = operators.add(home, "alice")
    nobody = krx("trade", "reject", "1", "--reason", "no", home=home)
    assert nobody.returncode == 2 and "OPERATOR_REQUIRED" in nobody.stderr
    out = krx("trade", "reject", "1", "--reason", "not today", home=home, env={operators.TOKEN_ENV: token})
    assert out.returncode == 0 and "rejected by alice" in out.stdout
    twice = krx("trade", "reject", "1", "--reason", "again", home=home, env={operators.TOKEN_ENV: token})
    assert twice.returncode == 2 and "NOT_PENDING" in twice.stderr
    conn = db.open_db(home)
    cid = proposals.get(conn, 1)["correlation_id"]
    shown = krx("trade", "events", "--correlation-id", cid, home=home).stdout.splitlines()
    assert [json.loads(ln)["event"] for ln in shown] == ["proposal_created", "approval_rejected"]
    assert json.loads(shown[1])["operator"] == "alice" and json.loads(shown[1])["rejection_reason"] == "not today"
    assert token not in (home.state / "events.jsonl").read_text()
