"""pc.backtest: `krx backtest` and `python -m pc.backtest run` as real processes on a home with a sample ingest,
run_request in process, the parity entry point, and the --set parser."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import schemas, strategy
from common.home import Home, init_home
from common.queue import Queue
from common.store import EodStore
from pc import backtest, report

FILES = {"result.json", "equity.csv", "trades.csv", "report.html"}
PARITY = {"lookbacks": [60], "weights": [1.0], "top_n": 20, "rebalance": "month_end", "invest_fraction": 0.99,
          "commission_bps": 25, "sell_tax": [], "slippage_bps": 0, "execution": "close", "fractional_shares": True,
          "initial_cash": 100000000, "filters": {"enabled": False}, "regime": {"enabled": False},
          "core_holdings": [], "sell_rules": {"enabled": False}}


def _env(home: Home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    env["KRX_HOME"] = str(home.root)
    return env


def _py(home: Home, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=_env(home),
                          cwd=home.root, timeout=timeout)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A home holding the sample market from 2024-01-02 to 2025-06-30 (120 tickers and the 069500 ETF)."""
    home, _ = init_home(tmp_path_factory.mktemp("bt") / "home")
    proc = _py(home, "faces.cli", "ingest", "--start", "2024-01-02", "--end", "2025-06-30", "--tickers", "120")
    assert proc.returncode == 0, proc.stderr
    return home


# --- the command line -------------------------------------------------------------------------------------------


def test_krx_backtest_writes_four_files_and_prints_the_headline(market: Home, tmp_path: Path):
    out = tmp_path / "out"
    proc = _py(market, "faces.cli", "backtest", "--strategy", "momentum_topN_v1", "--start", "2024-09-02",
               "--end", "2025-06-30", "--set", "top_n=10", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert FILES == {p.name for p in out.iterdir()}
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    report.check_result(result)
    assert result["params"]["top_n"] == 10 and result["params"]["lookbacks"] == [21, 63, 126]
    d = result["data"]
    assert d["first_date"] == "2024-09-02" and d["last_date"] == "2025-06-30"
    assert d["warmup_first_date"] < d["first_date"] and d["warmup_rows"] > 126
    panel = EodStore.for_home(market).load_panel(["close"], dt.date.fromisoformat(d["warmup_first_date"]),
                                                 dt.date(2025, 6, 30))["close"]
    assert d["tickers"] == panel.shape[1] and "069500" in panel and len(d["content_hash"]) == 16
    eq = pd.read_csv(out / "equity.csv")
    assert eq["date"].iloc[0] == "2024-09-02" and eq["date"].iloc[-1] == "2025-06-30"
    assert eq["benchmark"].notna().all()
    trades = pd.read_csv(out / "trades.csv", dtype={"ticker": str})
    assert (trades["date"] >= "2024-09-02").all()
    assert "CAGR" in proc.stdout and "MDD" in proc.stdout and "Sharpe" in proc.stdout
    assert f"report: {(out / 'report.html').resolve()}" in proc.stdout
    assert "BACKTEST_DONE" in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "no_such_strategy"], "unknown strategy 'no_such_strategy'"),
    (["--start", "2030-01-02", "--end", "2030-12-30"], "no data in range 2030-01-02 to 2030-12-30"),
    (["--start", "2025-06-30", "--end", "2025-01-02"], "no data in range: start 2025-06-30 is after end 2025-01-02"),
    (["--set", "top_n=many"], "bad parameter: --set: top_n: expected an integer, got 'many'"),
    (["--set", "filters.nope=1"], "bad parameter: --set: filters.nope: expected a known key"),
    (["--set", "top_n"], "bad --set 'top_n': expected KEY=VALUE"),
    (["--set", "weights=[1.0]"], "bad parameter: --set: weights: expected one weight per lookback"),
])
def test_krx_backtest_refusals_exit_3_with_a_clear_message(market: Home, tmp_path: Path, args, message):
    out = tmp_path / "out"
    proc = _py(market, "faces.cli", "backtest", *args, "--out", str(out))
    assert proc.returncode == 3, proc.stderr
    assert f"krx backtest: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_python_m_pc_backtest_run_is_the_workers_one_shot(market: Home, tmp_path: Path):
    inbox, done = tmp_path / "q" / "pending", tmp_path / "q" / "done"
    queue = Queue.at(inbox, done).ensure()
    request = schemas.new_request("momentum_topN_v1", "2025-01-02", "2025-06-30", params={"top_n": 3},
                                  requested_by="test", correlation_id="corr-1", id="req-1", home=market)
    assert queue.submit(request)
    proc = _py(market, "pc.backtest", "run", "--inbox", str(inbox), "--out", str(done))
    assert proc.returncode == 0, proc.stderr
    assert FILES == {p.name for p in (done / "req-1").iterdir()}
    result = json.loads((done / "req-1" / "result.json").read_text(encoding="utf-8"))
    assert result["id"] == "req-1" and result["correlation_id"] == "corr-1" and result["params"]["top_n"] == 3
    assert os.listdir(inbox) == []


