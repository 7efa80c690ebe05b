"""The ops API's edges through a real uvicorn on 127.0.0.1: the resolver's refusals, the backtests, the POST rate
limit, the remote mode, a live cycle that really scans and renders, and a bounded load test."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SMALL_DAY, krx
from ops_api_server import Api, start
from trading_servers import free_port

from common import atomic
from common.home import Home
from faces.cli.serve import is_loopback
from faces.http.guard import TokenBucket


@pytest.fixture()
def api(home: Home) -> Iterator[Api]:
    a = start(home)
    yield a
    a.close()


def _artifacts(home: Home, outside: Path) -> None:
    atomic.write_json(home.reports / "signals" / "signals_20240628.json", {"asof": "2024-06-28"})
    done = home.queue("done") / "req-1"
    done.mkdir()
    atomic.write_json(done / "result.json", {"id": "req-1", "cagr": 0.1})
    (done / "report.html").write_text("<html><script>alert(1)</script></html>", encoding="utf-8")
    outside.write_text("secret outside the home", encoding="utf-8")
    (home.reports / "signals" / "signals_20240627.json").symlink_to(outside)
    (home.queue("done") / "req-2").symlink_to(outside.parent, target_is_directory=True)


def test_the_resolver_reads_only_artifacts(api: Api, tmp_path: Path) -> None:
    home, c = api.home, api.client
    _artifacts(home, tmp_path / "outside.json")
    ok = c.get("/api/ops/resolve", params={"ref": "reports/signals/signals_20240628.json"})
    assert ok.status_code == 200 and ok.json() == {"asof": "2024-06-28"}
    report = c.get("/api/ops/resolve", params={"ref": "reports/done/req-1/report.html"})
    assert report.status_code == 200 and "sandbox" in report.headers["content-security-policy"]
    for ref in ("../outside.json", "reports/../../outside.json", str(tmp_path / "outside.json"),
                "/etc/passwd", "reports/signals/signals_20240627.json",   # a link out of the home
                "reports/done/req-2/outside.json", "reports/done/req-2/result.json",  # through a linked folder
                "state/operators.json", "configs/app.yaml", ".env", "reports/signals/signals_20240101.json",
                "reports/signals/./signals_20240628.json", "reports\\signals\\signals_20240628.json", ""):
        r = c.get("/api/ops/resolve", params={"ref": ref})
        assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_REF"), ref
        assert "secret outside" not in r.text and "token_sha256" not in r.text


def test_backtests(api: Api, tmp_path: Path) -> None:
    _artifacts(api.home, tmp_path / "outside.json")
    c = api.client
    assert c.get("/api/backtests").json()["rows"] == [
        {"id": "req-1", "result_ref": "reports/done/req-1/result.json", "report_ref": "reports/done/req-1/report.html"}]
    one = c.get("/api/backtests/req-1").json()
    assert one["result"] == {"id": "req-1", "cagr": 0.1}
    assert c.get("/api/backtests/req-1/report.html").text.startswith("<html>")
    for bad in ("req-2", "nope", "..%2Fstate"):
        assert c.get(f"/api/backtests/{bad}").status_code == 404


def test_posts_are_rate_limited_per_operator(home: Home) -> None:
    app_yaml = home.configs / "app.yaml"
    cfg = yaml.safe_load(app_yaml.read_text(encoding="utf-8"))
    cfg["api"].update(post_burst=2, post_per_minute=1)
    app_yaml.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    api = start(home)
    try:
        body = {"enabled": False, "reason": "check"}
        codes = [api.client.post("/api/emergency_stop", json=body, headers=api.auth("alice")).status_code
                 for _ in range(3)]
        limited = api.client.post("/api/emergency_stop", json=body, headers=api.auth("alice"))
        assert codes == [200, 200, 429] and limited.json()["code"] == "RATE_LIMITED"
        assert int(limited.headers["retry-after"]) >= 1
        assert api.client.post("/api/emergency_stop", json=body, headers=api.auth("bob")).status_code == 200
        assert api.client.get("/api/emergency_stop").status_code == 200  # reads are never limited
    finally:
        api.close()


def test_token_bucket_refills_with_its_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 60, clock=lambda: now[0])
    assert [bucket.take("a"), bucket.take("a")] == [0, 0] and bucket.take("a") == pytest.approx(1.0)
    assert bucket.take("b") == 0  # a bucket per caller
    now[0] = 1.0
    assert bucket.take("a") == 0


def test_remote_needs_allow_remote_and_then_a_token_everywhere(home: Home) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("nas.local")
    krx("trade", "init-db", home=home)
    refused = krx("serve", "--host", "0.0.0.0", "--port", "1", home=home, timeout=60)
    assert refused.returncode == 2 and "REMOTE_NOT_ALLOWED" in refused.stderr
    api = start(home, remote=True)
    try:
        for path in ("/api/status", "/api/ops/summary/latest", "/docs", "/proposals"):
            r = api.client.get(path)
            assert (r.status_code, r.json()["code"]) == (401, "OPERATOR_REQUIRED"), path
        assert api.client.get("/api/status", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert api.client.get("/api/status", headers=api.auth("carol")).status_code == 200  # a viewer reads
        r = api.client.post("/api/emergency_stop", json={"enabled": True, "reason": "x"}, headers=api.auth("carol"))
        assert r.status_code == 403
    finally:
        api.close()




def test_a_live_cycle_scans_and_renders_the_alert(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SMALL_DAY.items():
        monkeypatch.setenv(k, v)
    ingest = krx("ingest", "--end", "2024-03-29", home=home, env=SMALL_DAY)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    api = start(home)
    try:
        run = api.client.post("/api/live/cycle/run?confirm=true", headers=api.auth("alice")).json()
        assert (run["result"], run["exit_code"]) == ("COMPLETED", 0), run["steps"]
        assert [s["name"] for s in run["steps"]] == ["scan", "alert"]
        assert run["decision"]["asof"] == "2024-03-29" and run["decision"]["states"]
        assert run["push"]["delivery_actual"] == "CONSOLE_ONLY"  # the shipped delivery_policy
        row = api.client.get("/api/live/cycle/latest").json()["rows"][0]
        assert row["snapshot_ref"] == run["snapshot_ref"]
        signals = api.client.get("/api/ops/resolve", params={"ref": run["decision"]["signals_ref"]})
        assert signals.status_code == 200 and signals.json()["asof"] == "2024-03-29"
        outbox = api.client.get("/api/ops/resolve", params={"ref": run["push"]["outbox_ref"]}).json()
        assert outbox["sent"] is False and outbox["payloads"]
    finally:
        api.close()
    again = krx("ops", "live-cycle", home=home, env=SMALL_DAY)  # the CLI face of the same core call
    assert again.returncode == 0 and "COMPLETED" in again.stdout, again.stdout[-2000:]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_api", REPO / "benchmarks" / "bench_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bounded_load_no_request_fails(tmp_path: Path) -> None:
    """The benchmark's loop for 5 s against a real `krx serve` process: every answer is a 200 (speed is the
    benchmark's business, not this test's)."""
    bench = _bench()
    env = bench.prepare_home(tmp_path / "home")
    port = free_port()
    proc = bench.start_server(env, port)
    try:
        for path in bench.ENDPOINTS:
            r = bench.load(f"http://127.0.0.1:{port}", path, clients=50, seconds=2.5)
            assert r["requests"] > 0 and r["failures"] == [], (path, r["failures"][:5])
    finally:
        proc.terminate()
        proc.wait(10)
