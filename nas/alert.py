"""`krx alert [--date D] [--force]`: render the day's alert from the scan and deliver it.

Input: `reports/signals/signals_<YYYYMMDD>.json` (schema `scan_result/1`, written by `krx scan`); default: the
latest one. Output: the alert printed, and `reports/outbox/<YYYYMMDD>.json` holding the messages exactly as they
are (or would be) sent, plus every send that happened (`sends`: sent_at, channel, ts, via).

Delivery (configs/notify.yaml `delivery_policy`):
- CONSOLE_ONLY (default): printed and written to the outbox, nothing leaves the machine;
- SLACK: posted through common.slack, but only when `common.switches.external_send_allowed` says so (emergency
  stop off, sender on, gate not MOCK_ONLY); otherwise printed and written with the reason, WARNING, exit 0.
The same day's alert is never sent twice unless --force. Exit 3: missing or malformed scan file, no Slack
credentials under the SLACK policy, or a send that failed after slack-sdk's bounded retries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import atomic, book, config, events, formats, locks, rules, safeio, schemas, slack, switches
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK, AlertorError
from common.home import Home
from common.log import event, get, now, setup_logging

log = get("alert")

SCAN_SCHEMA = schemas.SCAN_RESULT
SCAN_MAX_BYTES = 64 << 20  # a whole-market scan is a few MB
LOCK_WAIT_S = 900.0  # a send with slack-sdk's bounded retries ends well within this
OUTBOX_SCHEMA = formats.ALERT_OUTBOX
SIGNALS_RE = re.compile(r"^signals_(\d{8})\.json$")
REGIMES = ("ON", "OFF", "DISABLED")
# the states a scan row can have: the strategy's (common.rules) and the book's DELISTED
SELL_STATES = (*(rules.STATES[c] for c in rules.SELL_STATES), book.DELISTED)
STATES = ("BUY", "HOLD", "HOLD_CORE", *SELL_STATES)
# (title, states) in the order a reader acts on them
SECTIONS = (("BUY", ("BUY",)), ("SELL", SELL_STATES), ("HOLD_CORE", ("HOLD_CORE",)), ("HOLD", ("HOLD",)))


class ScanFileError(AlertorError, ValueError):
    """The scan file is missing or malformed: names the file and the field."""

    def __init__(self, path: Path, field: str, expected: str):
        self.path, self.field = path, field
        super().__init__(f"{path}: {field}: {expected}")


# --- reading the scan -------------------------------------------------------------------------------------------


def signals_dir(home: Home) -> Path:
    return home.reports / "signals"


def outbox_path(home: Home, day: str) -> Path:
    return home.reports / "outbox" / f"{day}.json"


def find_scan(home: Home, date: dt.date | None = None) -> Path:
    """The scan file of `date`, or the latest one."""
    folder = signals_dir(home)
    if date is not None:
        path = folder / f"signals_{date:%Y%m%d}.json"
        if not path.is_file():
            raise ScanFileError(path, "<file>", "no such scan file (run `krx scan` for that date first)")
        return path
    found = sorted(p for p in folder.glob("signals_*.json") if SIGNALS_RE.match(p.name)) if folder.is_dir() else []
    if not found:
        raise ScanFileError(folder / "signals_<YYYYMMDD>.json", "<file>", "no scan file yet (run `krx scan` first)")
    return found[-1]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _require(path: Path, obj: dict, key: str, ok, expected: str, where: str = "") -> Any:
    field = f"{where}{key}"
    if key not in obj:
        raise ScanFileError(path, field, f"missing (expected {expected})")
    if not ok(obj[key]):
        raise ScanFileError(path, field, f"expected {expected}, got {obj[key]!r}")
    return obj[key]


def load_scan(path: Path) -> dict:
    """The scan result, validated: every field the alert uses is checked, the first bad one is named."""
    try:
        data = safeio.read_bytes(path, SCAN_MAX_BYTES)
    except FileNotFoundError:
        raise ScanFileError(path, "<file>", "no such scan file") from None
    except (OSError, ValueError) as exc:
        raise ScanFileError(path, "<file>", f"a readable regular file ({getattr(exc, 'strerror', None) or exc})") \
            from None
    try:
        scan = safeio.loads_json(data)
    except ValueError as exc:
        raise ScanFileError(path, "<file>", f"valid JSON ({exc})") from None
    if not isinstance(scan, dict):
        raise ScanFileError(path, "<top>", "a JSON object")
    _require(path, scan, "schema", lambda v: v == SCAN_SCHEMA, repr(SCAN_SCHEMA))
    _require(path, scan, "strategy", lambda v: isinstance(v, str) and v, "a strategy name")
    _require(path, scan, "asof", schemas.is_date, "a date YYYY-MM-DD")
    if scan.get("next_trading_day") is not None:
        _require(path, scan, "next_trading_day", schemas.is_date, "a date YYYY-MM-DD")
    _require(path, scan, "regime", lambda v: v in REGIMES, "one of " + ", ".join(REGIMES))
    for key in ("universe_size", "after_filters"):
        _require(path, scan, key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                 "a count >= 0")
    rows = _require(path, scan, "rows", lambda v: isinstance(v, list), "a list of rows")
    for i, row in enumerate(rows):
        where = f"rows[{i}]."
        if not isinstance(row, dict):
            raise ScanFileError(path, f"rows[{i}]", "expected an object {ticker, name, state, score, ...}")
        _require(path, row, "ticker", lambda v: isinstance(v, str) and v, "a ticker string", where)
        _require(path, row, "name", lambda v: isinstance(v, str), "a name string", where)
        _require(path, row, "state", lambda v: v in STATES, "one of " + ", ".join(STATES), where)
        _require(path, row, "score", lambda v: v is None or _number(v), "a number or null", where)
        _require(path, row, "rank", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
                 "an integer or null", where)
        _require(path, row, "reason", lambda v: isinstance(v, str), "a reason string", where)
        _require(path, row, "close", lambda v: v is None or _number(v), "a number or null", where)
    excluded = scan.get("excluded", [])
    if not isinstance(excluded, list):
        raise ScanFileError(path, "excluded", f"expected a list of {{ticker, reason}}, got {excluded!r}")
    for i, item in enumerate(excluded):
        if not isinstance(item, dict):
            raise ScanFileError(path, f"excluded[{i}]", "expected an object {ticker, reason}")
        _require(path, item, "ticker", lambda v: isinstance(v, str), "a ticker string", f"excluded[{i}].")
        _require(path, item, "reason", lambda v: isinstance(v, str), "a reason string", f"excluded[{i}].")
    cid = scan.get("correlation_id")
    if cid is not None and not isinstance(cid, str):
        raise ScanFileError(path, "correlation_id", f"expected a string, got {cid!r}")
    return scan


# --- rendering ----------------------------------------------------------------------------------------------------


@dataclass
class Alert:
    day: str                  # YYYYMMDD of the scan (the outbox's name)
    text: str                 # what the console shows and Slack's fallback text
    blocks: list[dict]        # Block Kit


def _score(v: Any) -> str:
    return "n/a" if v is None else f"{v:+.4f}"


def _line(row: dict, show_state: bool) -> tuple[str, str]:
    """(plain, mrkdwn) line of one row."""
    state = f"[{row['state']}] " if show_state else ""
    rank = f" #{row['rank']}" if row.get("rank") is not None else ""
    order = row.get("order")
    todo = f" — {'buy' if order > 0 else 'sell'} {abs(order):,.0f} shares at the open" if order else ""
    plain = (f"  - {state}{row['name']} ({row['ticker']}) score {_score(row['score'])}{rank} — {row['reason']}"
             f"{todo}")
    md = (f"• {slack.escape(state)}*{slack.escape(row['name'])}* ({slack.escape(row['ticker'])}) "
          f"score `{_score(row['score'])}`{rank} — {slack.escape(row['reason'])}{slack.escape(todo)}")
    return plain, md


def _regime_text(regime: str) -> str:
    return {"ON": "ON", "OFF": "OFF (no new buys)", "DISABLED": "DISABLED (regime filter off)"}[regime]


def render(scan: dict) -> Alert:
    """The alert: a header, then BUY, SELL_* (with each row's state), HOLD_CORE and HOLD sections."""
    asof = dt.date.fromisoformat(scan["asof"])
    nxt = scan.get("next_trading_day")
    title = f"KRX alert {asof.isoformat()}" + (f" (for {nxt})" if nxt else "")
    facts = (f"regime {_regime_text(scan['regime'])} · universe {scan['universe_size']:,} · "
             f"candidates after filters {scan['after_filters']:,} · strategy {scan['strategy']}")
    if isinstance(scan.get("partial"), dict):  # KRX failed and a fallback filled in a few tickers
        facts += f" · {scan['partial'].get('reason', 'partial data: no new buys')}"
    if "rebalance_day" in scan:
        when = "today is a rebalance day" if scan["rebalance_day"] else "no rebalance today"
        nxt_reb = scan.get("next_rebalance")
        facts += f" · {when}" + (f", next rebalance {nxt_reb}" if nxt_reb else "")
    plain = [title, facts]
    blocks = [slack.header(title), slack.context(slack.escape(facts))]
    rows = sorted(scan["rows"], key=lambda r: (r.get("rank") is None, r.get("rank") or 0, r["ticker"]))
    for name, states in SECTIONS:
        picked = [r for r in rows if r["state"] in states]
        plain.append("")
        plain.append(f"{name} ({len(picked)})")
        md = [f"*{name}* ({len(picked)})"]
        for row in picked:
            p, m = _line(row, show_state=len(states) > 1)
            plain.append(p)
            md.append(m)
        if not picked:
            plain.append("  none")
            md.append("_none_")
        blocks.append(slack.section("\n".join(md)))  # common.slack splits sections over 3000 characters
    excluded = scan.get("excluded") or []
    if excluded:
        counts: dict[str, int] = {}
        for item in excluded:
            counts[item["reason"]] = counts.get(item["reason"], 0) + 1
        summary = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        plain += ["", f"excluded {len(excluded)}: {summary}"]
        blocks.append(slack.context(slack.escape(f"excluded {len(excluded)}: {summary}")))
    return Alert(f"{asof:%Y%m%d}", "\n".join(plain), blocks)


# --- the job ------------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date, help="the scan's date (default: the latest scan file)")
    p.add_argument("--force", action="store_true", help="send again even if today's alert was already sent")


def read_outbox(path: Path) -> dict | None:
    """The day's outbox; {} when there is none, None when it exists but cannot be read (it may record a send)."""
    try:
        data = safeio.read_json(path, SCAN_MAX_BYTES)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    sends = data.get("sends", [])
    if not isinstance(sends, list) or not all(isinstance(s, dict) for s in sends):
        return None  # the record of what went out is damaged: it may hide a send
    return data


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    setup_logging("alert", home)
    return deliver(home, args.date, force=args.force, notify=config.load("notify", home))


def deliver(home: Home, day: dt.date | None = None, *, force: bool = False, notify: Mapping[str, Any]) -> int:
    """Render the scan of `day` (default: the latest), print it, write the outbox and deliver it by `notify`'s
    policy, at most once a day (`force`: again); returns the exit code. One alert run at a time, however it was
    started (cron wrapper, the cycle, by hand): the outbox is read, the message posted and the send recorded
    under the lock, so the next run sees the send and posts nothing."""
    try:
        with locks.job_lock(home, "alert", wait_s=LOCK_WAIT_S):
            return _deliver(home, day, force, notify)
    except locks.LockBusy as exc:
        event(log, "ALERT_FAILED", f"{exc}: another alert run is still delivering", rc=EXIT_FAILED,
              level=logging.ERROR)
        return EXIT_FAILED


def _deliver(home: Home, day: dt.date | None, force: bool, notify: Mapping[str, Any]) -> int:
    started = time.monotonic()
    policy, channel = notify["delivery_policy"], notify["slack"]["channel"]

    try:
        path = find_scan(home, day)
        scan = load_scan(path)
    except ScanFileError as exc:
        event(log, "ALERT_FAILED", f"scan file {exc}", rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    cid = scan.get("correlation_id") or events.correlation_id(scan["asof"], scan["strategy"])
    alert = render(scan)
    print(alert.text, flush=True)

    messages = slack.build_messages(alert.blocks, alert.text)
    box_path = outbox_path(home, alert.day)
    previous = read_outbox(box_path)
    if previous is None:  # fail closed: a damaged outbox may hide a send, so it counts as one
        sends: list[dict] = [{"sent_at": "unknown", "channel": "unknown", "note": f"{box_path.name} was unreadable"}]
    elif previous.get("date") == scan["asof"]:
        sends = list(previous.get("sends", []))
    else:
        sends = []
    events.append(home, "alert_rendered", correlation_id=cid, date=scan["asof"], policy=policy,
                  rows=len(scan["rows"]), messages=len(messages), scan_file=path.name)

    sender = slack.sender(channel)  # built without any network call: it shapes the payloads even for the console
    # the payloads exactly as they go (or would go) over the wire; web API form when no credentials are set
    payloads = sender.payloads(messages) if sender else [{"channel": channel, "text": m.text, "blocks": m.blocks}
                                                          for m in messages]
    box: dict[str, Any] = {
        "schema": OUTBOX_SCHEMA, "date": scan["asof"], "next_trading_day": scan.get("next_trading_day"),
        "correlation_id": cid, "scan_file": str(path.relative_to(home.root)) if path.is_relative_to(home.root)
        else str(path), "policy": policy, "channel": channel, "via": sender.via if sender else None,
        "rendered_at": now().isoformat(timespec="seconds"), "payloads": payloads,
        "sent": False, "reason": "", "sends": sends,
    }

    def finish(rc: int, reason: str, *, sent: dict | None = None) -> int:
        box["reason"] = reason
        if sent:
            box["sends"] = [*sends, sent]
        box["sent"] = bool(box["sends"])  # this day's alert has gone out (now or before)
        atomic.write_json(box_path, box)
        return rc

    if policy != "SLACK":
        rc = finish(EXIT_OK, f"delivery_policy is {policy}: printed only")
        event(log, "ALERT_DONE", f"date={scan['asof']} console only; outbox {box_path.name}", rc=rc,
              elapsed_ms=(time.monotonic() - started) * 1000)
        return rc
    if sends and not force:
        last = sends[-1]
        reason = f"already sent at {last.get('sent_at')} to {last.get('channel')} (use --force to send again)"
        events.append(home, "alert_suppressed", correlation_id=cid, date=scan["asof"], reason=reason)
        rc = finish(EXIT_OK, reason)
        event(log, "ALERT_SUPPRESSED", reason, rc=rc, level=logging.WARNING)
        return rc
    allowed, why = switches.external_send_allowed(home)
    if not allowed:
        reason = f"not sent: {why}"
        events.append(home, "alert_suppressed", correlation_id=cid, date=scan["asof"], reason=reason)
        rc = finish(EXIT_OK, reason)
        event(log, "ALERT_SUPPRESSED", f"{reason}; printed and written to {box_path.name}", rc=rc,
              level=logging.WARNING)
        return rc
    if sender is None:
        reason = f"not sent: delivery_policy is SLACK but neither {slack.TOKEN_ENV} nor {slack.WEBHOOK_ENV} is set"
        events.append(home, "alert_send_failed", correlation_id=cid, date=scan["asof"], reason=reason)
        rc = finish(EXIT_FAILED, reason)
        event(log, "ALERT_SEND_FAILED", reason, rc=rc, level=logging.ERROR)
        return rc
    try:
        receipt = sender.send(messages)
    except slack.SlackSendError as exc:
        reason = f"send failed: {exc}"
        events.append(home, "alert_send_failed", correlation_id=cid, date=scan["asof"], channel=channel,
                      via=sender.via, error=str(exc), status=exc.status, parts_sent=len(exc.sent_ts))
        partial = None
        if exc.sent_ts:  # the parts that did go out are a send: a rerun must not post them again
            reason += f" ({len(exc.sent_ts)} of {len(messages)} parts went out; --force sends all again)"
            partial = {"via": sender.via, "channel": channel, "ts": exc.sent_ts,
                       "sent_at": now().isoformat(timespec="seconds"), "parts": len(exc.sent_ts),
                       "partial": True, "forced": bool(sends)}
        rc = finish(EXIT_FAILED, reason, sent=partial)
        event(log, "ALERT_SEND_FAILED", reason, rc=rc, level=logging.ERROR,
              elapsed_ms=(time.monotonic() - started) * 1000)
        return rc
    sent = {**receipt.to_dict(), "forced": bool(sends)}
    events.append(home, "alert_sent", correlation_id=cid, date=scan["asof"], channel=receipt.channel,
                  via=receipt.via, message_ts=receipt.ts, parts=receipt.parts, forced=bool(sends))
    rc = finish(EXIT_OK, "sent", sent=sent)
    event(log, "ALERT_SENT", f"date={scan['asof']} channel={receipt.channel} via={receipt.via} "
          f"parts={receipt.parts}", rc=rc, elapsed_ms=(time.monotonic() - started) * 1000)
    return rc
