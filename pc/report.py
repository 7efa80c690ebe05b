"""The outputs of one backtest, in the `backtest_result/1` shape (DESIGN section 7), written into one folder:

    result.json   schema, id, status, strategy, params, data, metrics, files, code_version, elapsed_ms
    equity.csv    date, equity, cash, exposure, drawdown, benchmark
    trades.csv    date, ticker, side, shares, price, value, commission, tax, slippage, reason
    report.html   self-contained: the equity and drawdown chart (an embedded PNG), the metrics, the years

Each file is written atomically; result.json last, so a folder holding it holds everything.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from common import atomic, formats
from common.book import TRADE_COLUMNS
from common.log import now
from pc import metrics as mx

SCHEMA = formats.BACKTEST_RESULT
FILES = {"result": "result.json", "equity": "equity.csv", "trades": "trades.csv", "report": "report.html"}
EQUITY_COLUMNS = ["date", "equity", "cash", "exposure", "drawdown", "benchmark"]
REQUIRED = {
    "": ("schema", "id", "status", "strategy", "params", "data", "metrics", "files", "code_version", "elapsed_ms"),
    "data": ("first_date", "last_date", "tickers", "content_hash"),
    "metrics": ("total_return", "cagr", "mdd", "sharpe", "sortino", "calmar", "volatility", "turnover", "win_rate",
                "exposure", "costs", "by_year", "benchmark"),
    "files": tuple(FILES),
}
REPO = Path(__file__).resolve().parent.parent

# rcParams are global and the worker renders from several threads; pykrx also switches the global font at
# import. Rendering holds this lock and pins its own style, so a chart never depends on who imported what.
_RENDER_LOCK = threading.Lock()
_STYLE = {"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "axes.unicode_minus": True,
          "font.size": 9}


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the repository when it is a checkout with git at hand, else the package version."""
    if (REPO / ".git").exists():
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=REPO, capture_output=True,
                                 text=True, timeout=5, check=True).stdout.strip()
            if out:
                return f"git:{out}"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return f"krx-alertor {metadata.version('krx-alertor')}"
    except metadata.PackageNotFoundError:
        return "unknown"


# --- frames ----------------------------------------------------------------------------------------------------


def equity_frame(equity: pd.Series, cash: pd.Series | None = None, exposure: pd.Series | None = None,
                 benchmark: pd.Series | None = None) -> pd.DataFrame:
    """The rows of equity.csv. `benchmark` is the benchmark as an equity curve (metrics.benchmark_curve)."""
    eq = pd.Series(equity, dtype=float)
    idx = eq.index

    def col(s: pd.Series | None) -> pd.Series:
        return pd.Series(float("nan"), index=idx) if s is None else pd.Series(s, dtype=float).reindex(idx)

    return pd.DataFrame({
        "date": pd.DatetimeIndex(idx).strftime("%Y-%m-%d"), "equity": eq.to_numpy(), "cash": col(cash).to_numpy(),
        "exposure": col(exposure).to_numpy(), "drawdown": mx.drawdown(eq).reindex(idx).to_numpy(),
        "benchmark": col(benchmark).to_numpy(),
    })


