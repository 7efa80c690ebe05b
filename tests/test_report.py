"""pc.report: the four files of a result, from a small hand-built run (no engine involved)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from pc import metrics, report


def _run():
    idx = pd.bdate_range("2024-01-02", periods=300)
    rng = np.random.default_rng(7)
    equity = pd.Series(1e8 * np.cumprod(1 + rng.normal(0.0004, 0.01, len(idx))), index=idx)
    cash = equity * 0.1
    exposure = pd.Series(0.9, index=idx)
    trades = pd.DataFrame({
        "date": [idx[0], idx[0], idx[100]], "ticker": ["005930", "<b>&x", "005930"],
        "side": ["BUY", "BUY", "SELL"], "shares": [100.0, 10.0, 100.0], "price": [70000.0, 1000.0, 75000.0],
        "value": [7e6, 1e4, 7.5e6], "commission": [105.0, 1.5, 112.5], "tax": [0.0, 0.0, 17250.0],
        "slippage": [7000.0, 10.0, 7500.0], "reason": ["BUY", "BUY", "SELL_REPLACE"],
    })
    positions = pd.DataFrame({"ticker": ["<b>&x"], "shares": [10.0], "entry_date": [idx[0]],
                              "entry_price": [1000.0]})
    bench_prices = pd.Series(30000 * np.cumprod(1 + rng.normal(0.0002, 0.009, len(idx))), index=idx)
    return equity, cash, exposure, trades, positions, bench_prices


def _result(tmp_path, strategy="momentum_topN_v1"):
    equity, cash, exposure, trades, positions, bench_prices = _run()
    m = metrics.compute(equity, exposure=exposure, trades=trades, benchmark=bench_prices, benchmark_ticker="069500")
    frame = report.equity_frame(equity, cash, exposure, metrics.benchmark_curve(bench_prices, equity))
    result = report.build_result(
        id="r1", strategy=strategy, params={"top_n": 5, "note": "<script>alert(1)</script>"},
        data={"first_date": "2024-01-02", "last_date": frame["date"].iloc[-1], "tickers": 2, "content_hash": "abc"},
        metrics=m, elapsed_ms=12.3, extra={"notes": ["only 41 rows <of> history"]})
    return report.write(tmp_path / "out", result, frame, trades, positions), frame


def test_writes_four_files_and_result_fits_the_shape(tmp_path):
    written, frame = _result(tmp_path)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["equity.csv", "report.html", "result.json", "trades.csv"]
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    report.check_result(result)
    assert result == json.loads(json.dumps(written))
    assert result["schema"] == "backtest_result/1" and result["status"] == "ok" and result["elapsed_ms"] == 12
    assert result["files"] == {"result": "result.json", "equity": "equity.csv", "trades": "trades.csv",
                               "report": "report.html"}
    assert result["code_version"] and result["code_version"] != "unknown"
    assert result["metrics"]["benchmark"]["ticker"] == "069500"

    eq = pd.read_csv(out / "equity.csv")
    assert list(eq.columns) == ["date", "equity", "cash", "exposure", "drawdown", "benchmark"]
    assert len(eq) == 300 and eq["date"].iloc[0] == "2024-01-02"
    assert eq["drawdown"].max() == 0 and eq["drawdown"].min() == pytest.approx(result["metrics"]["mdd"])
    assert eq["benchmark"].iloc[0] == pytest.approx(eq["equity"].iloc[0])
    tr = pd.read_csv(out / "trades.csv", dtype={"ticker": str})
    assert list(tr.columns) == report.TRADE_COLUMNS
    assert tr["ticker"].tolist() == ["005930", "<b>&x", "005930"] and tr["date"].iloc[2] == "2024-05-21"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_html_embeds_a_png_and_the_tables_and_escapes_text(tmp_path):
    written, _ = _result(tmp_path, strategy="s<i>1</i>")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found
    png = base64.b64decode(found.group(1))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert 'class="metrics"' in page and 'class="by-year"' in page
    for year in ("2024", "2025"):
        assert f"<td class=\"\">{year}</td>" in page
    cagr = written["metrics"]["cagr"]
    assert f"{cagr * 100:+.2f}%" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<i>1</i>" not in page and "s&lt;i&gt;1&lt;/i&gt;" in page
    assert "&lt;b&gt;&amp;x" in page  # a ticker from the data is text too
    assert "<li>only 41 rows &lt;of&gt; history</li>" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_check_result_names_the_field():
    good = report.build_result(id="x", strategy="s", params={}, data={"first_date": "a", "last_date": "b",
                               "tickers": 1, "content_hash": "h"}, metrics=metrics.compute(
                               pd.Series([1.0, 1.1], index=pd.bdate_range("2024-01-01", periods=2))), elapsed_ms=1)
    report.check_result(good)
    bad = json.loads(json.dumps(good))
    del bad["data"]["content_hash"]
    with pytest.raises(ValueError, match="data.content_hash: missing"):
        report.check_result(bad)
    bad = json.loads(json.dumps(good))
    bad["schema"] = "backtest_result/2"
    with pytest.raises(ValueError, match="schema"):
        report.check_result(bad)


def test_chart_ignores_a_global_font_switch(tmp_path, caplog):
    """pykrx sets matplotlib's global font at import; the chart pins its own and still renders."""
    import matplotlib

    equity, cash, exposure, _, _, bench = _run()
    frame = report.equity_frame(equity, cash, exposure, metrics.benchmark_curve(bench, equity))
    with matplotlib.rc_context({"font.family": "NoSuchFont-KR"}), \
            caplog.at_level("WARNING", logger="matplotlib.font_manager"):
        png = report.chart_png(frame, "title")
    assert png.startswith(b"\x89PNG")
    # a chart drawn with the global font would look it up ("findfont: Font family 'NoSuchFont-KR' not found")
    assert not [r for r in caplog.records if "NoSuchFont-KR" in r.getMessage()]