# --- in process ---------------------------------------------------------------------------------------------------


def _request(**changes) -> dict:
    request = {"schema": "backtest_request/1", "id": "in-process", "strategy": "momentum_topN_v1",
               "params": {"top_n": 4, "regime": {"enabled": False}}, "universe": "KOSPI", "start": "2025-01-02",
               "end": "2025-03-31", "requested_by": "test", "created_at": "2025-04-01T16:00:00+09:00"}
    request.update(changes)
    return request


def test_run_request_reports_only_the_window_and_calls_progress(market: Home, tmp_path: Path):
    calls = []
    result = backtest.run_request(_request(), tmp_path / "o", market, progress=lambda *a: calls.append(a))
    assert FILES == {p.name for p in (tmp_path / "o").iterdir()}
    assert calls, "progress was never called"
    assert result["data"]["first_date"] == "2025-01-02" and result["data"]["last_date"] == "2025-03-31"
    assert result["data"]["universe"] == "KOSPI"
    tickers = pd.read_parquet(market.data / "eod" / "tickers.parquet").set_index("ticker")
    kospi = int((tickers["market"] == "KOSPI").sum())
    assert result["data"]["tickers"] == kospi + 1  # and 069500, the benchmark
    bought = pd.read_csv(tmp_path / "o" / "trades.csv", dtype={"ticker": str})
    assert set(bought["ticker"]) <= set(tickers.index[tickers["market"] == "KOSPI"]) | {"069500"}
    m = result["metrics"]
    assert m["days"] == len(pd.read_csv(tmp_path / "o" / "equity.csv"))
    assert -1 <= m["mdd"] <= 0 and 0 <= m["exposure"] <= 1
    assert [y["year"] for y in m["by_year"]] == [2025]


@pytest.mark.parametrize(("changes", "message"), [
    ({"strategy": "nope"}, "unknown strategy 'nope'"),
    ({"start": "2019-01-02", "end": "2019-12-30"}, "no data in range 2019-01-02 to 2019-12-30"),
    ({"params": {"top_n": -1}}, "bad parameter: in-process: params: top_n: expected a number between 0 and 1000"),
])
def test_run_request_refusals(market: Home, tmp_path: Path, changes, message):
    with pytest.raises(backtest.BacktestError, match=message.replace("(", r"\(")):
        backtest.run_request(_request(**changes), tmp_path / "o", market)
    assert not (tmp_path / "o").exists()


