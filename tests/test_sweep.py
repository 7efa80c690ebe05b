"""pc.sweep: `krx sweep` as a real process on a home with a small sample market, checked against the real `krx
backtest --set` of each combination; the same grid on a distributed.LocalCluster of 2 worker processes reached with
--scheduler; a sweep killed mid-way that resumes; the grid syntax and its refusals; the report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import krx

from common.home import Home, init_home
from pc import grid, sweep, sweep_report
from pc.backtest import BacktestError

START, END = "2024-12-02", "2025-06-30"
# lookbacks of two lengths: the runs warm up from different rows of the one scattered panel
GRID = ["--grid", "top_n=3,5", "--grid", "lookbacks=[21,63,126],[63,126,200]", "--grid", "regime.enabled=true,false"]
METRICS = ["total_return", "cagr", "mdd", "sharpe", "sortino", "calmar", "volatility", "turnover", "win_rate",
           "exposure", "excess_return"]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A home holding 40 tickers of the sample market (and the 069500 ETF) from 2024-01-02 to 2025-06-30."""
    home, _ = init_home(tmp_path_factory.mktemp("sweep") / "home")
    proc = krx("ingest", "--start", "2024-01-02", "--end", END, "--tickers", "40", home=home)
    assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture(scope="module")
def default_sweep(market: Home, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The 2x2x2 grid with the defaults: a local cluster of processes."""
    out = tmp_path_factory.mktemp("default") / "sweep"
    proc = krx("sweep", *GRID, "--start", START, "--end", END, "--out", str(out), home=market, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "sweep.parquet").drop(columns="elapsed_ms").sort_values("key").reset_index(drop=True)


def test_each_row_is_the_single_krx_backtest_of_its_parameters(market: Home, default_sweep, tmp_path: Path):
    out, proc = default_sweep
    table = pd.read_parquet(out / "sweep.parquet")
    assert len(table) == 8 and table["key"].is_unique
    assert set(table.columns) >= {"top_n", "lookbacks", "regime.enabled", *METRICS, "trades", "costs", "days"}
    assert proc.stdout.count("sharpe ") == 8  # one line per run as it finished
    assert "report: " in proc.stdout and "Traceback" not in proc.stderr
    for _, row in table.iterrows():
        sets = [f"top_n={row['top_n']}", f"lookbacks={row['lookbacks']}",
                f"regime.enabled={str(row['regime.enabled']).lower()}"]
        single = tmp_path / row["key"]
        args = [a for s in sets for a in ("--set", s)]
        bt = krx("backtest", *args, "--start", START, "--end", END, "--out", str(single), home=market)
        assert bt.returncode == 0, bt.stderr
        result = json.loads((single / "result.json").read_text(encoding="utf-8"))
        assert result["id"] == row["key"]  # the run's key is the id krx backtest gives the same parameters
        m = result["metrics"]
        for name in METRICS:
            expected = math.nan if m[name] is None else m[name]
            assert row[name] == pytest.approx(expected, abs=1e-12, rel=0, nan_ok=True), (row["key"], name)
        assert row["trades"] == m["trades"] and row["days"] == m["days"]
        assert row["costs"] == pytest.approx(m["costs"]["total"], abs=1e-6)
    csv = pd.read_csv(out / "sweep.csv", dtype={"key": str})
    assert list(csv["key"]) == list(table["key"])
    assert csv["sharpe"].to_numpy() == pytest.approx(table["sharpe"].to_numpy(), abs=1e-12, nan_ok=True)


def test_a_localcluster_of_two_worker_processes_gives_the_same_table(market: Home, default_sweep, tmp_path: Path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        proc = krx("sweep", *GRID, "--start", START, "--end", END, "--scheduler", cluster.scheduler_address,
                   "--out", str(tmp_path / "dist"), home=market, timeout=300)
        assert proc.returncode == 0, proc.stderr
        workers = {w["id"] for w in cluster.scheduler_info["workers"].values()}
    assert len(workers) == 2
    pd.testing.assert_frame_equal(_table(tmp_path / "dist"), _table(default_sweep[0]), check_exact=True)
    pids = {json.loads(line)["pid"] for line in (tmp_path / "dist" / sweep.RUNS_FILE).read_text().splitlines()}
    assert os.getpid() not in pids  # the runs ran in the cluster's worker processes


def test_a_killed_sweep_resumes_without_rerunning_finished_runs(market: Home, default_sweep, tmp_path: Path):
    out = tmp_path / "killed"
    runs = out / sweep.RUNS_FILE
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    env["KRX_HOME"] = str(market.root)
    cmd = [sys.executable, "-m", "faces.cli", "sweep", *GRID, "--start", START, "--end", END, "--workers", "1",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, cwd=market.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the cluster's processes die with it
    try:
        deadline = time.monotonic() + 120
        while not (runs.exists() and runs.read_bytes().count(b"\n") >= 1) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    before = runs.read_bytes()
    kept = before[:before.rfind(b"\n") + 1]
    finished = kept.count(b"\n")
    assert 1 <= finished < 8
    with open(runs, "ab") as fh:  # as if the kill had come in the middle of a write
        fh.write(b'{"key": "momentum_topN_v1_2024')

    again = krx("sweep", *GRID, "--start", START, "--end", END, "--workers", "1", "--out", str(out), home=market,
                timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"8 runs ({finished} already done in {out}: resuming)" in again.stdout
    assert again.stdout.count("sharpe ") == 8 - finished  # only the runs left ran
    after = runs.read_bytes()
    assert after.startswith(kept) and after.count(b"\n") == 8  # the torn line is gone, nothing ran twice
    assert len({json.loads(line)["key"] for line in after.splitlines()}) == 8
    pd.testing.assert_frame_equal(_table(out), _table(default_sweep[0]), check_exact=True)

    third = krx("sweep", *GRID, "--start", START, "--end", END, "--out", str(out), home=market)
    assert third.returncode == 0 and "(8 already done" in third.stdout and third.stdout.count("sharpe ") == 0


def test_the_report_has_the_table_the_heatmap_the_best_five_and_the_warning(default_sweep):
    out, _ = default_sweep
    page = (out / "report.html").read_text(encoding="utf-8")
    table = pd.read_parquet(out / "sweep.parquet")
    assert 'class="sortable"' in page and page.count("<tr>") >= 8 + 1
    assert "sharpe by top_n and lookbacks (the mean over regime.enabled)" in page and 'class="heat"' in page
    assert "data:image/png;base64," in page and "The best 5 by sharpe" in page
    assert "In-sample selection" in page and "The best of 8 runs" in page
    spread = sweep_report.spread(table, "sharpe")
    assert f"spreads from {sweep_report.fmt(spread['min'])} to {sweep_report.fmt(spread['max'])}" in page
    spec = json.loads((out / sweep.SPEC_FILE).read_text(encoding="utf-8"))
    assert spec["runs"] == 8 and spec["grid"]["lookbacks"] == [[21, 63, 126], [63, 126, 200]]


@pytest.mark.parametrize(("text", "values"), [
    ("5,10", ["5", "10"]),
    ("[21,63,126],[63,126,252]", ["[21,63,126]", "[63,126,252]"]),
    ("{a: 1, b: 2}, 'x,y'", ["{a: 1, b: 2}", "'x,y'"]),
])
def test_grid_values_split_at_the_commas_outside_brackets(text: str, values: list[str]):
    assert grid.split_values(text) == values


@pytest.mark.parametrize("text", ["[21,63", "21]", "5,,10", "'open"])
def test_unbalanced_or_empty_grid_values_are_refused(text: str):
    with pytest.raises(BacktestError, match="bad --grid values"):
        grid.split_values(text)


@pytest.mark.parametrize(("args", "message"), [
    (["--grid", "top_n"], "bad --grid 'top_n': expected KEY=V1,V2"),
    (["--grid", "top_n=5,many"], "top_n: expected an integer, got 'many'"),
    (["--grid", "top_n=5", "--grid", "top_n=10"], "top_n is already in the grid"),
    (["--grid", "lookbacks=[21,63]"], "weights: expected one weight per lookback"),
    (["--grid", "nope=1,2"], "nope: expected a known key"),
    (["--grid", "lookbacks=[21,63"], "an unclosed bracket"),
    (["--grid", "top_n=3,5", "--heatmap", "top_n,regime"], "bad --heatmap 'top_n,regime'"),
    (["--grid", "top_n=3", "--workers", "0"], "bad --workers 0: expected 1 or more"),
    ([], "no --grid given"),
])
def test_krx_sweep_refusals_exit_3_with_a_clear_message(market: Home, tmp_path: Path, args, message):
    proc = krx("sweep", *args, "--out", str(tmp_path / "s"), home=market)
    assert proc.returncode == 3, proc.stderr
    assert message in proc.stderr and "krx sweep: " in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()
