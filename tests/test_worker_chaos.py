"""Chaos: 3 worker processes, 200 requests, workers SIGKILLed at random (half of the kills aimed at a worker
that holds a claim, so they land mid-job) and restarted. Afterwards every request has exactly one complete
done/<id>/, pending/, processing/ and failed/ are empty, and no temporary folder is left or taken for a result."""

from __future__ import annotations

import json
import os
import random
import signal
import time

from conftest import krx
from test_worker_jobs import Workers, make_request, runs, wait_for

from common.home import Home, init_home
from common.queue import Queue
from common.queue_names import parse_claim_name

N_REQUESTS = 200
N_WORKERS = 3
LEASE = "1.0"


def test_sigkill_chaos_gives_every_request_exactly_one_result(tmp_path) -> None:
    home = init_home(tmp_path / "home")[0]
    q = Queue.of_home(home).ensure()
    workers = Workers(home)
    rng = random.Random(20240105)
    ids = [f"req-{n:04d}" for n in range(N_REQUESTS)]

    def start(slot: int):
        # one of the three polls, as a worker on a network share would
        mode = ["--polling"] if slot == 2 else []
        return workers.start(*mode, "--interval", "0.1", "--lease", LEASE, "--max-attempts", "1000",
                             job="jittery", name=f"slot{slot}-{workers.count}")

    try:
        slots = [start(i) for i in range(N_WORKERS)]
        kills, aimed, submitted = 0, 0, 0
        deadline = time.monotonic() + 45
        next_kill = time.monotonic() + rng.uniform(0.2, 0.5)
        while time.monotonic() < deadline:
            # requests keep arriving during the chaos, not only before it
            for _ in range(rng.randint(1, 6)):
                if submitted < N_REQUESTS:
                    assert q.submit(make_request(home, submitted))
                    submitted += 1
            if time.monotonic() >= next_kill:
                holders = {int(parsed[2].split("-")[-2]) for c in os.listdir(q.processing)
                           if (parsed := parse_claim_name(c))}
                busy = [i for i, p in enumerate(slots) if p.pid in holders and p.poll() is None]
                if busy and rng.random() < 0.5:
                    victim = rng.choice(busy)
                    aimed += 1
                else:
                    victim = rng.randrange(N_WORKERS)
                slots[victim].send_signal(signal.SIGKILL)
                slots[victim].wait(10)
                kills += 1
                slots[victim] = start(victim)
                next_kill = time.monotonic() + rng.uniform(0.2, 0.6)
            # a fast machine may finish early: keep killing (idle workers too) until the chaos had its 10 kills
            if submitted == N_REQUESTS and kills >= 10 and all((q.out / i).is_dir() for i in ids):
                break
            time.sleep(0.1)
        assert submitted == N_REQUESTS
        wait_for(lambda: all((q.out / i).is_dir() for i in ids), 30, "every request done")
        # the live workers clear what the killed ones left behind once it is older than the lease
        wait_for(lambda: not [n for n in os.listdir(q.out) if n.startswith(".")], 15, "temp folders cleared")
        for proc in slots:  # a graceful stop exits 0 (once the worker is up: before that SIGTERM just kills)
            workers.wait_started(proc)
            assert workers.stop(proc) == 0, workers.log(proc)
    finally:
        workers.kill_all()

    assert sorted(os.listdir(q.out)) == ids  # exactly one entry per request, nothing hidden, nothing else
    for request_id in ids:
        folder = q.out / request_id
        assert sorted(os.listdir(folder)) == ["equity.csv", "result.json", "trades.csv"], request_id
        assert json.loads((folder / "result.json").read_text())["id"] == request_id
    assert os.listdir(q.inbox) == [] and os.listdir(q.processing) == [] and os.listdir(q.failed) == []
    logs = "".join(workers.log(p) for p in workers.procs)
    recovered = logs.count("[CLAIM_RECOVERED]")
    print(f"chaos: kills={kills} aimed={aimed} runs={runs(home.root)} recovered_claims={recovered}")
    assert kills >= 10 and recovered >= 1  # the chaos really hit running jobs
    assert runs(home.root) >= N_REQUESTS


def test_a_result_published_by_a_killed_worker_gets_its_job_done(home: Home) -> None:
    q = Queue.of_home(home)
    (q.out / "r9").mkdir(parents=True)  # published ...
    (q.out / "r9" / "result.json").write_text("{}")
    claim = q.processing / "r9@1@host-1-abcdef.json"  # ... and killed before the claim went
    claim.write_text("{}")
    os.utime(claim, (time.time() - 3600, time.time() - 3600))
    proc = krx("worker", "--once", "--lease", "5", home=home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[JOB_DONE]" in proc.stderr and "recovered" in proc.stderr
    lines = (home.state / "events.jsonl").read_text(encoding="utf-8").splitlines()
    done = [json.loads(ln) for ln in lines if '"backtest_done"' in ln]
    assert len(done) == 1 and done[0]["id"] == "r9" and done[0]["recovered"] is True
    assert not claim.exists()