def test_run_backtest_fills_defaults_and_keeps_the_index():
    idx = pd.bdate_range("2023-01-02", periods=160)
    rng = np.random.default_rng(3)
    closes = pd.DataFrame(1000 * np.cumprod(1 + rng.normal(0, 0.02, (160, 6)), axis=0), index=idx,
                          columns=[f"00000{i}" for i in range(6)])
    closes.iloc[:30, 5] = np.nan  # listed late
    run = backtest.run_backtest(closes, {**PARITY, "top_n": 2})
    assert run.equity.index.equals(closes.index)
    assert run.params["benchmark"] == "069500" and run.params["top_n"] == 2  # defaults under the overrides
    # nothing is defined before row 60: equity is the initial cash until the first month end after it
    assert (run.equity.iloc[:60] == 100_000_000).all()
    assert run.equity.iloc[-1] != 100_000_000
    with pytest.raises(backtest.BacktestError, match="bad parameter"):
        backtest.run_backtest(closes, {"top_n": "two"})


def _parity_reference(closes: pd.DataFrame, top_n: int) -> np.ndarray:
    """The issue's parity definition in plain numpy, row by row (shares nothing with the engine)."""
    c = closes.to_numpy(dtype=float)
    n, m = c.shape
    month = closes.index.year * 12 + closes.index.month
    shares, cash = np.zeros(m), 1e8
    equity = np.full(n, 1e8)
    for t in range(n):
        held = shares != 0
        if t < n - 1 and month[t + 1] != month[t] and t >= 60:
            with np.errstate(invalid="ignore", divide="ignore"):
                score = c[t] / c[t - 60] - 1
            ok = np.flatnonzero(np.isfinite(score))
            if len(ok):
                picks = ok[np.argsort(-score[ok], kind="stable")[:top_n]]
                value = np.where(held, shares * c[t], 0.0)
                V = cash + value.sum()
                target = np.zeros(m)
                target[picks] = 0.99 * V / top_n
                fee = 25 / 1e4 * np.abs(target - value).sum()
                cash = V - target.sum() - fee
                with np.errstate(invalid="ignore", divide="ignore"):
                    shares = np.where(target > 0, target / c[t], 0.0)
        held = shares != 0
        equity[t] = cash + (shares[held] * c[t, held]).sum()
    return equity


def test_run_backtest_matches_the_parity_definition():
    """The parity entry point with the issue's parameters, against a plain reference: 1e-9 relative each day."""
    idx = pd.bdate_range("2022-01-03", periods=400)
    rng = np.random.default_rng(11)
    closes = pd.DataFrame(1000 * np.cumprod(1 + rng.normal(0.0003, 0.02, (400, 40)), axis=0), index=idx,
                          columns=[f"{i:06d}" for i in range(40)])
    closes.iloc[:90, 3] = np.nan  # listed late: no score until 60 rows after its first close
    for top_n in (20, 50):  # 50: fewer defined scores than slots
        run = backtest.run_backtest(closes, {**PARITY, "top_n": top_n})
        ref = _parity_reference(closes, top_n)
        assert run.equity.index.equals(closes.index)
        np.testing.assert_allclose(run.equity.to_numpy(), ref, rtol=1e-9, atol=0)


# --- parsing --set ------------------------------------------------------------------------------------------------


def test_parse_sets():
    base = backtest.strategy_params("momentum_topN_v1")
    sets = ["top_n=10", "filters.enabled=false", "lookbacks=[20, 60]", "benchmark=069500", "initial_cash=1e8",
            "regime.ticker=005930", "invest_fraction=0.5", "filters.value_window=20"]
    assert backtest.parse_sets(sets, base) == {
        "top_n": 10, "filters": {"enabled": False, "value_window": 20}, "lookbacks": [20, 60],
        "benchmark": "069500", "initial_cash": 100_000_000, "regime": {"ticker": "005930"}, "invest_fraction": 0.5}
    for bad in ("top_n", "=1", "a..b=1", "top_n=[1"):
        with pytest.raises(backtest.BacktestError, match="bad --set"):
            backtest.parse_sets([bad], base)
    with pytest.raises(backtest.BacktestError, match="already given a value"):
        backtest.parse_sets(["filters=1", "filters.enabled=true"], base)


