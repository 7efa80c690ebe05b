"""Queue and worker speed, with real `krx worker` processes on a temporary home (local disk).

    .venv/bin/python benchmarks/bench_queue.py [--quick]

1. Drop-to-claim latency, p50/p95: one request at a time is submitted (tmp + fsync + rename) into a running
   worker's inbox; the latency runs from the rename that drops it to the job's start, so it includes the claim
   and the request's validation. Drops are spread over the polling cycle at random. Native observer (interval
   5 s: only the event can be this fast) and polling observer.
   Targets: native p50 <= 50 ms; polling p50 <= interval + 100 ms.
2. Throughput through claim + validate + run + finish (+ the fsynced ops event per result) with a no-op job,
   1 and 2 worker processes draining a full inbox with --once. Target: >= 100 requests/s. "steady" excludes the
   interpreter's start-up (first job start to last result), "wall" includes it. Every step is fsynced, so the
   figure follows the disk's fsync latency more than the CPU.

The jobs below are passed to the worker with `--job bench_queue:<name>` (this folder on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def noop(request, out_dir, home, progress=None) -> dict:
    """The no-op job: a one-line result.json, stamped with its start time."""
    return {"id": request["id"], "started_at": time.time()}


# --- harness -------------------------------------------------------------------------------------------------------


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRX__")}
    env.update(KRX_HOME=str(home), PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]), PYTHONUNBUFFERED="1")
    return env


def _worker(home: Path, *args: str) -> subprocess.Popen:
    err = open(home / "worker.err", "ab")  # the child writes to it; ours closes below
    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", "worker", "--job", "bench_queue:noop", *args],
                            cwd=home, env=_env(home), stdout=err, stderr=err)
    err.close()
    return proc


def _home(root: Path):
    sys.path.insert(0, str(REPO))
    from common.home import init_home

    return init_home(root)[0]


def _requests(home, n: int, tag: str) -> list[dict]:
    from common import config, schemas

    strategies = config.load("strategies", home)
    return [schemas.new_request("momentum_topN_v1", "2023-01-02", "2023-12-28", id=f"{tag}-{i:05d}",
                                requested_by="bench", strategies=strategies) for i in range(n)]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def latency(root: Path, polling: bool, n: int, interval: float) -> tuple[float, float]:
    from common.queue import Queue

    home = _home(root)
    q = Queue.of_home(home).ensure()
    mode = ["--polling", "--interval", str(interval)] if polling else ["--interval", "5"]
    proc = _worker(home.root, *mode)
    try:
        deadline = time.monotonic() + 30
        while "[WORKER_START]" not in (home.root / "worker.err").read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("worker did not start:\n" + (home.root / "worker.err").read_text())
            time.sleep(0.01)
        time.sleep(0.3)
        out = []
        rng = random.Random(1)
        for request in _requests(home, n, "lat"):
            # submit's steps (tmp, fsync, rename) inline, so the clock starts at the rename that drops the file
            tmp = q.inbox / f".{request['id']}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(json.dumps(request).encode())
                fh.flush()
                os.fsync(fh.fileno())
            dropped = time.time()
            os.rename(tmp, q.inbox / f"{request['id']}.json")
            result = q.out / request["id"] / "result.json"
            deadline = time.monotonic() + 30
            while not result.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"request {request['id']} not processed")
                time.sleep(0.001)
            out.append((json.loads(result.read_text())["started_at"] - dropped) * 1000)
            time.sleep(rng.uniform(0.01, interval))  # drops at random phases of the polling cycle
    finally:
        proc.terminate()
        proc.wait(30)
    return statistics.median(out), _pct(out, 0.95)


def throughput(root: Path, n: int, workers: int) -> tuple[float, float]:
    from common.queue import Queue

    home = _home(root)
    q = Queue.of_home(home).ensure()
    for request in _requests(home, n, "tp"):
        q.submit(request)
    t0 = time.time()
    procs = [_worker(home.root, "--once", "--concurrency", "1") for _ in range(workers)]
    for proc in procs:
        if proc.wait(600) != 0:
            raise SystemExit((home.root / "worker.err").read_text())
    wall = time.time() - t0
    results = list(q.out.iterdir())
    if len(results) != n:
        raise SystemExit(f"{len(results)} results for {n} requests")
    starts = [json.loads((d / "result.json").read_text())["started_at"] for d in results]
    last = max((d / "result.json").stat().st_mtime for d in results)
    return n / wall, (n - 1) / max(1e-9, last - min(starts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    n_lat, n_poll, n_tp = (15, 8, 200) if args.quick else (60, 25, 1000)
    interval = 0.5
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        p50, p95 = latency(root / "native", False, n_lat, interval)
        print(f"drop-to-claim, native observer : p50 {p50:6.1f} ms  p95 {p95:6.1f} ms   (n={n_lat}; "
              "target p50 <= 50 ms)")
        p50, p95 = latency(root / "polling", True, n_poll, interval)
        print(f"drop-to-claim, polling {interval:g} s   : p50 {p50:6.1f} ms  p95 {p95:6.1f} ms   (n={n_poll}; "
              f"target p50 <= {interval * 1000 + 100:.0f} ms)")
        for workers in (1, 2):
            wall, steady = throughput(root / f"tp{workers}", n_tp, workers)
            print(f"throughput, {workers} worker{'s' if workers > 1 else ' '}        : {steady:6.0f} req/s steady, "
                  f"{wall:6.0f} req/s wall   (n={n_tp}, no-op job; target >= 100 req/s)")
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
