"""The runbook scripts of scripts/linux/ (bash, curl, python3 -c) against a real `krx serve` process: the daily
checklist's exit codes (0 done or WARN, 2 blocked, 3 failure) and the one-minute checks' single line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, SMALL_DAY, krx
from trading_servers import ProcessServer, free_port

from common import operators
from common.home import Home

SCRIPTS = REPO / "scripts" / "linux"


@pytest.fixture()
def served(home: Home) -> Iterator[tuple[ProcessServer, str]]:
    _, token = operators.add(home, "alice")
    assert krx("trade", "init-db", home=home).returncode == 0
    env = {"KRX_HOME": str(home.root), **SMALL_DAY}
    assert krx("ingest", "--end", "2024-03-29", home=home, env=env).returncode == 0
    port = free_port()
    srv = ProcessServer(["serve", "--port", str(port)], port, env)
    yield srv, token
    srv.close()


def _script(name: str, url: str, token: str | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX", "SLACK_"))}
    env.update(KRX_API=url, **extra)
    if token:
        env["KRX_OPERATOR_TOKEN"] = token
    return subprocess.run(["bash", str(SCRIPTS / name)], env=env, capture_output=True, text=True, timeout=300)


def test_daily_ops_runs_the_day_and_checks_it(served: tuple[ProcessServer, str], home: Home,
                                              tmp_path: Path) -> None:
    srv, token = served
    results = tmp_path / "results"
    subprocess.run(["git", "init", "-q", str(results)], check=True)
    proc = _script("daily_ops.sh", srv.url, token, KRX_RESULTS_REPO=str(results))  # a repo without a remote
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "health: ok" in out and "live cycle" in out and "snapshot: reports/ops/live/snapshots/" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("daily_ops: WARN:") and "git pull failed" in last  # and the stale sample store
    assert token not in out and token not in proc.stderr

    summary = _script("check_ops_summary.sh", srv.url)
    assert summary.returncode == 0 and len(summary.stdout.strip().splitlines()) == 1
    assert summary.stdout.startswith("ops summary: NO_RUN_HISTORY") and "DATA_STALE/HIGH" in summary.stdout
    live = _script("check_live_cycle.sh", srv.url)
    assert live.returncode == 0 and live.stdout.startswith("live cycle: COMPLETED")
    assert len(live.stdout.strip().splitlines()) == 1 and "decision 2024-03-29" in live.stdout


def test_daily_ops_blocked_by_the_emergency_stop(served: tuple[ProcessServer, str], home: Home) -> None:
    srv, token = served
    assert krx("ops", "estop", "on", "--reason", "drill", home=home,
               env={operators.TOKEN_ENV: token}).returncode == 0
    proc = _script("daily_ops.sh", srv.url, token)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "BLOCKED: summary is STOPPED" in proc.stdout
    assert not (home.reports / "ops" / "live").exists()  # the live cycle was not run
    check = _script("check_ops_summary.sh", srv.url)
    assert check.returncode == 2 and check.stdout.startswith("ops summary: STOPPED")
    none = _script("check_live_cycle.sh", srv.url)
    assert none.returncode == 0 and none.stdout.startswith("live cycle: NONE")


def test_daily_ops_failures(served: tuple[ProcessServer, str]) -> None:
    srv, _token = served
    no_token = _script("daily_ops.sh", srv.url)
    assert no_token.returncode == 3 and "needs an operator" in no_token.stdout
    wrong = _script("daily_ops.sh", srv.url, "not-a-token")
    assert wrong.returncode == 3 and "HTTP 401 UNKNOWN_OPERATOR" in wrong.stdout
    down = f"http://127.0.0.1:{free_port()}"
    for name in ("daily_ops.sh", "check_ops_summary.sh", "check_live_cycle.sh"):
        proc = _script(name, down, "x")
        assert proc.returncode == 3 and "no answer from" in proc.stdout, name
