"""backtest_sweep/1 through the queue: `krx request --sweep FILE` queues it, the real `krx worker --once` runs it
and publishes done/<id>/ like a backtest; hostile sweep requests fail cleanly into failed/ with their field."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import krx

from common import schemas
from common.home import Home, init_home
from common.queue import Queue

ONE_WORKER = {"KRX__APP__SWEEP__WORKERS": "1"}


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home, _ = init_home(tmp_path_factory.mktemp("sweepq") / "home")
    proc = krx("ingest", "--start", "2024-06-03", "--end", "2025-03-31", "--tickers", "30", home=home)
    assert proc.returncode == 0, proc.stderr
    return home


def test_a_sweep_request_is_queued_run_by_the_worker_and_published(market: Home, tmp_path: Path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("grid:\n  top_n: [3, 5]\n  regime.enabled: [true, false]\nstart: 2025-01-02\n", encoding="utf-8")
    proc = krx("request", "--sweep", str(spec), home=market)
    assert proc.returncode == 0, proc.stderr
    ident = proc.stdout.strip()
    assert ident.startswith("sweep_momentum_topN_v1_20250102_20250331_")
    pending = json.loads((market.queue("pending") / f"{ident}.json").read_text(encoding="utf-8"))
    assert pending["schema"] == "backtest_sweep/1" and pending["grid"]["top_n"] == [3, 5]
    again = krx("request", "--sweep", str(spec), home=market)
    assert again.returncode == 0 and "already queued or done" in again.stderr

    worker = krx("worker", "--once", home=market, env=ONE_WORKER, timeout=300)
    assert worker.returncode == 0, worker.stderr
    done = market.queue("done") / ident
    assert {"result.json", "sweep.parquet", "sweep.csv", "report.html", "runs.jsonl", "sweep.json"} <= \
        {p.name for p in done.iterdir()}
    result = json.loads((done / "result.json").read_text(encoding="utf-8"))
    assert result["schema"] == "backtest_sweep_result/1" and result["id"] == ident and result["runs"] == 4
    assert result["correlation_id"] == "20250331-momentum_topN_v1"
    table = pd.read_parquet(done / "sweep.parquet")
    assert len(table) == 4 and result["best"]["key"] in set(table["key"])
    assert result["best"]["sharpe"] == pytest.approx(table["sharpe"].max(), abs=1e-12)


@pytest.mark.parametrize(("text", "message"), [
    ("grid: [top_n]\n", "expected an object of parameter paths to lists of values"),
    ("grid:\n  top_n: 5\n", "grid.top_n: expected a non-empty list of values"),
    ("grid:\n  top_n: [5, many]\n", "top_n: expected an integer"),
    ("top_n: [5]\n", "expected a mapping with grid:"),
    ("grid:\n  top_n: [5]\nparams: {}\n", "params: unknown key"),
    ("grid: {top_n: [5]\n", "cannot read the sweep"),
])
def test_krx_request_sweep_refuses_a_bad_file_naming_it(market: Home, tmp_path: Path, text: str, message: str):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text, encoding="utf-8")
    proc = krx("request", "--sweep", str(spec), home=market)
    assert proc.returncode == 3, proc.stderr
    assert message in proc.stderr and "bad.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(market.queue("pending").glob("*.json"))


def _sweep(ident: str, **changes) -> dict:
    request = {"schema": "backtest_sweep/1", "id": ident, "created_at": "2025-04-01T16:00:00+09:00",
               "strategy": "momentum_topN_v1", "grid": {"top_n": [3, 5]}, "universe": "ALL",
               "start": "2025-01-02", "end": "2025-03-31", "requested_by": "test"}
    request.update(changes)
    return request


HOSTILE = {
    "grid_list": ({"grid": ["top_n", 5]}, "INVALID_REQUEST", "grid"),
    "grid_empty": ({"grid": {}}, "INVALID_REQUEST", "grid"),
    "grid_scalar": ({"grid": {"top_n": 5}}, "INVALID_REQUEST", "grid.top_n"),
    "grid_path": ({"grid": {"../../etc/passwd": [1]}}, "INVALID_REQUEST", "grid"),
    "grid_overlap": ({"grid": {"filters": [{"enabled": False}], "filters.enabled": [True]}}, "INVALID_REQUEST",
                     "grid.filters.enabled"),
    "grid_huge": ({"grid": {"top_n": list(range(1, 41)), "commission_bps": list(range(40))}}, "INVALID_REQUEST",
                  "grid"),
    "grid_bad_value": ({"grid": {"top_n": [3, "many"]}}, "INVALID_REQUEST", "grid.top_n"),
    "grid_bad_combo": ({"grid": {"lookbacks": [[21, 63, 126], [21, 63]]}}, "INVALID_REQUEST", "grid.weights"),
    "with_params": ({"params": {"top_n": 3}}, "INVALID_REQUEST", "params"),
    "no_grid": ({"grid": None}, "INVALID_REQUEST", "grid"),
    "bad_strategy": ({"strategy": "os.system"}, "STRATEGY_NOT_ALLOWED", "strategy"),
    # read as a backtest_request/1, whose fields do not include grid
    "bad_schema": ({"schema": "backtest_sweep/2"}, "INVALID_REQUEST", "grid"),
}


def test_hostile_sweep_requests_fail_cleanly_like_any_request(market: Home):
    q = Queue.of_home(market)
    for name, (changes, _, _) in HOSTILE.items():
        request = _sweep(name, **changes)
        if changes.get("grid", 0) is None:
            del request["grid"]
        (q.inbox / f"{name}.json").write_text(json.dumps(request), encoding="utf-8")
    proc = krx("worker", "--once", home=market, env=ONE_WORKER, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name, (_, code, field) in HOSTILE.items():
        error = json.loads((q.failed / f"{name}.error.json").read_text(encoding="utf-8"))
        assert error["error_code"] == code, (name, error)
        assert error["message"].startswith(f"{name}.json: {field}"), (name, error["message"])
    assert not list(q.out.iterdir()) or all(not p.name.startswith(tuple(HOSTILE)) for p in q.out.iterdir())
    assert "more than 1024 combinations" in json.loads((q.failed / "grid_huge.error.json").read_text())["message"]


def test_grid_runs_expand_dotted_paths_into_nested_overrides():
    runs = schemas.grid_runs({"top_n": [3, 5], "filters.enabled": [False]})
    assert runs == [({"top_n": 3, "filters.enabled": False}, {"top_n": 3, "filters": {"enabled": False}}),
                    ({"top_n": 5, "filters.enabled": False}, {"top_n": 5, "filters": {"enabled": False}})]
