"""A sweep's grid and its plan: `--grid KEY=V1,V2` read as `--set` reads each value, and every run of the cartesian
product resolved to its parameters, its window and its key (the id `krx backtest` gives the same parameters)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common import schemas
from common.home import Home
from common.store import EodStore
from common.strategy import warmup_rows
from pc import backtest
from pc.backtest import BacktestError


def split_values(text: str) -> list[str]:
    """`5,10` -> ['5', '10']; `[21,63],[63,126]` -> ['[21,63]', '[63,126]']: commas inside brackets, braces or
    quotes stay with their value."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise BacktestError(f"bad --grid values {text!r}: a closing bracket without its opening one")
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if depth or quote:
        raise BacktestError(f"bad --grid values {text!r}: an unclosed bracket or quote")
    out.append("".join(cur).strip())
    if any(not v for v in out):
        raise BacktestError(f"bad --grid values {text!r}: an empty value between commas")
    return out


def parse_grid(items: Sequence[str], base: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`--grid KEY=V1,V2` items -> {KEY: [values]}, each value read as `--set KEY=V` reads it."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BacktestError(f"bad --grid {item!r}: expected KEY=V1,V2,..., e.g. top_n=5,10")
        if key in grid:
            raise BacktestError(f"bad --grid {item!r}: {key} is already in the grid; give its values once")
        values = []
        for text in split_values(raw):
            node: Any = backtest.parse_sets([f"{key}={text}"], base)
            for part in key.split("."):
                node = node[part]
            values.append(node)
        grid[key] = values
    if not grid:
        raise BacktestError("no --grid given: e.g. --grid top_n=5,10")
    return grid


# --- the plan --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    key: str                  # the id `krx backtest` gives these parameters over the same window
    values: dict              # grid key -> value
    overrides: dict           # nested, as `--set` gives them
    params: dict              # resolved
    first_row: dt.date        # the first warm-up row this run loads


@dataclass(frozen=True)
class Plan:
    strategy: str
    universe: Any
    start: dt.date
    end: dt.date
    first_day: dt.date
    last_day: dt.date
    grid: dict
    runs: list[Run]

    @property
    def load_from(self) -> dt.date:
        return min(r.first_row for r in self.runs)

    def spec(self) -> dict:
        return {"strategy": self.strategy, "universe": self.universe, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "grid": self.grid, "runs": len(self.runs)}


def plan(strategy: str, grid: Mapping[str, list[Any]], home: Home, *, start: dt.date | None = None,
         end: dt.date | None = None, universe: Any = "ALL", source: str = "--grid") -> Plan:
    """Resolve every run of the grid. Without `start`, the sweep starts on the first stored day with the warm-up
    of its hungriest run before it, so every run reports the same window. BacktestError for a bad grid or a
    parameter, an unknown strategy or no data."""
    try:
        combos = schemas.grid_runs(dict(grid), file=source)
    except schemas.RequestError as exc:
        raise BacktestError(str(exc)) from None
    cfg = backtest.strategies(home)  # once for the whole grid
    resolved = []
    for values, overrides in combos:
        what = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
        resolved.append((values, overrides, backtest.strategy_params(strategy, overrides, source=f"{source} ({what})",
                                                                     cfg=cfg)))
    store = EodStore.for_home(home)
    starts = [backtest.default_start(store, p) for _, _, p in resolved]
    start = start or max((s for s in starts if s is not None), default=None)
    end = end or store.last_date()
    if start is None or end is None:
        raise BacktestError(f"no data: the store {store.root} is empty; run `krx ingest` first")
    runs, first_day, last_day = [], start, end
    for values, overrides, params in resolved:
        first_row, first_day, last_day = backtest.window(store, start, end, warmup_rows(params))
        key = schemas.request_id(strategy, start, end, params, universe)
        runs.append(Run(key, values, overrides, params, first_row))
    if len({r.key for r in runs}) < len(runs):
        raise BacktestError(f"{source}: two combinations resolve to the same parameters (a value given twice?)")
    return Plan(strategy, universe, start, end, first_day, last_day, dict(grid), runs)