def trades_frame(trades: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of trades.csv, dates as YYYY-MM-DD, in the engine's column order (extra columns kept after)."""
    if trades is None or not len(trades):
        return pd.DataFrame(columns=TRADE_COLUMNS)
    t = trades.reset_index(drop=True).copy()
    t["date"] = pd.to_datetime(t["date"]).dt.strftime("%Y-%m-%d")
    ordered = [c for c in TRADE_COLUMNS if c in t] + [c for c in t if c not in TRADE_COLUMNS]
    return t[ordered]


# --- result.json -----------------------------------------------------------------------------------------------


def build_result(*, id: str, strategy: str, params: Mapping[str, Any], data: Mapping[str, Any],
                 metrics: Mapping[str, Any], elapsed_ms: float, status: str = "ok",
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A backtest_result/1 object (files filled in by `write`)."""
    out = {
        "schema": SCHEMA, "id": id, "status": status, "strategy": strategy, "params": dict(params),
        "data": dict(data), "metrics": dict(metrics), "files": dict(FILES), "code_version": code_version(),
        "elapsed_ms": int(round(elapsed_ms)),
    }
    out.update(extra or {})
    return out


def check_result(obj: Any) -> None:
    """Raise ValueError naming the first field that does not fit backtest_result/1."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"result: expected an object, got {type(obj).__name__}")
    for section, keys in REQUIRED.items():
        node = obj if not section else obj.get(section)
        if not isinstance(node, Mapping):
            raise ValueError(f"result: {section}: expected an object")
        for key in keys:
            if key not in node:
                raise ValueError(f"result: {section + '.' if section else ''}{key}: missing")
    if obj["schema"] != SCHEMA:
        raise ValueError(f"result: schema: expected {SCHEMA!r}, got {obj['schema']!r}")
    if not isinstance(obj["elapsed_ms"], int) or obj["elapsed_ms"] < 0:
        raise ValueError("result: elapsed_ms: expected a non-negative integer")
    if not isinstance(obj["metrics"]["by_year"], list):
        raise ValueError("result: metrics.by_year: expected a list")
    for key in ("commission", "tax", "slippage", "total"):
        if not isinstance(obj["metrics"]["costs"].get(key), (int, float)):
            raise ValueError(f"result: metrics.costs.{key}: expected a number")
    for key, value in obj["metrics"].items():
        if isinstance(value, float) and value != value:
            raise ValueError(f"result: metrics.{key}: NaN is not JSON")
    json.dumps(obj, allow_nan=False, default=str)


# --- the chart and the page ------------------------------------------------------------------------------------


def chart_png(frame: pd.DataFrame, title: str = "") -> bytes:
    """Equity (and the benchmark) above, drawdown below, as PNG bytes. A Figure object on the Agg canvas:
    nothing touches pyplot's global state."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    dates = pd.to_datetime(frame["date"])
    with _RENDER_LOCK, matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(10, 5.6), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
        top.plot(dates, frame["equity"], color="#1f5fbf", lw=1.6, label="Strategy")
        if frame["benchmark"].notna().any():
            top.plot(dates, frame["benchmark"], color="#888888", lw=1.1, label="Benchmark")
        top.yaxis.set_major_formatter(FuncFormatter(_money))
        top.set_ylabel("Equity (KRW)")
        top.grid(alpha=0.3)
        top.legend(loc="best", frameon=False)
        if title:
            top.set_title(title, loc="left", fontsize=11)
        dd = frame["drawdown"] * 100
        bottom.fill_between(dates, dd, 0, color="#c0392b", alpha=0.35, lw=0)
        bottom.plot(dates, dd, color="#c0392b", lw=0.8)
        low = float(dd.min()) if dd.notna().any() else 0.0
        bottom.set_ylim(min(low * 1.08, -1.0), 0.0)  # a flat curve still gets a readable axis
        bottom.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        bottom.set_ylabel("Drawdown")
        bottom.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def _money(x: float, _pos: Any = None) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(x) >= div:
            return f"{x / div:,.1f}{unit}"
    return f"{x:,.0f}"


def _shares(x: Any) -> str:
    """12,431 for whole shares; fractional shares (fractional_shares: true) keep four decimals."""
    x = float(x)
    return f"{x:,.0f}" if x == int(x) else f"{x:,.4f}"


def _pct(x: Any, sign: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{x * 100:+.2f}%" if sign else f"{x * 100:.2f}%"


def _tone(x: Any) -> str:
    return "" if x is None else ("pos" if x > 0 else "neg" if x < 0 else "")


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], cls: str = "") -> str:
    """rows: cells as (text, css class); every text escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{html.escape(c)}">{html.escape(t)}</td>' for t, c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{html.escape(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Noto Sans KR","Malgun Gothic",sans-serif;margin:24px auto;
max-width:1060px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.sub{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:120px}
.card .k{font-size:12px;color:#666}.card .v{font-size:20px;font-weight:600}
.pos{color:#1a7f37}.neg{color:#c0392b}
img{width:100%;max-width:1000px;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td.indent{padding-left:24px;color:#555}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:32px;align-items:flex-start}
pre{background:#f6f6f6;padding:10px;font-size:12px;overflow:auto}
.notes{background:#fff8e1;border:1px solid #f0d98c;padding:8px 8px 8px 28px;font-size:13px}
footer{margin-top:28px;color:#888;font-size:12px}
"""


def render_html(result: Mapping[str, Any], frame: pd.DataFrame, positions: pd.DataFrame | None = None) -> str:
    """The self-contained page: headline cards, chart, metrics table, by-year table, holdings, parameters."""
    m, d = result["metrics"], result["data"]
    bench = m.get("benchmark") or {}
    title = f"{result['strategy']} · {d['first_date']} → {d['last_date']}"
    png = base64.b64encode(chart_png(frame, title)).decode("ascii")
    cards = [("Total return", m.get("total_return")), ("CAGR", m.get("cagr")), ("MDD", m.get("mdd"))]
    if bench:
        cards += [(f"Benchmark {bench.get('ticker') or ''}", bench.get("total_return")),
                  ("Excess", bench.get("excess_return"))]
    card_html = "".join(f'<div class="card"><div class="k">{html.escape(k)}</div>'
                        f'<div class="v {_tone(v)}">{html.escape(_pct(v))}</div></div>' for k, v in cards)
    sharpe = m.get("sharpe")
    card_html += ('<div class="card"><div class="k">Sharpe</div><div class="v">'
                  f'{"n/a" if sharpe is None else html.escape(f"{sharpe:.2f}")}</div></div>')
    metric_rows = []
    for k, v in mx.headline(m):
        metric_rows.append([(k, ""), (v, _tone(m.get(_KEYS[k])) if k in _KEYS else "")])
        if k == "Costs":  # the parts right under their total
            metric_rows += [[(c.capitalize(), "indent"), (f"{m['costs'][c]:,.0f}", "")]
                            for c in ("commission", "tax", "slippage")]
    metric_rows += [[("Trades", ""), (f"{m.get('trades', 0):,}", "")], [("Days", ""), (f"{m.get('days', 0):,}", "")]]
    has_bench = any("benchmark_return" in y for y in m["by_year"])
    year_headers = ["Year", "Return", "MDD", "Days"] + (["Benchmark", "Excess"] if has_bench else [])
    year_rows = []
    for y in m["by_year"]:
        row = [(str(y["year"]), ""), (_pct(y["return"]), _tone(y["return"])), (_pct(y["mdd"]), _tone(y["mdd"])),
               (str(y["days"]), "")]
        if has_bench:
            row += [(_pct(y.get("benchmark_return")), _tone(y.get("benchmark_return"))),
                    (_pct(y.get("excess_return")), _tone(y.get("excess_return")))]
        year_rows.append(row)
    holdings = ""
    if positions is not None and len(positions):
        rows = [[(str(p.get("ticker", "")), ""), (_shares(p.get("shares", 0)), ""),
                 (str(p.get("entry_date", ""))[:10], ""), (f"{p.get('entry_price', 0):,.0f}", "")]
                for p in positions.to_dict("records")]
        holdings = "<h2>Holdings at the end</h2>" + _table(["Ticker", "Shares", "Entry date", "Entry price"], rows)
    data_rows = [[(k, ""), (str(v), "")] for k, v in (
        ("Result id", result["id"]), ("Data", f"{d['first_date']} to {d['last_date']}, {d['tickers']} tickers"),
        ("Content hash", d["content_hash"]), ("Code version", result["code_version"]),
        ("Generated", now().strftime("%Y-%m-%d %H:%M:%S %Z")))]
    params = json.dumps(result["params"], indent=2, ensure_ascii=False, default=str)
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in result.get("notes") or [])
    notes = f'<ul class="notes">{notes}</ul>' if notes else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(result['strategy'])} backtest</h1>
<div class="sub">{html.escape(d['first_date'])} → {html.escape(d['last_date'])} · {html.escape(str(d['tickers']))}
tickers · status {html.escape(result['status'])} · id {html.escape(result['id'])}</div>
{notes}<div class="cards">{card_html}</div>
<img alt="Equity and drawdown chart" src="data:image/png;base64,{png}">
<div class="grid">
<div><h2>Metrics</h2>{_table(["Metric", "Value"], metric_rows, "metrics")}</div>
<div><h2>By year</h2>{_table(year_headers, year_rows, "by-year")}</div>
</div>
{holdings}
<h2>Run</h2>{_table(["", ""], data_rows)}
<details><summary>Parameters</summary><pre>{html.escape(params)}</pre></details>
<footer>{html.escape(SCHEMA)} · returns are simple daily returns, 252 days a year, risk-free 0 · MDD from the
running peak · turnover two-sided per year · win rate over closed round trips · signals read split-adjusted
prices, holdings are real shares at raw prices · dividends are not modelled</footer>
</body></html>
"""


_KEYS = {"Total return": "total_return", "CAGR": "cagr", "MDD": "mdd", "Excess over benchmark": "excess_return"}


# --- writing ---------------------------------------------------------------------------------------------------


def write(out_dir: str | Path, result: Mapping[str, Any], frame: pd.DataFrame, trades: pd.DataFrame | None,
          positions: pd.DataFrame | None = None) -> dict[str, Any]:
    """Write the four files into `out_dir` (created if needed), result.json last; returns the result written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = dict(result)
    result["files"] = dict(FILES)
    check_result(result)
    atomic.write_text(out / FILES["equity"], frame[EQUITY_COLUMNS].to_csv(index=False, lineterminator="\n"))
    atomic.write_text(out / FILES["trades"], trades_frame(trades).to_csv(index=False, lineterminator="\n"))
    atomic.write_text(out / FILES["report"], render_html(result, frame, positions))
    atomic.write_json(out / FILES["result"], result)
    return result
