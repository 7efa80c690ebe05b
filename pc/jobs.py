"""The worker's default job: a queued request runs as a backtest (backtest_request/1) or as a sweep
(backtest_sweep/1), by its schema. `krx worker --job MODULE:FUNCTION` can name another function of this shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.home import Home
from common.schemas import SWEEP_SCHEMA
from pc import backtest, sweep


def run(request: Mapping[str, Any], out_dir: Path, home: Home, progress: Callable[..., None] | None = None) -> dict:
    """Run a validated request on the home's store, writing its result files into `out_dir`; returns its result."""
    if request.get("schema") == SWEEP_SCHEMA:
        return sweep.run_request(request, out_dir, home, progress=progress)
    return backtest.run_request(request, out_dir, home, progress=progress)
