"""The PC's backtest API: real `krx worker --http` processes (uvicorn on a free loopback port) driven with httpx, and
the NAS's `krx request --via` against them (faces/http/backtest_api.py, faces/cli/worker.py, nas/request.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import httpx
import pytest
from conftest import krx
from test_worker_jobs import Workers, make_request, runs, wait_for
from trading_servers import free_port, wait_listening

from common import events, operators
from common.home import Home, init_home
from common.queue import Queue


@pytest.fixture
def workers(home: Home):
    w = Workers(home)
    yield w
    w.kill_all()


@pytest.fixture
def token(home: Home) -> str:
    return operators.add(home, "alice")[1]


def serve(workers: Workers, *args: str, job: str | None = "write_result", port: int | None = None,
          name: str | None = None) -> tuple[subprocess.Popen, str]:
    """`krx worker --http` on a free loopback port; (the process, its base URL) once it listens."""
    port = port or free_port()
    proc = workers.start("--http", "--port", str(port), "--polling", "--interval", "0.2", *args, job=job, name=name)
    wait_listening(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def queue_files(q: Queue) -> list[str]:
    return sorted(p.name for folder in (q.inbox, q.processing, q.failed, q.out) if folder.is_dir()
                  for p in folder.iterdir())


def wait_status(url: str, request_id: str, status: str, timeout: float = 60, workers: Workers | None = None) -> dict:
    answers: list[dict] = []

    def reached() -> bool:
        answers.append(httpx.get(f"{url}/backtest/{request_id}", timeout=10).json())
        return answers[-1].get("status") == status

    try:
        wait_for(reached, timeout, f"{request_id} to be {status}")
    except AssertionError as exc:  # say what the API and the workers last said
        logs = "\n".join(workers.log(p) for p in workers.procs) if workers else ""
        raise AssertionError(f"{exc}; last answer: {answers[-1:]}\n{logs}") from None
    return answers[-1]


def test_a_posted_request_runs_on_the_real_backtest_and_its_metrics_and_report_come_back(
        home: Home, workers: Workers, token: str) -> None:
    assert krx("ingest", "--start", "2023-01-02", "--end", "2023-06-30", home=home,
               env={"KRX__APP__SAMPLE__TICKERS": "30"}).returncode == 0
    proc, url = serve(workers, job=None)  # the default job: pc.jobs:run, the real backtest
    request = make_request(home, 1, start="2023-02-01", end="2023-06-30")
    auth = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(f"{url}/backtest", params={"strategy": "momentum_topN_v1"}, json=request, headers=auth,
                        timeout=30)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["id"] == "req-0001" and body["queued"] is True
    assert body["status_url"] == f"{url}/backtest/req-0001" == answer.headers["location"]
    done = wait_status(url, "req-0001", "done")
    assert {"cagr", "mdd", "sharpe", "turnover", "by_year"} <= set(done["metrics"])
    result = json.loads((home.queue("done") / "req-0001" / "result.json").read_text())
    assert done["metrics"] == result["metrics"] and result["id"] == "req-0001"
    report = httpx.get(done["report_url"], timeout=30)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert report.content == (home.queue("done") / "req-0001" / "report.html").read_bytes()
    # the same id again is not queued again
    again = httpx.post(f"{url}/backtest", json=request, headers=auth, timeout=30)
    assert again.status_code == 200 and again.json()["queued"] is False and again.json()["status"] == "done"
    assert os.listdir(home.queue("pending")) == []
    queued = [e for e in events.read(home) if e["event"] == "request_queued"]
    assert [(e["id"], e["via"], e["operator"]) for e in queued] == [("req-0001", "http", "alice")]
    # SIGTERM: the worker and the API stop together, exit 0, and the port is free again
    assert workers.stop(proc) == 0
    assert "[HTTP_STOP]" in workers.log(proc)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_query_parameters_make_the_same_request_as_a_body(home: Home, workers: Workers, token: str) -> None:
    _, url = serve(workers)
    answer = httpx.post(f"{url}/backtest", params={"strategy": "momentum_topN_v1", "start": "2023-01-02",
                        "end": "2023-12-28", "params": '{"top_n": 7}', "universe": "005930,000660"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["id"]
    assert request_id.startswith("momentum_topN_v1_20230102_20231228_")
    wait_status(url, request_id, "done")
    sent = json.loads((home.queue("done") / request_id / "result.json").read_text())
    assert sent["id"] == request_id and runs(home.root, request_id) == 1


def test_a_failed_request_says_why_and_has_no_report(home: Home, workers: Workers, token: str) -> None:
    _, url = serve(workers, "--max-attempts", "1", job="failing")
    answer = httpx.post(f"{url}/backtest", json=make_request(home, 3), headers={"Authorization": f"Bearer {token}"},
                        timeout=30)
    assert answer.status_code == 202
    failed = wait_status(url, "req-0003", "failed")
    assert failed["error"]["error_code"] == "JOB_FAILED" and "no data for ALL" in failed["error"]["message"]
    report = httpx.get(f"{url}/backtest/req-0003/report", timeout=10)
    assert (report.status_code, report.json()["code"]) == (409, "NOT_DONE")


HOSTILE = [  # (what, query, body bytes or None, status, code, field)
    ("bad JSON", {}, b'{"schema": "backtest_request/1", "id": ', 400, "INVALID_JSON", None),
    ("not an object", {}, b"[1, 2]", 422, "INVALID_REQUEST", None),
    ("unknown strategy", {}, "strategy=martingale", 422, "STRATEGY_NOT_ALLOWED", "strategy"),
    ("bad date", {}, "start=2023/01/02", 422, "INVALID_REQUEST", "start"),
    ("reversed dates", {}, "end=2022-01-03", 422, "INVALID_REQUEST", "end"),
    ("a path as id", {}, "id=../../etc/x", 422, "INVALID_REQUEST", "id"),
    ("an unknown field", {}, "job=os:system", 422, "INVALID_REQUEST", "job"),
    ("a bad parameter", {}, "params={\"top_n\": -1}", 422, "INVALID_REQUEST", "params.top_n"),
    ("query strategy differs", {"strategy": "other"}, "", 422, "INVALID_REQUEST", "strategy"),
    ("body and query", {"start": "2023-01-02"}, "", 422, "INVALID_REQUEST", "start"),
    ("query: bad date", {"strategy": "momentum_topN_v1", "start": "2023-01-02", "end": "2023-13-31"}, None, 422,
     "INVALID_REQUEST", "end"),
    ("query: no strategy", {"start": "2023-01-02", "end": "2023-03-31"}, None, 422, "INVALID_REQUEST", "strategy"),
    ("query: unknown strategy", {"strategy": "martingale", "start": "2023-01-02", "end": "2023-03-31"}, None, 422,
     "STRATEGY_NOT_ALLOWED", "strategy"),
    ("query: params not JSON", {"strategy": "momentum_topN_v1", "start": "2023-01-02", "end": "2023-03-31",
                                "params": "{top_n: 3"}, None, 422, "INVALID_REQUEST", "params"),
]


def _body(home: Home, spec: bytes | str | None) -> bytes | None:
    """bytes as they are; "field=JSON value" changes one field of a good request; "" a good request."""
    if spec is None or isinstance(spec, bytes):
        return spec
    request = make_request(home, 1)
    if spec:
        key, _, value = spec.partition("=")
        try:
            request[key] = json.loads(value)
        except ValueError:
            request[key] = value
    return json.dumps(request).encode()


def test_hostile_requests_get_a_4xx_naming_the_field_and_queue_nothing(home: Home, workers: Workers,
                                                                       token: str) -> None:
    proc, url = serve(workers)
    auth = {"Authorization": f"Bearer {token}"}
    good = json.dumps(make_request(home, 1)).encode()
    with httpx.Client(base_url=url, timeout=30) as client:
        for what, query, spec, status, code, field in HOSTILE:
            answer = client.post("/backtest", params=query, content=_body(home, spec), headers=auth)
            assert answer.status_code == status, (what, answer.text)
            body = answer.json()
            assert body["code"] == code and body.get("field") == field, (what, body)
            if field:
                assert f"{field}:" in body["message"], (what, body)
        # too large, by Content-Length and (chunked, no length) while streaming: refused before it is all read
        huge = b"{" + b" " * (2 << 20) + b"}"
        assert client.post("/backtest", content=huge, headers=auth).json()["code"] == "TOO_LARGE"
        chunked = client.post("/backtest", content=iter([huge[:1 << 20], huge[1 << 20:]]), headers=auth)
        assert chunked.status_code == 413 and chunked.json()["code"] == "TOO_LARGE"
        # no token, an unknown one, another scheme: 401 before the body is even looked at
        for headers, code in (({}, "OPERATOR_REQUIRED"), ({"Authorization": "Bearer nope"}, "UNKNOWN_OPERATOR"),
                              ({"Authorization": f"Basic {token}"}, "OPERATOR_REQUIRED")):
            answer = client.post("/backtest", content=good, headers=headers)
            assert (answer.status_code, answer.json()["code"]) == (401, code)
            assert token not in answer.text
        # reading: an unknown id, an id that is no id, a report before there is one
        assert (client.get("/backtest/nothing-here").status_code, client.get("/backtest/a%20b").json()["field"]) \
            == (404, "id")
    assert queue_files(Queue.of_home(home)) == []
    assert "REQUEST_QUEUED" not in workers.log(proc)
    refused = [e["code"] for e in events.read(home) if e["event"] == "operator_refused"]
    assert refused == ["OPERATOR_REQUIRED", "UNKNOWN_OPERATOR", "OPERATOR_REQUIRED"]


def test_the_api_stays_on_loopback_unless_allowed_and_refuses_a_port_in_use(home: Home, workers: Workers) -> None:
    remote = krx("worker", "--http", "--host", "0.0.0.0", "--port", str(free_port()), home=home)
    assert remote.returncode == 3
    assert "worker.http.host: 0.0.0.0 is not a loopback address" in remote.stderr
    assert "worker.http.allow_remote: true" in remote.stderr
    _, url = serve(workers)
    taken = krx("worker", "--http", "--port", url.rsplit(":", 1)[1], home=home)
    assert taken.returncode == 3 and "[HTTP_START]" in taken.stderr and "Traceback" not in taken.stderr
    once = krx("worker", "--http", "--once", home=home)
    assert once.returncode == 3 and "does not go with --once" in once.stderr


def test_a_pc_that_restarts_between_the_post_and_the_run_loses_nothing(home: Home, workers: Workers,
                                                                        token: str) -> None:
    """One job slot, busy with a long job; a second request waits in pending/. The PC dies (SIGKILL: no clean
    release); a new worker with its API on the same port finishes both."""
    auth = {"Authorization": f"Bearer {token}"}
    port = free_port()
    first, url = serve(workers, "--lease", "2", job="long_slow", port=port, name="before")
    for n in (1, 2):
        answer = httpx.post(f"{url}/backtest", json=make_request(home, n), headers=auth, timeout=30)
        assert answer.status_code == 202
    wait_status(url, "req-0001", "processing", workers=workers)
    wait_for(lambda: runs(home.root, "req-0001") == 1, 30, "the long job to start")  # claimed is not yet running
    assert httpx.get(f"{url}/backtest/req-0002", timeout=10).json()["status"] == "pending"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/backtest/req-0002", timeout=5)
    serve(workers, "--lease", "2", port=port, name="after")
    for request_id in ("req-0001", "req-0002"):
        assert wait_status(url, request_id, "done", workers=workers)["status"] == "done"
    assert (runs(home.root, "req-0001"), runs(home.root, "req-0002")) == (2, 1)  # the killed run, then its rerun


def test_krx_request_via_the_api_and_its_fallback_to_the_file_queue(home: Home, workers: Workers,
                                                                    tmp_path) -> None:
    """The NAS (this test's home, with a store) sends to a PC with its own home; a closed port falls back."""
    assert krx("ingest", "--start", "2025-01-02", "--end", "2025-02-28", home=home,
               env={"KRX__APP__SAMPLE__TICKERS": "30"}).returncode == 0
    pc, _ = init_home(tmp_path / "pc")
    pc_token = operators.add(pc, "nas")[1]
    pc_workers = Workers(pc)
    try:
        _, url = serve(pc_workers)
        nas = {"KRX_OPERATOR_TOKEN": pc_token}
        sent = krx("request", "--via", url, home=home, env=nas)
        assert sent.returncode == 0, sent.stderr
        request_id = sent.stdout.strip()
        assert f"path=http via={url}" in sent.stderr and "[REQUEST_QUEUED]" in sent.stderr
        wait_status(url, request_id, "done")
        again = krx("request", "--via", url, home=home, env=nas)  # idempotent: the PC has it already
        assert again.returncode == 0 and "[REQUEST_EXISTS]" in again.stderr and "path=http" in again.stderr
        assert runs(pc.root, request_id) == 1 and os.listdir(home.queue("pending")) == []
        refused = krx("request", "--via", url, "--date", "2025-02-27", home=home, env={"KRX_OPERATOR_TOKEN": "x"})
        assert refused.returncode == 3 and "HTTP 401 UNKNOWN_OPERATOR" in refused.stderr
        assert "REQUEST_FALLBACK" not in refused.stderr and os.listdir(home.queue("pending")) == []
        no_token = krx("request", "--via", url, "--date", "2025-02-27", home=home)
        assert no_token.returncode == 3 and "KRX_OPERATOR_TOKEN" in no_token.stderr
    finally:
        pc_workers.kill_all()
    # the PC is off: app.yaml's request.via names a closed port; two quick tries, then the file queue
    closed = {**nas, "KRX__APP__REQUEST__VIA": f"http://127.0.0.1:{free_port()}", "KRX__APP__RETRY__ATTEMPTS": "2",
              "KRX__APP__RETRY__WAIT_INITIAL_S": "0.05"}
    fallback = krx("request", "--date", "2025-02-27", home=home, env=closed)
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stderr.count("[RETRY]") == 1 and "[REQUEST_FALLBACK]" in fallback.stderr
    assert "path=file" in fallback.stderr and pc_token not in fallback.stderr
    assert os.listdir(home.queue("pending")) == [f"{fallback.stdout.strip()}.json"]
    vias = [e.get("via") for e in events.read(home) if e["event"] == "request_queued"]
    assert vias == ["http", "file"]
