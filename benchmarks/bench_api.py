"""The ops API's read speed: a real `krx serve` process on 127.0.0.1 over a temporary home, 50 concurrent clients.

    .venv/bin/python benchmarks/bench_api.py [--seconds 10] [--clients 50]

For `GET /api/status` (the whole snapshot; nas.status.cached_snapshot computes it again only when a file it reads
changes, or once a second) and `GET /api/ops/summary/latest` (the written summary), each for --seconds: requests per
second, p50 and p99 latency (from sending the request to the whole answer read), and failures (any status but 200,
any transport error). The home holds what a day leaves: switches set, a cycle receipt, a written summary, some
hundred events. The load generator (a minimal keep-alive HTTP/1.1 client on asyncio) runs in this process and the
server in its own; the server's CPU time per request is printed too (from /proc), a figure that holds however
busy the machine is with other work.
Targets: >= 300 req/s and p99 <= 100 ms for each endpoint, and no failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the project, and the tests' server helpers
ENDPOINTS = ("/api/status", "/api/ops/summary/latest")
TARGET_RPS, TARGET_P99_MS = 300, 100


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; returns the status once the whole body is read."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length")
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _load(url: str, path: str, clients: int, seconds: float) -> dict:
    # a minimal HTTP/1.1 client on asyncio streams: an httpx client would spend more CPU per request than the
    # server does, and on 2 cores the load generator would measure itself
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
    latencies: list[float] = []
    failures: list[str] = []
    stop = time.monotonic() + seconds

    async def one_client() -> None:
        reader = writer = None
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                code = await _get(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                failures.append(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if code != 200:
                failures.append(f"HTTP {code}")
            latencies.append((time.perf_counter() - t0) * 1000)
        if writer is not None:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.monotonic() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"path": path, "requests": len(latencies), "failures": failures, "rps": len(latencies) / wall,
            "p50_ms": q[49], "p99_ms": q[98]}


def load(url: str, path: str, *, clients: int = 50, seconds: float = 10) -> dict:
    """`clients` concurrent clients GET `path` over and over for `seconds`: {requests, failures, rps, p50_ms,
    p99_ms}."""
    try:  # the load generator on libuv too: less of the machine's CPU spent measuring
        import uvloop

        return uvloop.run(_load(url, path, clients, seconds))
    except ImportError:
        return asyncio.run(_load(url, path, clients, seconds))


def prepare_home(root: Path) -> dict[str, str]:
    """A home as a day leaves it; returns the environment of the `krx serve` process on it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_", "EXECUTION_"))}
    env["KRX_HOME"] = str(root)
    env.setdefault("KRX_EVENT_LOG_KEY_FILE", str(root.parent / "event_log.key"))
    os.environ["KRX_EVENT_LOG_KEY_FILE"] = env["KRX_EVENT_LOG_KEY_FILE"]
    from common import switches
    from common.home import init_home
    from faces import KRX
    from nas import cycle, summary
    from nas.trading import db

    home, _ = init_home(root)
    db.init_db(home)  # `krx serve` also serves the proposals
    for i in range(100):
        switches.set_sender(home, bool(i % 2), f"bench {i}")
    switches.set_emergency_stop(home, True, "bench")
    cycle.run_cycle(home, command=KRX, base_env=env)  # blocked by the stop: a receipt, no steps
    summary.regenerate(home)
    return env


def start_server(env: dict[str, str], port: int) -> subprocess.Popen:
    from trading_servers import wait_listening

    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", "serve", "--port", str(port)], env=env,
                            cwd=env["KRX_HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_listening(port, proc)
    return proc


def _cpu_s(pid: int) -> float:
    """The server's user + system CPU seconds (Linux /proc): what a request costs, whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args()
    from trading_servers import free_port

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        env = prepare_home(Path(tmp) / "home")
        port = free_port()
        proc = start_server(env, port)
        try:
            url = f"http://127.0.0.1:{port}"
            ok = True
            for path in ENDPOINTS:
                load(url, path, clients=args.clients, seconds=1)  # warm-up: imports, first snapshot
                cpu0 = _cpu_s(proc.pid)
                r = load(url, path, clients=args.clients, seconds=args.seconds)
                cpu_ms = (_cpu_s(proc.pid) - cpu0) * 1000 / max(1, r["requests"])
                met = r["rps"] >= TARGET_RPS and r["p99_ms"] <= TARGET_P99_MS and not r["failures"]
                ok &= met
                print(f"GET {path:<26} {args.clients} clients, {args.seconds:g} s: {r['rps']:7.0f} req/s  "
                      f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  server CPU {cpu_ms:.2f} ms/request  "
                      f"{r['requests']} requests, "
                      f"{len(r['failures'])} failed  [{'ok' if met else 'MISSED'}: >= {TARGET_RPS} req/s, "
                      f"p99 <= {TARGET_P99_MS} ms]")
        finally:
            proc.terminate()
            proc.wait(10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
