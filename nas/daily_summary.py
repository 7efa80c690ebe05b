"""`krx ops daily-summary`: after the daily cycle, one Block Kit message to `#invest_ops` saying how the day went.

What it holds: the day's alert headline (buys, sells, holds, core holdings, the next rebalance), the cycle's result,
the overall status and the top risks, the queue, the latest backtest's headline metrics, and the event log's signed
checkpoint (a copy off the box, DESIGN section 9). It goes out under the same switches as every external send
(delivery policy SLACK, sender on, emergency stop off, gate not MOCK_ONLY), once a day however often the cycle
reruns (`--force` sends it again); each day's record is `reports/ops/daily_summary/<YYYYMMDD>.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import anchor, atomic, events, formats, safeio, slack, switches
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.log import event, get, now
from nas import alert, cycle, summary

_log = get("daily_summary")
RECORD_SCHEMA = formats.DAILY_SUMMARY
SHOWN_RISKS = 3
QUEUE = ("pending", "processing", "failed")


def record_path(home: Home, day: str) -> Path:
    return home.reports / "ops" / "daily_summary" / f"{day}.json"


def _read(path: Path) -> dict | None:
    try:
        data = safeio.read_json(path)
    except (OSError, ValueError):  # absent or damaged: that part of the summary says so
        return None
    return data if isinstance(data, dict) else None


def gather(home: Home) -> dict[str, Any]:
    """The day's facts, each part None when its file is missing or unreadable."""
    try:
        scan: dict | None = alert.load_scan(alert.find_scan(home))
    except alert.ScanFileError:
        scan = None
    results = sorted(home.queue("done").glob("*/result.json"), key=lambda p: p.stat().st_mtime)
    risks = summary.build(home)
    day = (scan or {}).get("asof") or now().date().isoformat()
    return {
        "day": day.replace("-", ""), "scan": scan, "receipt": _read(cycle.latest_receipt_path(home)),
        "status": risks["overall_status"], "risks": risks["top_risks"],
        "queue": {k: len(list(home.queue(k).glob("*.json"))) for k in QUEUE if home.queue(k).is_dir()},
        "backtest": _read(results[-1]) if results else None, "checkpoint": anchor.checkpoint_line(home),
    }


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{x * 100:+.2f}%"


def render(facts: Mapping[str, Any]) -> tuple[str, list[dict]]:
    """(plain text, Block Kit blocks) of the summary."""
    scan, receipt, bt = facts["scan"], facts["receipt"], facts["backtest"]
    day = f"{facts['day'][:4]}-{facts['day'][4:6]}-{facts['day'][6:]}"
    lines = []
    if scan:
        counts: dict[str, int] = {}
        for row in scan["rows"]:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        sells = sum(n for s, n in counts.items() if s in alert.SELL_STATES)
        nxt = scan.get("next_rebalance")
        lines.append(f"Alert: BUY {counts.get('BUY', 0)} · SELL {sells} · HOLD {counts.get('HOLD', 0)} · "
                     f"HOLD_CORE {counts.get('HOLD_CORE', 0)} · regime {scan['regime']}"
                     + (f" · next rebalance {nxt}" if nxt else ""))
    else:
        lines.append("Alert: no readable scan")
    lines.append(f"Cycle: {receipt.get('result')} ({receipt.get('reason')})" if receipt else "Cycle: no receipt")
    risks = facts["risks"][:SHOWN_RISKS]
    lines.append(f"Status: {facts['status']}" + "".join(f"\n  - {r.get('severity')} {r.get('code')}: "
                                                        f"{str(r.get('message', ''))[:160]}" for r in risks))
    lines.append("Queue: " + " · ".join(f"{k} {n}" for k, n in facts["queue"].items()))
    if bt:
        m = bt.get("metrics") or {}
        lines.append(f"Backtest {bt.get('id')}: return {_pct(m.get('total_return'))} · CAGR {_pct(m.get('cagr'))} "
                     f"· MDD {_pct(m.get('mdd'))}")
    else:
        lines.append("Backtest: none yet")
    title = f"KRX daily summary {day}"
    blocks = [slack.header(title), *(slack.section(slack.escape(line)) for line in lines),
              slack.context(slack.escape(facts["checkpoint"]))]
    return "\n".join([title, *lines, facts["checkpoint"]]), blocks


def send(home: Home, notify: Mapping[str, Any], *, force: bool = False) -> int:
    """Print the summary and deliver it once a day by `notify`'s policy; returns the exit code."""
    facts = gather(home)
    text, blocks = render(facts)
    print(text, flush=True)
    path = record_path(home, facts["day"])
    previous = _read(path) if path.exists() else {}
    if previous is None:  # fail closed: a damaged record may hide a send
        previous = {"sends": [{"sent_at": "unknown"}]}
    sends = list(previous.get("sends", []))

    def done(rc: int, reason: str, level: int = logging.INFO) -> int:
        atomic.write_json(path, {"schema": RECORD_SCHEMA, "day": facts["day"], "text": text, "reason": reason,
                                 "sends": sends})
        event(_log, "DAILY_SUMMARY", reason, rc=rc, level=level)
        return rc

    if notify["delivery_policy"] != "SLACK":
        return done(EXIT_OK, f"delivery_policy is {notify['delivery_policy']}: printed only")
    if sends and not force:
        return done(EXIT_OK, f"already sent at {sends[-1].get('sent_at')} (use --force to send again)")
    allowed, why = switches.external_send_allowed(home)
    if not allowed:
        return done(EXIT_OK, f"not sent: {why}", logging.WARNING)
    sender = slack.sender(notify["slack"]["channel"])
    if sender is None:
        return done(EXIT_FAILED, f"not sent: no {slack.TOKEN_ENV} or {slack.WEBHOOK_ENV}", logging.ERROR)
    try:
        receipt = sender.send(slack.build_messages(blocks, text))
    except slack.SlackSendError as exc:
        return done(EXIT_FAILED, f"send failed: {exc}", logging.ERROR)
    sends.append(receipt.to_dict())
    events.append_quietly(home, "daily_summary_sent", day=facts["day"], channel=receipt.channel, ts=receipt.ts)
    return done(EXIT_OK, f"sent to {receipt.channel}")
