"""The execution server's five checks against real uvicorn servers (execution server and mock KIS broker) on free
loopback ports and a real SQLite file: every refusal leaves zero broker calls and an event saying why."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import httpx
import jwt
import pytest
from conftest import REPO, krx
from trading_servers import ENV, SECRET, ThreadServer, broker_calls

from common import switches
from common.errors import OpsError
from common.home import Home
from common.log import now
from faces.http import execution_server, mock_broker
from nas.trading import approvals, broker, db, execution, proposals

SNAPSHOT = REPO / "data" / "sample_snapshot.json"


@pytest.fixture
def t(home: Home, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    db.init_db(home)
    snap = proposals.read_snapshot(SNAPSHOT)
    prices = {r["ticker"]: r["close"] for r in snap["rows"]}
    held = {} if request.node.get_closest_marker("unseeded") else {r["ticker"]: int(r["shares"]) for r in snap["rows"]}
    brk = ThreadServer(mock_broker.create_app(prices, ENV["KIS_APP_KEY"], ENV["KIS_APP_SECRET"],
                                              rate_limit_per_s=1000, positions=held))
    monkeypatch.setenv("KRX__TRADING__BROKER__BASE_URL", brk.url)
    cfg = db.load_config(home)
    conn = db.open_db(home)
    made = proposals.propose(home, conn, snap, cfg)
    exe = ThreadServer(execution_server.create_app(home, cfg))
    monkeypatch.setenv("KRX__TRADING__EXECUTION__URL", exe.url)
    cfg = db.load_config(home)
    ns = SimpleNamespace(home=home, conn=conn, cfg=cfg, broker=brk.url, exe=exe.url, proposals=made)
    yield ns
    exe.close()
    brk.close()
    conn.close()


def approve(t, index: int = 0, ttl: int = 300) -> tuple[dict, str]:
    p = t.proposals[index]
    return p, approvals.approve(t.home, t.conn, t.cfg, p["id"], "alice", ttl)["token"]


def intent(p: dict, **change) -> dict:
    return {"proposal_id": p["id"], "ticker": p["ticker"], "side": p["side"], "quantity": p["quantity"], **change}


def place(t, token: str, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{t.exe}/place_order", json=body, headers=headers, timeout=30)


def kill_switch_off(t) -> None:
    execution.set_kill_switch(t.home, t.conn, t.cfg, False, "tests trade", "alice")


def refusals(t) -> list[dict]:
    return [json.loads(r["record"]) for r in t.conn.execute(
        "SELECT record FROM event_log WHERE event = 'order_refused' ORDER BY seq")]


def claims(p: dict, **change) -> dict:
    now = int(time.time())
    return {"iss": "krx-approval", "aud": "krx-execution", "iat": now, "exp": now + 300, "jti": "j",
            "proposal_id": p["id"], **change}


def test_kill_switch_with_no_row_refuses_with_zero_broker_calls(t) -> None:
    p, token = approve(t)
    assert t.conn.execute("SELECT COUNT(*) FROM system_state").fetchone()[0] == 0
    answer = place(t, token, intent(p))
    assert answer.status_code == 403 and answer.json()["code"] == "KILL_SWITCH_ACTIVE"
    assert broker_calls(t.broker)["total"] == 0
    assert [(e["check"], e["code"], e["correlation_id"]) for e in refusals(t)] == [
        (1, "KILL_SWITCH_ACTIVE", p["correlation_id"])]
    execution.set_kill_switch(t.home, t.conn, t.cfg, True, "stop again", "bob")  # ACTIVE row: still refused
    assert place(t, token, intent(p)).json()["code"] == "KILL_SWITCH_ACTIVE"


def test_the_emergency_stop_refuses(t) -> None:
    p, token = approve(t)
    kill_switch_off(t)
    switches.set_emergency_stop(t.home, True, "test")
    answer = place(t, token, intent(p))
    assert answer.status_code == 403 and answer.json()["code"] == "EMERGENCY_STOP"
    assert broker_calls(t.broker)["total"] == 0


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with our 48-byte secret
def test_forged_tokens_are_401_with_zero_broker_calls(t) -> None:
    p, token = approve(t)
    kill_switch_off(t)
    head, body, sig = token.split(".")
    forged = {
        "tampered signature": f"{head}.{body}.{sig[:-3]}{'AAA' if not sig.endswith('AAA') else 'BBB'}",
        "alg none": jwt.encode(claims(p), None, algorithm="none"),
        "another secret": jwt.encode(claims(p), "y" * 48, algorithm="HS256"),
        "wrong audience": jwt.encode(claims(p, aud="someone-else"), SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode(claims(p, iss="someone-else"), SECRET, algorithm="HS256"),
        "HS512": jwt.encode(claims(p), SECRET, algorithm="HS512"),
        "no jti": jwt.encode({k: v for k, v in claims(p).items() if k != "jti"}, SECRET, algorithm="HS256"),
        "no token": "",
    }
    for name, bad in forged.items():
        answer = place(t, bad, intent(p))
        assert answer.status_code == 401, name
        assert answer.json()["code"] == "TOKEN_INVALID" and (not bad or bad not in answer.text)
    assert broker_calls(t.broker)["total"] == 0
    assert [e["check"] for e in refusals(t)] == [2] * len(forged)
    assert place(t, token, intent(p)).status_code == 200  # the real token still works once


def test_an_expired_token_is_403(t) -> None:
    p, _token = approve(t)
    kill_switch_off(t)
    past = int(time.time()) - 10
    stale = jwt.encode(claims(p, iat=past - 300, exp=past), SECRET, algorithm="HS256")
    answer = place(t, stale, intent(p))
    assert answer.status_code == 403 and answer.json()["code"] == "TOKEN_EXPIRED"
    assert broker_calls(t.broker)["total"] == 0 and refusals(t)[-1]["check"] == 3


def test_a_token_we_signed_but_not_the_recorded_one_is_403(t) -> None:
    p, _token = approve(t)
    kill_switch_off(t)
    other = jwt.encode(claims(p), SECRET, algorithm="HS256")  # valid signature, never recorded for the approval
    answer = place(t, other, intent(p))
    assert answer.status_code == 403 and answer.json()["code"] == "TOKEN_NOT_RECORDED"
    assert broker_calls(t.broker)["total"] == 0 and refusals(t)[-1]["check"] == 4


def test_an_intent_that_differs_from_the_approval_is_403(t) -> None:
    p, token = approve(t)
    kill_switch_off(t)
    other_side = "BUY" if p["side"] == "SELL" else "SELL"
    for change in ({"quantity": p["quantity"] + 1}, {"ticker": "005930"}, {"side": other_side},
                   {"proposal_id": t.proposals[1]["id"]}):
        answer = place(t, token, intent(p, **change))
        assert answer.status_code == 403 and answer.json()["code"] == "INTENT_MISMATCH", change
    assert broker_calls(t.broker)["total"] == 0
    assert t.conn.execute("SELECT token_used_at FROM approvals").fetchone()[0] is None  # still usable
    assert place(t, token, intent(p)).status_code == 200


def test_the_same_token_twice_second_refused_broker_unchanged(t) -> None:
    p, token = approve(t)
    kill_switch_off(t)
    first = place(t, token, intent(p))
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "PLACED" and first.json()["fill"]["quantity"] == p["quantity"]
    calls = broker_calls(t.broker)
    assert calls["orders"] == 1
    second = place(t, token, intent(p))
    assert second.status_code == 403 and second.json()["code"] == "TOKEN_USED"
    assert broker_calls(t.broker) == calls
    assert proposals.get(t.conn, p["id"])["status"] == "executed"


def test_one_token_at_the_same_moment_exactly_one_wins(t) -> None:
    p, token = approve(t)
    kill_switch_off(t)
    start, answers = threading.Barrier(4), []

    def go() -> None:
        start.wait()
        answers.append(place(t, token, intent(p)))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 403, 403, 403]
    assert {a.json()["code"] for a in answers if a.status_code == 403} <= {"TOKEN_USED"}
    assert broker_calls(t.broker)["orders"] == 1
    assert t.conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1


@pytest.mark.unseeded
def test_a_broker_failure_records_the_order_failed_and_the_token_stays_used(t) -> None:
    p, token = approve(t, [i for i, x in enumerate(t.proposals) if x["side"] == "SELL"][0])
    kill_switch_off(t)
    answer = place(t, token, intent(p))  # the mock account holds nothing: the sell is refused (APBK0400)
    assert answer.status_code == 502 and answer.json()["code"] == "BROKER_FAILED" and "APBK0400" in answer.text
    order = dict(t.conn.execute("SELECT * FROM orders").fetchone())
    assert order["status"] == "FAILED" and order["proposal_id"] == p["id"]
    assert proposals.get(t.conn, p["id"])["status"] == "failed"
    assert t.conn.execute("SELECT token_used_at FROM approvals").fetchone()[0] is not None
    again = place(t, token, intent(p))
    assert again.status_code == 403 and broker_calls(t.broker)["orders"] == 1


def test_execution_server_refuses_to_start_without_a_strong_secret(home: Home) -> None:
    db.init_db(home)
    for value in ("", "short-secret"):
        env = {**ENV, "EXECUTION_JWT_SECRET": value}
        out = krx("trade", "execution-server", "--port", "18999", home=home, env=env, timeout=60)
        assert out.returncode == 3 and "EXECUTION_JWT_SECRET must be set" in out.stderr
        assert (value or "\0") not in out.stderr + out.stdout


def test_the_broker_client_refuses_a_real_broker(home: Home) -> None:
    cfg = {**db.load_config(home)["broker"], "base_url": "https://openapivts.koreainvestment.com:29443"}
    with pytest.raises(OpsError, match="PHASE0_BROKER"):
        broker.BrokerClient(cfg, environ=ENV)


def test_the_mock_answers_egw00201_and_the_client_waits_it_out(home: Home) -> None:
    srv = ThreadServer(mock_broker.create_app({"005930": 70000.0}, ENV["KIS_APP_KEY"], ENV["KIS_APP_SECRET"],
                                              rate_limit_per_s=1))
    try:
        answers = [httpx.post(f"{srv.url}{broker.TOKEN_PATH}", json={"grant_type": "client_credentials",
                                                                      "appkey": ENV["KIS_APP_KEY"],
                                                                      "appsecret": ENV["KIS_APP_SECRET"]})
                   for _ in range(5)]
        limited = [a.json() for a in answers if a.status_code == 500]
        assert limited and all(a["msg_cd"] == "EGW00201" and a["rt_cd"] == "1" for a in limited)
        waited: list[float] = []
        cfg = {**db.load_config(home)["broker"], "base_url": srv.url}
        client = broker.BrokerClient(cfg, environ=ENV, sleep=lambda s: (waited.append(s), time.sleep(s)))
        out = client.order_cash("005930", "BUY", 1, 71000)
        assert out["ODNO"] and client.order_fills(out["ODNO"], now().date()) is not None
        assert waited  # token, order and inquiry at a limit of one a second: the client had to wait
        client.close()
    finally:
        srv.close()


def test_cli_approve_prints_the_token_once_and_the_kill_switch_needs_an_operator(t) -> None:
    from common import operators

    _op, op_token = operators.add(t.home, "alice")
    env = {"KRX__TRADING__EXECUTION__URL": t.exe, "KRX__TRADING__BROKER__BASE_URL": t.broker,
           "EXECUTION_SERVICE_CREDENTIAL": ENV["EXECUTION_SERVICE_CREDENTIAL"]}
    p = t.proposals[0]
    anonymous = krx("trade", "kill-switch", "off", "--reason", "go", home=t.home, env=env)
    assert anonymous.returncode == 2 and "OPERATOR_REQUIRED" in anonymous.stderr
    assert krx("trade", "kill-switch", "off", "--reason", "go", home=t.home,
               env={**env, operators.TOKEN_ENV: op_token}).returncode == 0
    out = krx("trade", "approve", str(p["id"]), home=t.home, env={**env, operators.TOKEN_ENV: op_token})
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert "approved by alice" in out.stdout and token.count(".") == 2
    assert token not in (t.home.state / "events.jsonl").read_text()
    assert place(t, token, intent(p)).status_code == 200
    no_credential = krx("trade", "approve", str(t.proposals[1]["id"]), home=t.home,
                        env={**env, "EXECUTION_SERVICE_CREDENTIAL": "wrong", operators.TOKEN_ENV: op_token})
    assert no_credential.returncode == 2
    assert "TOKEN_NOT_ISSUED" in no_credential.stderr and "401" in no_credential.stderr
    assert proposals.get(t.conn, t.proposals[1]["id"])["status"] == "pending"
