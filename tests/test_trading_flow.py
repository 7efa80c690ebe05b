"""The runbook end to end on the sample market: a scan's decision -> proposals -> approval in `krx serve` -> the
execution server -> the mock KIS broker -> fills -> reconcile; every piece a real `krx` process on a free loopback
port. Also: the approval side's files and memory hold no signing secret."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from conftest import krx
from trading_servers import ENV, SECRET, ProcessServer, broker_calls, free_port

from common import operators
from common.home import Home
from nas.trading import db, ledger

SCAN_ENV = {"KRX__APP__SAMPLE__TICKERS": "60"}


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process `pid` contains `needle` (reads /proc/<pid>/mem)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if "r" not in perms or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(lo)
                if needle in mem.read(hi - lo):
                    return True
            except (OSError, ValueError, OverflowError):
                continue
    return False


@pytest.fixture
def market(home: Home) -> Home:
    steps = [("ingest", "--start", "2024-01-02", "--end", "2025-11-28", "--tickers", "60"),
             ("scan", "--date", "2025-08-29", "--apply", "--reset"), ("scan", "--date", "2025-11-27", "--apply"),
             ("trade", "init-db"), ("trade", "propose", "--date", "2025-11-28")]
    for step in steps:
        out = krx(*step, home=home, env=SCAN_ENV)
        assert out.returncode == 0, (step, out.stderr[-2000:])
    return home


def test_scan_to_fill_to_reconcile(market: Home) -> None:
    home = market
    ports = {"broker": free_port(), "exec": free_port(), "serve": free_port()}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    common_env = {"KRX_HOME": str(home.root), "KRX__TRADING__BROKER__BASE_URL": urls["broker"],
                  "KRX__TRADING__EXECUTION__URL": urls["exec"]}
    approval_env = {**common_env, "EXECUTION_SERVICE_CREDENTIAL": ENV["EXECUTION_SERVICE_CREDENTIAL"]}
    servers = [ProcessServer(["trade", "mock-broker", "--port", str(ports["broker"]), "--seed-positions"],
                             ports["broker"], {**common_env, **ENV}),
               ProcessServer(["trade", "execution-server", "--port", str(ports["exec"])], ports["exec"],
                             {**common_env, **ENV}),
               ProcessServer(["serve", "--port", str(ports["serve"])], ports["serve"], approval_env)]
    try:
        _op, op_token = operators.add(home, "alice")
        as_alice = {"Authorization": f"Bearer {op_token}"}
        out = krx("trade", "kill-switch", "off", "--reason", "phase 0 run", home=home,
                  env={operators.TOKEN_ENV: op_token})
        assert out.returncode == 0, out.stderr
        listed = httpx.get(f"{urls['serve']}/proposals", timeout=30).json()
        pending = [p for p in listed if p["status"] == "pending"]
        assert {p["side"] for p in pending} == {"BUY", "SELL"}  # the month-end replacement sells and buys
        page = httpx.get(f"{urls['serve']}/proposals/page", timeout=30)
        assert page.status_code == 200 and all(p["ticker"] in page.text for p in pending)

        nobody = httpx.post(f"{urls['serve']}/proposals/{pending[0]['id']}/approve", json={}, timeout=30)
        assert nobody.status_code == 401
        forged_approver = httpx.post(f"{urls['serve']}/proposals/{pending[0]['id']}/approve",
                                     json={"approved_by": "mallory"}, headers=as_alice, timeout=30)
        assert forged_approver.status_code == 200
        rejected = pending[-1]
        answer = httpx.post(f"{urls['serve']}/proposals/{rejected['id']}/reject",
                            json={"rejection_reason": "not this one"}, headers=as_alice, timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "rejected"
        grants = {pending[0]["id"]: forged_approver.json()}
        for p in pending[1:-1]:
            a = httpx.post(f"{urls['serve']}/proposals/{p['id']}/approve", json={"expires_in_seconds": 600},
                           headers=as_alice, timeout=30)
            assert a.status_code == 200, a.text
            grants[p["id"]] = a.json()

        for p in pending[:-1]:
            body = {k: p[k] for k in ("ticker", "side", "quantity")} | {"proposal_id": p["id"]}
            placed = httpx.post(f"{urls['exec']}/place_order", json=body, timeout=30,
                                headers={"Authorization": f"Bearer {grants[p['id']]['token']}"})
            assert placed.status_code == 200, placed.text
            assert placed.json()["fill"]["quantity"] == p["quantity"]
        assert broker_calls(urls["broker"])["orders_accepted"] == len(pending) - 1  # retries after EGW00201 aside

        out = krx("trade", "reconcile", home=home, env={**common_env, **ENV})
        assert out.returncode == 0, out.stderr
        recon = json.loads((home.reports / "phase_c" / "latest" / "recon_summary.json").read_text())
        rows = {r["ticker"]: r for r in recon["tickers"]}
        for p in pending[:-1]:
            assert rows[p["ticker"]]["broker_shares"] == int(rows[p["ticker"]]["model_target_shares"])
            assert rows[p["ticker"]]["difference"] == 0
        assert rows[rejected["ticker"]]["difference"] != 0
        assert rows[rejected["ticker"]]["reason"] == "the proposal for it is rejected"

        conn = db.open_db(home)
        cid = pending[0]["correlation_id"]
        story = [e["event"] for e in ledger.by_correlation(conn, cid)]
        assert story == ["proposal_created", "token_issued", "approval_granted", "order_placed", "fill_recorded"]
        granted = next(e for e in ledger.by_correlation(conn, cid) if e["event"] == "approval_granted")
        assert granted["operator"] == "alice"  # the signed-in operator, not the body's "mallory"
        shown = krx("trade", "events", "--correlation-id", cid, home=home)
        assert [json.loads(ln)["event"] for ln in shown.stdout.splitlines()] == story
        assert krx("trade", "verify-db-log", home=home).returncode == 0
        assert krx("ops", "verify-log", home=home).returncode == 0
        stored = conn.execute("SELECT token_hash FROM approvals WHERE token_hash IS NOT NULL").fetchall()
        assert len(stored) == len(pending) - 1 and all(re.fullmatch("[0-9a-f]{64}", r[0]) for r in stored)

        # the approval side: no signing secret in its environment, its memory or the files of the home
        serve_pid, exec_pid = servers[2].proc.pid, servers[1].proc.pid
        assert memory_holds(exec_pid, SECRET.encode())  # the scan finds the secret where it is
        assert not memory_holds(serve_pid, SECRET.encode())
        assert SECRET.encode() not in open(f"/proc/{serve_pid}/environ", "rb").read()
        for path in home.root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert SECRET.encode() not in data, path
                assert all(g["token"].encode() not in data for g in grants.values()), path  # tokens: hash only
    finally:
        for s in servers:
            s.close()


def test_serve_refuses_to_hold_the_signing_secret(home: Home) -> None:
    krx("trade", "init-db", home=home)
    (home.root / ".env").write_text(f"EXECUTION_JWT_SECRET={SECRET}\n")
    out = krx("serve", "--port", str(free_port()), home=home, timeout=60)
    assert out.returncode == 3 and "SECRET_ON_APPROVAL_SIDE" in out.stderr and SECRET not in out.stderr
