"""krx worker: real worker processes, real observers, temporary homes (pc.worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import krx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_worker_jobs import Workers, make_request, runs, wait_for

from common import events, schemas
from common.home import Home
from common.log import now
from common.queue import Queue
from pc import worker as worker_mod


@pytest.fixture
def q(home: Home) -> Queue:
    return Queue.of_home(home).ensure()


@pytest.fixture
def workers(home: Home):
    w = Workers(home)
    yield w
    w.kill_all()


def result(q: Queue, request_id: str) -> dict:
    return json.loads((q.out / request_id / "result.json").read_text())


def done(q: Queue, *ids: str) -> bool:
    return all((q.out / i / "result.json").is_file() for i in ids)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "] [ERROR] [" in line]


@pytest.mark.parametrize("observer", ["native", "polling"])
def test_requests_before_and_after_start_are_processed(home: Home, q: Queue, workers: Workers, observer: str) -> None:
    q.submit(make_request(home, 1))  # raises no event: found by the start-up scan
    # native: the periodic scan is 60 s away, so only an inotify event can bring the second request in time
    args = ["--interval", "60"] if observer == "native" else ["--polling", "--interval", "0.3"]
    proc = workers.start(*args)
    started = workers.wait_started(proc)
    assert f"observer={observer}" in started
    wait_for(lambda: done(q, "req-0001"), 20, "the request queued before the start")
    q.submit(make_request(home, 2))
    wait_for(lambda: done(q, "req-0002"), 20, "the request dropped while running")
    assert result(q, "req-0002")["pid"] == proc.pid
    assert workers.stop(proc) == 0
    assert os.listdir(q.inbox) == [] and os.listdir(q.processing) == []
    assert runs(home.root) == 2


def test_the_worker_survives_its_inbox_going_away(home: Home, q: Queue, workers: Workers) -> None:
    proc = workers.start("--polling", "--interval", "0.1")
    workers.wait_started(proc)
    q.inbox.rename(home.reports / "pending.away")
    q.inbox.write_text("not a folder")  # what a dropped share can look like: scanning it raises an OSError
    wait_for(lambda: "[QUEUE_IO]" in workers.log(proc), 20, "the worker to notice")
    q.inbox.unlink()
    (home.reports / "pending.away").rename(q.inbox)
    q.submit(make_request(home, 1))
    wait_for(lambda: done(q, "req-0001"), 20, "the request after the share came back")
    assert proc.poll() is None and "reachable again" in workers.log(proc)
    assert workers.stop(proc) == 0


def test_once_processes_everything_then_exits_and_logs_events(home: Home, q: Queue, workers: Workers) -> None:
    for n in range(5):
        q.submit(make_request(home, n))
    proc = workers.start("--once", job="return_result")
    assert proc.wait(30) == 0, workers.log(proc)
    assert done(q, *(f"req-{n:04d}" for n in range(5)))
    assert sorted(os.listdir(q.out / "req-0003")) == ["extra.txt", "result.json"]  # the worker wrote result.json
    assert [runs(home.root, f"req-{n:04d}") for n in range(5)] == [1] * 5
    logged = [e for e in events.read(home) if e["event"] == "backtest_done"]
    assert sorted(e["id"] for e in logged) == [f"req-{n:04d}" for n in range(5)]
    assert {e["correlation_id"] for e in logged} == {f"corr-{n}" for n in range(5)}
    assert events.verify(home)[0]


def test_custom_inbox_and_out_folders(home: Home, workers: Workers, tmp_path: Path) -> None:
    share = tmp_path / "share"
    custom = Queue.at(share / "in", tmp_path / "results")
    custom.submit(make_request(home, 1))  # creates the inbox; the worker creates the rest
    proc = workers.start("--once", "--inbox", str(share / "in"), "--out", str(tmp_path / "results"))
    assert proc.wait(30) == 0, workers.log(proc)
    assert (tmp_path / "results" / "req-0001" / "result.json").is_file()
    # beside the inbox: the queue's folders, and ops/heartbeat/ (the worker's heartbeat for the NAS's watchdog)
    assert sorted(os.listdir(share)) == ["failed", "in", "ops", "processing"]
    assert os.listdir(share / "ops") == ["heartbeat"]


def test_hostile_inputs_end_in_failed_and_the_worker_stays_alive(home: Home, q: Queue, workers: Workers,
                                                                  tmp_path: Path) -> None:
    # settle 3 s (the default): the slow copy below pauses 0.3 s, so a stalled test process has 2.7 s of margin
    proc = workers.start("--polling", "--interval", "0.2", "--settle", "3.0")
    workers.wait_started(proc)
    good = make_request(home, 0)
    hostile = {
        "bad_json": (b'{"schema": "backtest_request/1", "id": ', "INVALID_JSON"),
        "huge": (b"{" + b" " * (5 * 1024 * 1024) + b"}", "TOO_LARGE"),
        "evil": (json.dumps({**good, "id": "../../x"}).encode(), "INVALID_REQUEST"),
        "unknown_strategy": (json.dumps({**good, "id": "unknown_strategy", "strategy": "martingale"}).encode(),
                             "STRATEGY_NOT_ALLOWED"),
        "missing": (json.dumps({"schema": "backtest_request/1", "id": "missing"}).encode(), "INVALID_REQUEST"),
        "wrong_types": (json.dumps({**good, "id": "wrong_types", "start": 20230102, "params": []}).encode(),
                        "INVALID_REQUEST"),
        "garbage": (os.urandom(4096).replace(b"{", b"\xff"), "INVALID_JSON"),
        "empty": (b"", "INVALID_JSON"),
        "bad name": (json.dumps(good).encode(), "INVALID_REQUEST"),
        "outside": (None, "INVALID_REQUEST"),  # a symbolic link to a valid request elsewhere
        "bad_params": (json.dumps({**good, "id": "bad_params", "params": {"top_n": "all"}}).encode(),
                       "INVALID_REQUEST"),
    }
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**good, "id": "outside"}))
    for name, (data, _) in hostile.items():
        if data is None:
            (q.inbox / f"{name}.json").symlink_to(elsewhere)
        else:
            (q.inbox / f"{name}.json").write_bytes(data)  # written in place, no rename: the worst case

    # a valid request copied slowly in place (a plain SMB copy): must wait, not fail
    slow = json.dumps(make_request(home, 7)).encode()
    path = q.inbox / "req-0007.json"
    with open(path, "wb") as fh:
        for i in range(0, len(slow), len(slow) // 8 + 1):
            fh.write(slow[i:i + len(slow) // 8 + 1])
            fh.flush()
            time.sleep(0.3)  # pauses shorter than the settle time, 2.4 s in all
    wait_for(lambda: all((q.failed / f"{n}.error.json").is_file() for n in hostile), 30, "hostile files failed")
    wait_for(lambda: done(q, "req-0007"), 20, "the slow copy")
    assert proc.poll() is None  # still alive
    q.submit(make_request(home, 8))
    wait_for(lambda: done(q, "req-0008"), 20, "a good request after the hostile ones")

    for name, (_, code) in hostile.items():
        error = json.loads((q.failed / f"{name}.error.json").read_text())
        assert error["error_code"] == code, (name, error)
        assert f"{name}.json" in error["message"], error["message"]  # names the file
        assert (q.failed / f"{name}.json").exists() or (q.failed / f"{name}.json").is_symlink()
    assert "id" in json.loads((q.failed / "evil.error.json").read_text())["message"]
    assert "params.top_n" in json.loads((q.failed / "bad_params.error.json").read_text())["message"]
    assert elsewhere.is_file() and not (q.out / "outside").exists()
    assert runs(home.root) == 2  # only the two good requests ran
    assert workers.stop(proc) == 0
    assert len(error_lines(workers.log(proc))) == len(hostile)  # one ERROR line (one Slack message) each
    assert os.listdir(q.inbox) == [] and os.listdir(q.processing) == []


@pytest.mark.parametrize("how", ["finish", "release", "second-signal"])
def test_sigterm_finishes_or_releases_the_job_then_exits_0(home: Home, q: Queue, workers: Workers, how: str) -> None:
    q.submit(make_request(home, 1))
    env = {"KRX__APP__WORKER__STOP_GRACE_S": "0.2"} if how == "release" else {}
    # the job to release must still run when the signals arrive, however late a loaded machine delivers them
    proc = workers.start("--interval", "0.2", job="slow" if how == "finish" else "long_slow", env=env)
    wait_for(lambda: runs(home.root) == 1, 20, "the job to start")
    proc.send_signal(signal.SIGTERM)
    if how == "second-signal":
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, workers.log(proc)
    assert os.listdir(q.processing) == []
    if how == "finish":
        assert done(q, "req-0001") and os.listdir(q.inbox) == []
        return
    assert os.listdir(q.inbox) == ["req-0001.json"]  # back, and the attempt not counted
    assert "JOB_RELEASED" in workers.log(proc)
    second = workers.start("--once")
    assert second.wait(30) == 0
    assert result(q, "req-0001")["pid"] == second.pid
    assert [p for p in os.listdir(q.out) if p.startswith(".")] == []  # the stopped job's temp folder is gone


def test_sigkill_loses_nothing_the_lease_brings_the_claim_back(home: Home, q: Queue, workers: Workers) -> None:
    q.submit(make_request(home, 1))
    victim = workers.start("--interval", "0.2", "--lease", "1", job="slow")
    wait_for(lambda: runs(home.root) == 1, 20, "the job to start")
    victim.kill()
    victim.wait(10)
    [claim] = os.listdir(q.processing)
    assert claim.startswith("req-0001@1@")
    assert [p for p in os.listdir(q.out) if p.startswith(".req-0001.")]  # its half-written output
    rescuer = workers.start("--interval", "0.2", "--lease", "1")
    wait_for(lambda: done(q, "req-0001"), 20, "the recovered request")
    wait_for(lambda: os.listdir(q.out) == ["req-0001"], 20, "the dead worker's temp folder to be cleared")
    assert result(q, "req-0001")["pid"] == rescuer.pid
    log = workers.log(rescuer)
    assert "CLAIM_RECOVERED" in log and "id=req-0001 attempt=2" in log
    assert workers.stop(rescuer) == 0


def test_the_heartbeat_keeps_a_job_longer_than_the_lease(home: Home, q: Queue, workers: Workers) -> None:
    q.submit(make_request(home, 1))
    # a 6 s job under a 2 s lease: a stall of the runner under 1.6 s (lease minus heartbeat period) is tolerated,
    # and without a heartbeat the watcher would take the claim back long before the job ends
    runner = workers.start("--interval", "0.2", "--lease", "2", job="silent_slow")  # 6 s, never calls progress
    wait_for(lambda: runs(home.root) == 1, 20, "the job to start")
    watcher = workers.start("--interval", "0.1", "--lease", "2")
    workers.wait_started(watcher)
    wait_for(lambda: done(q, "req-0001"), 20, "the long job")
    assert result(q, "req-0001")["pid"] == runner.pid
    assert runs(home.root) == 1  # never taken away and run twice
    assert "CLAIM_RECOVERED" not in workers.log(watcher)
    assert workers.stop(runner) == 0 and workers.stop(watcher) == 0


def test_a_failing_job_is_retried_then_failed_with_one_error_line(home: Home, q: Queue, workers: Workers) -> None:
    q.submit(make_request(home, 1))
    proc = workers.start("--once", "--max-attempts", "3", job="failing")
    assert proc.wait(30) == 0
    assert runs(home.root, "req-0001") == 3
    assert sorted(os.listdir(q.failed)) == ["req-0001.error.json", "req-0001.json"]
    error = json.loads((q.failed / "req-0001.error.json").read_text())
    assert error["error_code"] == "JOB_FAILED" and error["attempts"] == 3
    assert "ValueError: no data for ALL between 2023-01-02 and 2023-12-28" in error["message"]
    log = workers.log(proc)
    assert len(error_lines(log)) == 1 and log.count("[JOB_RETRY]") == 2
    assert os.listdir(q.out) == [] and os.listdir(q.inbox) == [] and os.listdir(q.processing) == []
    assert [e["error_code"] for e in events.read(home) if e["event"] == "backtest_failed"] == ["JOB_FAILED"]


def test_a_job_that_writes_no_result_fails(home: Home, q: Queue, workers: Workers) -> None:
    q.submit(make_request(home, 1))
    proc = workers.start("--once", "--max-attempts", "1", job="nothing")
    assert proc.wait(30) == 0
    error = json.loads((q.failed / "req-0001.error.json").read_text())
    assert error["error_code"] == "JOB_FAILED" and "no result.json" in error["message"]
    assert os.listdir(q.out) == []


def test_a_request_whose_result_exists_is_not_run_again(home: Home, q: Queue, workers: Workers) -> None:
    (q.out / "req-0001").mkdir()
    (q.out / "req-0001" / "result.json").write_text('{"old": true}')
    (q.inbox / "req-0001.json").write_text(json.dumps(make_request(home, 1)))  # queued again behind submit's back
    proc = workers.start("--once")
    assert proc.wait(30) == 0
    assert runs(home.root) == 0 and result(q, "req-0001") == {"old": True}
    assert os.listdir(q.inbox) == [] and os.listdir(q.processing) == []
    assert "ALREADY_DONE" in workers.log(proc)


def test_a_missing_job_module_is_a_clear_failure(home: Home, workers: Workers) -> None:
    proc = workers.start("--once", job="no_such_function")
    assert proc.wait(30) == 3
    assert "no_such_function" in workers.log(proc)


def test_a_missing_inbox_is_an_error_not_a_new_local_folder(home: Home, workers: Workers, tmp_path: Path) -> None:
    unmounted = tmp_path / "mnt" / "nas" / "reports" / "pending"
    proc = workers.start("--inbox", str(unmounted))
    assert proc.wait(30) == 3
    assert "does not exist" in workers.log(proc) and not (tmp_path / "mnt").exists()


def test_run_once_in_process_with_concurrency(home: Home, q: Queue) -> None:
    """run_once is the one-shot behind `python -m pc.backtest run`; concurrency runs jobs side by side."""
    barrier = threading.Barrier(3, timeout=10)

    def together(request, out_dir, home, progress=None):
        barrier.wait()  # breaks (and the job fails) unless three jobs run at the same time
        return {"id": request["id"]}

    for n in range(3):
        q.submit(make_request(home, n))
    assert worker_mod.run_once(q.inbox, q.out, home=home, job=together, concurrency=3, max_attempts=1) == 0
    assert done(q, "req-0000", "req-0001", "req-0002")
    assert os.listdir(q.failed) == []


def test_settings_come_from_app_yaml_and_the_command_line(home: Home) -> None:
    s = worker_mod.Settings.from_config(home, lease_s=7.0, polling=None)
    assert (s.interval_s, s.lease_s, s.max_attempts, s.stop_grace_s) == (5.0, 7.0, 3, 20.0)
    parser = __import__("argparse").ArgumentParser()
    worker_mod.add_arguments(parser)
    args = parser.parse_args(["--polling", "--interval", "0.5", "--once"])
    assert (args.polling, args.interval, args.once, args.job) == (True, 0.5, True, worker_mod.DEFAULT_JOB)
    with pytest.raises(SystemExit):
        parser.parse_args(["--interval", "-1"])


def test_end_to_end_with_the_real_backtest(home: Home, q: Queue, workers: Workers) -> None:
    """The default job (pc.backtest:run_request) on a sample-market store: a running worker, the cron one-shot
    `python -m pc.backtest run`, and a request with no data, which fails with the backtest's message."""
    pytest.importorskip("pc.backtest", reason="pc/backtest.py (the backtest issue) is not in the tree yet")
    ingest = subprocess.run([sys.executable, "-m", "faces.cli", "ingest", "--source", "sample", "--start",
                             "2023-01-02", "--end", "2023-06-30", "--tickers", "30"], cwd=home.root,
                            env=workers.env(), capture_output=True, text=True, timeout=120)
    assert ingest.returncode == 0, ingest.stderr

    def request(start: str, end: str) -> dict:
        return schemas.new_request("momentum_topN_v1", start, end, params={"top_n": 3}, correlation_id="e2e",
                                   home=home)

    first, second, empty = request("2023-03-02", "2023-06-30"), request("2023-04-03", "2023-06-30"), \
        request("2020-01-02", "2020-06-30")
    proc = workers.start("--interval", "0.2", "--max-attempts", "1", job=None)  # the default job
    workers.wait_started(proc)
    q.submit(first)
    q.submit(empty)
    wait_for(lambda: done(q, first["id"]) and (q.failed / f"{empty['id']}.error.json").exists(), 120,
             "the real backtest")
    assert workers.stop(proc) == 0
    assert {"result.json", "equity.csv", "trades.csv", "report.html"} <= set(os.listdir(q.out / first["id"]))
    assert result(q, first["id"])["id"] == first["id"]
    error = json.loads((q.failed / f"{empty['id']}.error.json").read_text())
    assert error["error_code"] == "JOB_FAILED" and "no data" in error["message"]

    q.submit(second)
    oneshot = subprocess.run([sys.executable, "-m", "pc.backtest", "run", "--inbox", "reports/pending", "--out",
                              "reports/done"], cwd=home.root, env=workers.env(), capture_output=True, text=True,
                             timeout=120)
    assert oneshot.returncode == 0, oneshot.stderr
    assert result(q, second["id"])["id"] == second["id"]
    assert os.listdir(q.inbox) == [] and os.listdir(q.processing) == []
    assert {e["id"] for e in events.read(home) if e["event"] == "backtest_done"} == {first["id"], second["id"]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def bodies(draw) -> bytes:
    """Raw bytes, or a good request for id "fuzz" with one field replaced or removed."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    request = {"schema": "backtest_request/1", "id": "fuzz", "created_at": "2024-01-05T16:00:00+09:00",
               "strategy": "momentum_topN_v1", "params": {"top_n": 3}, "universe": "ALL", "start": "2023-01-02",
               "end": "2023-12-28", "requested_by": "nas", "correlation_id": None}
    field = draw(st.sampled_from(sorted(request)))
    if draw(st.booleans()):
        del request[field]
    else:
        request[field] = draw(json_values)
    return json.dumps(request).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies())
def test_fuzz_request_bodies_through_the_worker(home: Home, body: bytes) -> None:
    """Whatever the body, the worker ends with the file in done/ or in failed/ (with its error record), never
    in pending/ or processing/, and returns normally."""
    def job(request, out_dir, home, progress=None):
        return {"id": request["id"]}

    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "pending"
        inbox.mkdir()
        (inbox / "fuzz.json").write_bytes(body)
        w = worker_mod.build(inbox, Path(tmp) / "done", home=home, job=job, settle_s=0.05, interval_s=0.05,
                             max_attempts=1)
        assert w.run(once=True, install_signals=False) == 0
        q = w.queue
        finished = (q.out / "fuzz" / "result.json").is_file()
        failed = (q.failed / "fuzz.error.json").is_file() and (q.failed / "fuzz.json").is_file()
        assert finished != failed
        assert os.listdir(q.inbox) == [] and os.listdir(q.processing) == []
        if failed:
            assert json.loads((q.failed / "fuzz.error.json").read_text())["error_code"] in (
                "INVALID_JSON", "INVALID_REQUEST", "STRATEGY_NOT_ALLOWED", "TOO_LARGE")


def _job(request, out_dir, home, progress=None):
    return {"id": request["id"]}


def test_a_file_name_too_long_for_its_error_record_is_failed_and_does_not_stall_the_queue(home: Home) -> None:
    """A 245-character file name is legal, but `.<stem>.<owner>.error.tmp` beside it in failed/ is not
    (ENAMETOOLONG): the hostile file must still end in failed/ and the requests behind it must run."""
    q = Queue.of_home(home).ensure()
    long_name = "a" * 240 + ".json"  # not a valid id (over 128 characters)
    (q.inbox / long_name).write_text("{}")
    os.utime(q.inbox / long_name, (1, 1))  # the oldest: first in line
    q.submit(make_request(home, 1))
    w = worker_mod.build(q.inbox, q.out, home=home, job=_job, interval_s=0.05, settle_s=0.05, max_attempts=1)
    assert w.run(once=True, install_signals=False) == 0
    assert (q.out / "req-0001" / "result.json").is_file()
    assert os.listdir(q.inbox) == []
    records = [json.loads((q.failed / n).read_text()) for n in os.listdir(q.failed) if n.endswith(".error.json")]
    assert [r["file"] for r in records] == [long_name] and records[0]["error_code"] == "INVALID_REQUEST"


@pytest.mark.parametrize("argv", [["run", "--concurrency", "0"], ["run", "--max-attempts", "-1"], ["run", "--bogus"],
                                  ["--bogus"]])
def test_the_one_shot_refuses_bad_arguments_with_exit_3(home: Home, argv: list[str]) -> None:
    """A usage error is a failure (3; argparse's 2 means "blocked" here), and `--concurrency 0` must not start a
    worker that can never claim anything and so never exits."""
    q = Queue.of_home(home).ensure()
    q.submit(make_request(home, 1))
    env = {**os.environ, "KRX_HOME": str(home.root)}
    proc = subprocess.run([sys.executable, "-m", "pc.backtest", *argv], cwd=home.root, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "error:" in proc.stderr


@pytest.mark.parametrize("bad", [".hidden", "...", ".x.y.tmp", "x.error"])
def test_an_id_starting_with_a_dot_is_refused_since_hidden_files_are_never_read(home: Home, bad: str) -> None:
    """pending/.<id>.json is a hidden file the worker never reads: submitting it queued a request that could
    never run nor fail. The queue and the schema refuse such an id instead; and an id ending in .error, whose
    failed/<id>.json would be taken for the error record of another request."""
    q = Queue.of_home(home).ensure()
    with pytest.raises(ValueError, match="request id"):
        q.submit({**make_request(home, 1), "id": bad})
    assert os.listdir(q.inbox) == []
    with pytest.raises(schemas.RequestError, match="id"):
        schemas.validate({**make_request(home, 1), "id": bad}, home=home)


def test_a_file_the_worker_cannot_claim_does_not_hold_up_the_others(home: Home, caplog) -> None:
    """An immutable (or foreign-owned) request cannot be renamed: it is skipped with one WARNING, and the
    requests behind it still run; --once still ends."""
    q = Queue.of_home(home).ensure()
    q.submit(make_request(home, 1))
    stuck = next(q.inbox.glob("*.json"))
    os.utime(stuck, (1, 1))  # the oldest: first in line
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        q.submit(make_request(home, 2))
        w = worker_mod.build(q.inbox, q.out, home=home, job=_job, interval_s=0.05, settle_s=0.05, max_attempts=1)
        with caplog.at_level("WARNING", logger="krx"):
            assert w.run(once=True, install_signals=False) == 0
        assert (q.out / "req-0002" / "result.json").is_file()
        assert stuck.exists() and not (q.out / "req-0001").exists()
        stuck_lines = [r for r in caplog.records if getattr(r, "event", "") == "REQUEST_STUCK"]
        assert len(stuck_lines) == 1 and stuck.name in stuck_lines[0].getMessage()
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], capture_output=True)


def test_a_backtest_that_cannot_succeed_is_failed_at_once(home: Home) -> None:
    req = schemas.new_request("momentum_topN_v1", "2010-01-04", "2010-06-30", id="nodata", home=home)
    Queue.of_home(home).submit(req)  # the store is empty: no retry can give it data
    proc = krx("worker", "--once", home=home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((home.queue("failed") / "nodata.error.json").read_text(encoding="utf-8"))
    assert record["error_code"] == "JOB_FAILED" and record["attempts"] == 1
    assert "JOB_RETRY" not in proc.stderr


SLOW_IMPORT = '''
import importlib.abc, os, sys, time
class _Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pc.worker":
            open(os.environ["KRX_TEST_MARK"], "w").close()  # the worker module starts loading now
            time.sleep(3)
        return None
sys.meta_path.insert(0, _Slow())
'''


def test_sigterm_while_the_worker_is_still_importing_exits_0(home: Home, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_IMPORT, encoding="utf-8")
    mark = tmp_path / "mark"
    env = {**os.environ, "KRX_HOME": str(home.root), "KRX_TEST_MARK": str(mark),
           "PYTHONPATH": f"{hook}{os.pathsep}{Path(__file__).resolve().parent.parent}"}
    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", "worker", "--once"], env=env, cwd=home.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not mark.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_a_full_disk_under_the_log_file_prints_no_traceback(home: Home) -> None:
    home.logs.mkdir(exist_ok=True)
    os.symlink("/dev/full", home.logs / f"worker_{now():%Y%m%d}.log")  # every write: ENOSPC
    (home.queue("pending") / "bad name.json").write_text("{}")  # something to log
    proc = krx("worker", "--once", home=home, timeout=120)
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    assert proc.stderr.count("[LOG] cannot write") == 1