def test_warmup_covers_the_longest_window():
    params = backtest.strategy_params("momentum_topN_v1")
    assert strategy.warmup_rows(params) == 200 + 5  # the 200-day SMAs
    params = backtest.strategy_params("momentum_topN_v1", {"regime": {"enabled": False},
                                                           "sell_rules": {"enabled": False}})
    assert strategy.warmup_rows(params) == 126 + 5


def test_default_start_leaves_the_warm_up_before_the_window(market: Home):
    store = EodStore.for_home(market)
    days = sorted(store.stored_dates())
    params = backtest.strategy_params("momentum_topN_v1")
    assert backtest.default_start(store, params) == days[strategy.warmup_rows(params)]
    long = backtest.strategy_params("momentum_topN_v1", {"regime": {"sma_days": 340}})
    assert backtest.default_start(store, long) == days[0]  # too short a store: all of it


# --- ids, folders and the first day ---------------------------------------------------------------------------


def test_backtests_differing_in_one_parameter_never_share_a_folder(market: Home):
    args = ("faces.cli", "backtest", "--start", "2025-01-02", "--end", "2025-03-31")
    ten = _py(market, *args, "--set", "top_n=10")
    three = _py(market, *args, "--set", "top_n=3")
    assert ten.returncode == 0 and three.returncode == 0, ten.stderr + three.stderr
    folders = sorted((market.reports / "backtests").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("momentum_topN_v1_20250102_20250331_") for f in folders)
    tops = {json.loads((f / "result.json").read_text())["params"]["top_n"] for f in folders}
    assert tops == {10, 3}
    # the same run again would overwrite it: refused, unless --force
    before = (folders[0] / "result.json").read_bytes()
    again = _py(market, *args, "--set", f"top_n={json.loads(before)['params']['top_n']}")
    assert again.returncode == 3 and "already exists" in again.stderr and "--force" in again.stderr
    assert (folders[0] / "result.json").read_bytes() == before
    forced = _py(market, *args, "--set", f"top_n={json.loads(before)['params']['top_n']}", "--force")
    assert forced.returncode == 0, forced.stderr


def test_returns_are_measured_from_the_initial_cash_when_day_one_trades(market: Home, tmp_path: Path):
    # 2025-01-31 is January's last session: with same-close fills the first reported day already paid its costs
    request = _request(start="2025-01-31", end="2025-03-31", universe="ALL",
                       params={"execution": "close", "regime": {"enabled": False}})
    result = backtest.run_request(request, tmp_path / "o", market)
    eq = pd.read_csv(tmp_path / "o" / "equity.csv")
    trades = pd.read_csv(tmp_path / "o" / "trades.csv")
    assert (trades["date"] == "2025-01-31").any()
    assert eq["equity"].iloc[0] < 100_000_000  # the first day's costs
    m = result["metrics"]
    assert m["start_equity"] == 100_000_000
    assert m["total_return"] == pytest.approx(eq["equity"].iloc[-1] / 100_000_000 - 1, rel=1e-12)
    assert m["days"] == len(eq)


def test_share_counts_in_the_report_are_whole_numbers_with_separators(market: Home, tmp_path: Path):
    params = {"initial_cash": 10_000_000_000, "top_n": 4, "regime": {"enabled": False}}
    backtest.run_request(_request(params=params), tmp_path / "o", market)
    page = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    trades = pd.read_csv(tmp_path / "o" / "trades.csv", dtype={"ticker": str})
    held = trades.assign(n=np.where(trades["side"] == "BUY", trades["shares"], -trades["shares"]))
    held = held.groupby("ticker")["n"].sum()
    held = held[held > 0]
    assert "Holdings at the end" in page and len(held) and held.max() >= 10_000
    for shares in held:
        assert f'<td class="">{shares:,.0f}</td>' in page  # 57,314, never 5.731e+04
