"""The outputs of a sweep, from its runs' records: sweep.parquet and sweep.csv (one row per run: its key, the grid's
parameters, every headline metric) and a self-contained report.html (a sortable table, a heatmap of one metric
over two parameters, the equity curves of the best five against the benchmark, and a warning about choosing the
best of many runs on the data that ranked them). Each file is written atomically."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from common import atomic
from pc import metrics as mx
from pc import report
from pc.backtest import BacktestError

FILES = {"parquet": "sweep.parquet", "csv": "sweep.csv", "report": "report.html"}
METRICS = ("sharpe", "cagr", "total_return", "mdd", "sortino", "calmar", "volatility", "turnover", "win_rate",
           "exposure", "excess_return")
LOWER_IS_BETTER = {"volatility", "turnover"}
PERCENT = {"cagr", "total_return", "mdd", "volatility", "win_rate", "exposure", "excess_return", "benchmark_return"}
DEFAULT_METRIC = "sharpe"
BEST = 5


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _text(value: Any) -> Any:
    """A parameter value as a table cell: lists and objects as compact JSON (one type per parquet column)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def table(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    """One row per record: key, the grid's parameters, the headline metrics (NaN where one has no value)."""
    rows = []
    for r in records:
        m = r["metrics"]
        bench = m.get("benchmark") or {}
        rows.append({"key": r["key"], **{k: _text(r["values"][k]) for k in keys},
                     **{name: _num(m.get(name)) for name in METRICS},
                     "trades": int(m.get("trades") or 0), "costs": _num(m["costs"]["total"]),
                     "benchmark_return": _num(bench.get("total_return")), "days": int(m.get("days") or 0),
                     "elapsed_ms": _num(r.get("elapsed_ms"))})
    return pd.DataFrame(rows, columns=["key", *keys, *METRICS, "trades", "costs", "benchmark_return", "days",
                                       "elapsed_ms"])


def ranked(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best first by `metric` (lower first for volatility and turnover); runs without a value last."""
    return frame.sort_values(metric, ascending=metric in LOWER_IS_BETTER, na_position="last", kind="stable")


def fmt(x: Any, metric: str = "") -> str:
    x = _num(x)
    if math.isnan(x):
        return "n/a"
    return f"{x * 100:+.2f}%" if metric in PERCENT else f"{x:,.3f}"


def line(m: Mapping[str, Any], metric: str) -> str:
    """A finished run's figures in one line (the chosen metric first)."""
    names = [metric] + [n for n in ("cagr", "mdd", "sharpe") if n != metric]
    return "  ".join(f"{n} {fmt(m.get(n), n)}" for n in names)


def heatmap_keys(text: str | None, grid: Mapping[str, list]) -> tuple[str, str] | None:
    """`--heatmap X,Y` checked against the grid; by default the first two parameters with several values."""
    if text:
        keys = [k.strip() for k in text.split(",")]
        if len(keys) != 2 or keys[0] == keys[1] or any(k not in grid for k in keys):
            raise BacktestError(f"bad --heatmap {text!r}: expected two different grid parameters X,Y of "
                                f"{', '.join(grid)}")
        return keys[0], keys[1]
    several = [k for k, v in grid.items() if len(v) > 1]
    return (several[0], several[1]) if len(several) >= 2 else None


def spread(frame: pd.DataFrame, metric: str) -> dict[str, Any]:
    values = frame[metric].dropna()
    if values.empty:
        return {"metric": metric, "runs": 0}
    q = values.quantile([0, 0.25, 0.5, 0.75, 1]).tolist()
    return {"metric": metric, "runs": int(len(values)), "min": q[0], "q1": q[1], "median": q[2], "q3": q[3],
            "max": q[4]}


def write(out: Any, spec: Mapping[str, Any], keys: Sequence[str], records: Sequence[Mapping[str, Any]],
          bench: pd.Series | None, bench_ticker: str, *, metric: str = DEFAULT_METRIC,
          heatmap: Sequence[str] | None = None) -> dict:
    """Write the three files into `out`; returns {"best": the best run's row, "spread", "files"}."""
    if not records:
        raise BacktestError("no finished run to report")
    frame = table(records, keys)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic.write_bytes(out / FILES["parquet"], buf.getvalue())
    atomic.write_text(out / FILES["csv"], frame.to_csv(index=False))
    order = ranked(frame, metric)
    by_key = {r["key"]: r for r in records}
    best_row = order.iloc[0]
    best = {"key": best_row["key"], **by_key[best_row["key"]]["values"],
            **{n: (None if math.isnan(_num(best_row[n])) else float(best_row[n])) for n in METRICS}}
    summary = {"best": best, "spread": spread(frame, metric), "files": dict(FILES)}
    top = [by_key[k] for k in order["key"].iloc[:BEST]]
    page = _html(spec, keys, frame, order, metric, summary["spread"], heatmap, _chart(top, keys, bench, bench_ticker))
    atomic.write_text(out / FILES["report"], page)
    return summary


# --- report.html -----------------------------------------------------------------------------------------------


def _label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return " ".join(f"{k}={json.dumps(values[k])}" for k in keys)


def _chart(top: Sequence[Mapping[str, Any]], keys: Sequence[str], bench: pd.Series | None, bench_ticker: str) -> bytes:
    """The best runs' equity curves and the benchmark's (scaled to the same start), as PNG bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    # the same lock and style as the backtest report: rcParams are global and the worker renders from threads
    with report._RENDER_LOCK, matplotlib.rc_context(report._STYLE):
        fig = Figure(figsize=(10, 4.8), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        first = None
        for i, r in enumerate(top, 1):
            eq = pd.Series(r["equity"], index=pd.to_datetime(r["dates"]), dtype=float)
            first = eq if first is None else first
            ax.plot(eq.index, eq.to_numpy(), lw=1.4, label=f"#{i} {_label(r['values'], keys)}"[:90])
        if bench is not None and first is not None:
            curve = mx.benchmark_curve(bench, first)
            ax.plot(curve.index, curve.to_numpy(), color="#555555", lw=1.2, ls="--", label=f"benchmark {bench_ticker}")
        ax.yaxis.set_major_formatter(FuncFormatter(report._money))
        ax.set_ylabel("Equity (KRW)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", frameon=False, fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def _cell(value: Any, metric: str) -> str:
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        v = float(value)
        shown = fmt(v, metric) if metric in METRICS or metric in PERCENT or metric == "costs" else f"{v:g}"
        if metric == "costs":
            shown = "n/a" if math.isnan(v) else f"{v:,.0f}"
        return f'<td data-v="{"" if math.isnan(v) else repr(v)}">{html.escape(shown)}</td>'
    return f'<td data-v="{html.escape(str(value))}">{html.escape(str(value))}</td>'


def _color(x: float, lo: float, hi: float, lower_better: bool) -> str:
    if math.isnan(x) or hi <= lo:
        return "#f4f4f4"
    t = (x - lo) / (hi - lo)
    t = 1 - t if lower_better else t
    r, g = (230, int(120 + 110 * t * 2)) if t < 0.5 else (int(230 - 110 * (t - 0.5) * 2), 230)
    return f"rgb({r},{g},140)"


def _heatmap(frame: pd.DataFrame, keys: Sequence[str], metric: str, xy: Sequence[str]) -> str:
    x, y = xy
    pivot = frame.pivot_table(index=y, columns=x, values=metric, aggfunc="mean", dropna=False, sort=False)
    lo, hi = float(frame[metric].min()), float(frame[metric].max())
    others = [k for k in keys if k not in xy]
    note = f" (the mean over {', '.join(others)})" if others else ""
    head = "".join(f"<th>{html.escape(f'{x}={c}')}</th>" for c in pivot.columns)
    body = "".join(
        f"<tr><th>{html.escape(f'{y}={i}')}</th>" + "".join(
            f'<td style="background:{_color(float(v), lo, hi, metric in LOWER_IS_BETTER)}">{fmt(v, metric)}</td>'
            for v in row) + "</tr>" for i, row in zip(pivot.index, pivot.to_numpy(), strict=True))
    return (f"<h2>{html.escape(metric)} by {html.escape(x)} and {html.escape(y)}{html.escape(note)}</h2>"
            f'<table class="heat"><tr><th></th>{head}</tr>{body}</table>')


_CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:right}th{background:#f0f0f0;cursor:pointer}td:first-child,th:first-child{text-align:left}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:10px 14px;margin:12px 0}
.heat td{text-align:center;min-width:70px}img{max-width:100%}.muted{color:#666;font-size:12px}"""
_SORT_JS = """document.querySelectorAll('table.sortable th').forEach(function(th,i){th.onclick=function(){
var t=th.closest('table'),b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort(function(a,c){var x=a.cells[i].dataset.v,y=c.cells[i].dataset.v,nx=parseFloat(x),ny=parseFloat(y);
if(x===''&&y!=='')return 1;if(y===''&&x!=='')return -1;
var d=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?d:-d;});
rows.forEach(function(r){b.appendChild(r);});};});"""


def _html(spec: Mapping[str, Any], keys: Sequence[str], frame: pd.DataFrame, order: pd.DataFrame, metric: str,
          sp: Mapping[str, Any], heatmap: Sequence[str] | None, chart: bytes) -> str:
    n = len(frame)
    best = order.iloc[0]
    warn = (f"<b>In-sample selection.</b> The best of {n} runs was chosen on the same data that ranks it, so its "
            f"{html.escape(metric)} ({fmt(best[metric], metric)}) overstates what the same parameters would do on "
            f"days the sweep has not seen. Across the grid {html.escape(metric)} spreads from "
            f"{fmt(sp.get('min'), metric)} to {fmt(sp.get('max'), metric)} "
            f"(median {fmt(sp.get('median'), metric)}, middle half "
            f"{fmt(sp.get('q1'), metric)} to {fmt(sp.get('q3'), metric)}): a best run far above the median, or a "
            "narrow spread, says more about noise than about the parameters. Check the choice on a later window "
            "(a sweep or a backtest with --start after this one's end) before trusting it.")
    cols = list(frame.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(row[c], c) for c in cols) + "</tr>" for _, row in order.iterrows())
    heat = _heatmap(frame, keys, metric, heatmap) if heatmap else \
        '<p class="muted">No heatmap: the grid has fewer than two parameters with several values.</p>'
    grid = ", ".join(f"{k}: {html.escape(json.dumps(v))}" for k, v in spec["grid"].items())
    universe = spec["universe"] if isinstance(spec["universe"], str) else f"{len(spec['universe'])} tickers"
    png = base64.b64encode(chart).decode("ascii")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sweep {html.escape(spec['strategy'])}</title>
<style>{_CSS}</style></head><body>
<h1>Sweep: {html.escape(spec['strategy'])}</h1>
<p>{spec['start']} to {spec['end']}, universe {html.escape(str(universe))}, {n} of {spec['runs']} runs. Grid: {grid}.
Ranked by {html.escape(metric)}.</p>
<div class="warn">{warn}</div>
{heat}
<h2>The best {min(BEST, n)} by {html.escape(metric)} against the benchmark</h2>
<img alt="equity curves" src="data:image/png;base64,{png}">
<h2>Every run</h2><p class="muted">Click a column to sort. Each run's key is the id `krx backtest` gives the same
parameters and window.</p>
<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<script>{_SORT_JS}</script></body></html>
"""
