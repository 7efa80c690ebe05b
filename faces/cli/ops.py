"""`krx ops`: the safety switches, the event log check, the daily cycle, the risk summary and the secrets self-test.

A thin dispatcher: the state lives in common.switches, common.events, common.operators and common.window, the cycle
in nas.cycle, the summary and status table in nas.summary, the self-test in nas.selftest, the live fire in
nas.live_fire, its postmortem in nas.postmortem. Commands that act as an operator read the token from
KRX_OPERATOR_TOKEN or --token-file; every core refusal is an OpsError whose exit code (2 or 3) is the exit code.
Every command first completes a live fire's lockdown that a killed process left recorded.

  krx ops estop [on|off --reason TEXT]     the emergency stop (no argument: show who set it, when and why)
  krx ops sender [on|off --reason TEXT [--channel SLACK]]   the sender switch (external sends; off on a fresh home)
  krx ops gate [MODE --reason TEXT]        the execution gate: MOCK_ONLY | DRY_RUN | REAL_ENABLED (ACTIVE window only)
  krx ops operator add NAME [--role R] | list | remove NAME   operators; `add` prints the new token once
  krx ops window request --minutes M --reason TEXT | status [ID]     a real-enable window (two-key approval)
  krx ops approve ID --key 1|2             give one key of an approval (by the calling operator)
  krx ops approval status [ID]             the approval's keys, operators, times and TTL (JSON)
  krx ops live-fire run                    the weekly live fire: 0 fired, 2 a precondition blocked, 3 failed
  krx ops postmortem regenerate | latest   the last live fire's postmortem (JSON + Markdown)
  krx ops verify-log                       0 intact, 1 naming the first bad line
  krx ops cycle [--date D]                 the daily cycle: 0 completed (or WARN), 2 blocked, 3 failed
  krx ops live-cycle                       the day's scan and alert push now: 0 completed, 2 blocked, 3 failed
  krx ops summary                          write reports/ops/summary/ops_summary_latest.json
  krx ops status                           the summary as a table, exit 0
  krx ops daily-summary [--force]          the day's Slack summary (after the cycle), once a day
  krx ops self-test                        required secrets present? 0 complete, 1 not
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from common import events, log, operators, switches, window
from common.args import parse_date
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, OpsError
from common.home import Home
from faces import KRX

_log = log.get("ops")


def _token_arg(s: argparse.ArgumentParser) -> argparse.ArgumentParser:
    s.add_argument("--token-file", help=f"a file holding the operator token (default: ${operators.TOKEN_ENV})")
    return s


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ops_command", required=True, metavar="SUBCOMMAND")
    for name, help_text in (("estop", "show or set the emergency stop"), ("sender", "show or set the sender switch")):
        s = _token_arg(sub.add_parser(name, help=help_text, description=help_text))
        s.add_argument("state", nargs="?", choices=["on", "off"])
        s.add_argument("--reason", help="why (required to change it; goes into the event log)")
        if name == "sender":
            s.add_argument("--channel", type=str.upper, choices=list(switches.SENDER_CHANNELS),
                           help="the real channel the live fire sends through")
    s = _token_arg(sub.add_parser("gate", help="show or set the execution gate",
                                  description="show or set the execution gate"))
    s.add_argument("mode", nargs="?", type=str.upper, choices=list(switches.GATE_MODES))
    s.add_argument("--reason", help="why (required to change it; goes into the event log)")
    s = sub.add_parser("operator", help="add, list or remove operators")
    osub = s.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    s = _token_arg(osub.add_parser("add", help="create an operator and print its token once"))
    s.add_argument("name")
    s.add_argument("--role", choices=list(operators.ROLES), default=operators.OPERATOR,
                   help="operator: every action (default); viewer: may only read")
    osub.add_parser("list", help="the operators (never a token)")
    _token_arg(osub.add_parser("remove", help="remove an operator (its token stops working)")).add_argument("name")
    s = sub.add_parser("window", help="request a real-enable window or show one")
    wsub = s.add_subparsers(dest="window_command", required=True, metavar="ACTION")
    w = _token_arg(wsub.add_parser("request", help="request a window and its two-key approval"))
    w.add_argument("--minutes", type=int, required=True, help="how long the window stays ACTIVE once approved")
    w.add_argument("--reason", required=True, help="why (goes into the event log)")
    wsub.add_parser("status", help="a window as JSON (default: the newest)").add_argument("id", nargs="?")
    s = _token_arg(sub.add_parser("approve", help="give key 1 or 2 of an approval"))
    s.add_argument("id", help="the approval's id (or its window's id)")
    s.add_argument("--key", required=True, choices=["1", "2"])
    s = sub.add_parser("approval", help="show an approval")
    s.add_subparsers(dest="approval_command", required=True, metavar="ACTION").add_parser(
        "status", help="an approval as JSON (default: the newest)").add_argument("id", nargs="?")
    s = sub.add_parser("live-fire", help="the weekly live fire")
    _token_arg(s.add_subparsers(dest="live_fire_command", required=True, metavar="ACTION").add_parser(
        "run", help="check the preconditions, deliver the outbox once, lock down"))
    s = sub.add_parser("postmortem", help="the last live fire's postmortem")
    psub = s.add_subparsers(dest="postmortem_command", required=True, metavar="ACTION")
    psub.add_parser("regenerate", help="write postmortem_latest.json and .md from the receipt and the event log")
    psub.add_parser("latest", help="print the latest postmortem").add_argument("--json", action="store_true")
    s = sub.add_parser("verify-log", help="check the event log's hash chain against its signed checkpoints")
    s.add_argument("--reanchor", action="store_true", help="after a tampering was looked into: keep the log "
                   "aside for the audit and start a new chain (needs --reason)")
    s.add_argument("--reason", help="why (with --reanchor; goes into the new log's first event)")
    s = sub.add_parser("cycle", help="run the daily ops cycle")
    s.add_argument("--date", type=parse_date, help="the trading day to run (default: today, Asia/Seoul)")
    _token_arg(sub.add_parser("live-cycle", help="the day's scan and alert push, now (under the cycle's lock)"))
    s = sub.add_parser("summary", help="write the risk summary JSON")
    s.add_argument("--print", action="store_true", help="also print the JSON")
    sub.add_parser("status", help="show switches, the last run and the risks as a table")
    sub.add_parser("self-test", help="which required secrets are present (never their values)")
    s = sub.add_parser("daily-summary", help="post the day's summary to Slack (once a day; after the cycle)")
    s.add_argument("--force", action="store_true", help="send it again although it went out today")


def _show_switch(item: switches.Switch | switches.Gate) -> None:
    value = getattr(item, "mode", None) or ("ON" if item.on else "OFF")
    if not item.readable:
        print(f"{getattr(item, 'name', 'gate')}: UNREADABLE, treated as {value} (fail closed): {item.error}")
        return
    print(f"{getattr(item, 'name', 'gate')}: {value}")
    print(f"  set by: {item.by}")
    print(f"  at:     {item.at or '-'}")
    print(f"  reason: {item.reason or '-'}")
    extra = getattr(item, "channel", None) or getattr(item, "window_id", None)
    if extra:
        print(f"  {'channel' if getattr(item, 'channel', None) else 'window'}: {extra}")


def _switch_command(home: Home, args: argparse.Namespace) -> int:
    cmd = args.ops_command
    value = args.mode if cmd == "gate" else args.state
    show = {"estop": switches.emergency_stop, "sender": switches.sender, "gate": switches.gate_state}[cmd]
    if value is None:
        if args.reason:
            print(f"krx ops {cmd}: --reason without a new value; nothing changed")
            return EXIT_FAILED
        _show_switch(show(home))
        return EXIT_OK
    if not (args.reason or "").strip():
        print(f"krx ops {cmd} {value}: --reason TEXT is required (it goes into the event log)")
        return EXIT_FAILED
    try:
        who = _operator(home, args, f"ops {cmd} {value}")
        if cmd == "estop":
            item = switches.set_emergency_stop(home, value == "on", args.reason, operator=who)
        elif cmd == "sender":
            item = switches.set_sender(home, value == "on", args.reason, operator=who, channel=args.channel)
        else:
            item = switches.set_gate(home, value, args.reason, operator=who)
    except OpsError as exc:
        print(f"krx ops {cmd}: {exc.code}: {exc.message}")
        log.event(_log, "OPS_SWITCH_REFUSED", f"{cmd} {value}: {exc.code}: {exc.message}", rc=exc.exit_code,
                  level=logging.WARNING)
        return exc.exit_code  # a refused change is a safety check doing its job
    log.event(_log, "OPS_SWITCH_SET", f"{cmd}={value} by={item.by} reason={item.reason}", rc=EXIT_OK)
    _show_switch(item)
    return EXIT_OK


def _operator(home: Home, args: argparse.Namespace, action: str, required: bool = False) -> str | None:
    """The calling operator's name; None when no token is given and none is required (then user@host acts)."""
    token = operators.token_from(os.environ, getattr(args, "token_file", None))
    if token is None and not required:
        return None
    return operators.identify(home, token, action=action)


def _print_json(data: object) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _real_path_command(home: Home, args: argparse.Namespace) -> int:
    """operator, window, approve, approval, live-fire and postmortem: OpsError -> its code and exit code."""
    cmd = args.ops_command
    try:
        if cmd == "operator":
            sub = args.operator_command
            if sub == "list":
                for op in operators.listing(home):
                    print(f"{op.name}\t{op.role}\tcreated {op.created_at} by {op.created_by}")
                return EXIT_OK
            who = _operator(home, args, f"ops operator {sub}")
            if sub == "add":
                op, token = operators.add(home, args.name, by=who, role=args.role)
                print(f"operator {op.name} ({op.role}) added. Its token, shown this once and never stored (keep it "
                      f"safe; use it as {operators.TOKEN_ENV} or with --token-file):")
                print(token)
            else:
                print(f"operator {operators.remove(home, args.name, by=who).name} removed")
            return EXIT_OK
        if cmd == "window" and args.window_command == "status" or cmd == "approval":
            view = (window.status(home, args.id) if cmd == "window" else window.approval_status(home, args.id))
            if view is None:
                print(f"no {cmd} yet")
                return EXIT_OK
            _print_json(view)
            return EXIT_OK
        if cmd == "window":
            who = _operator(home, args, "ops window request", required=True)
            view = window.request(home, args.minutes, args.reason, who)
            appr = view["approval"]
            print(f"window {view['id']}: {view['state']} ({view['minutes']} minutes once approved)")
            print(f"approval {appr['id']}: kind {appr['kind']}, expires {appr['expires_at']}")
            print(f"next: two different operators run `krx ops approve {appr['id']} --key 1` and `--key 2`")
            return EXIT_OK
        if cmd == "approve":
            who = _operator(home, args, "ops approve", required=True)
            view = window.approve(home, args.id, args.key, who)
            print(f"approval {view['approval']['id']}: key {args.key} by {who}")
            print(f"window {view['id']}: {view['state']}" + (
                f" until {view['expires_at']}, {view['executions_left']} real execution(s)"
                if view["state"] == window.ACTIVE else ""))
            return EXIT_OK
        if cmd == "live-fire":
            from nas import live_fire

            who = _operator(home, args, "ops live-fire run", required=True)
            receipt = live_fire.run(home, operator=who)
            for c in receipt["preconditions"]:
                print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']:<20} {c['observed']}"
                      + ("" if c["ok"] else f"  [{c['code']}]"))
            for d in receipt["deliveries"]:
                print(f"  sent {d['outbox']}: {d['status']} {', '.join(d.get('message_ids') or [])}")
            print(f"live fire {receipt['run_id']}: {receipt['result']} ({receipt['reason']}); lockdown "
                  f"{receipt['lockdown']['state']} -> {receipt['snapshot']}")
            for code in receipt["failing"]:
                print(f"  {code}: {live_fire.REMEDY.get(code, '')}")
            return receipt["exit_code"]
        if cmd == "postmortem":
            from nas import postmortem

            if args.postmortem_command == "regenerate":
                data, md = postmortem.regenerate(home)
                print(f"postmortem of live fire {data['run_id']}: {data['result']} -> {md}")
                return EXIT_OK
            data, text = postmortem.latest(home)
            if args.json:
                _print_json(data)
            else:
                print(text, end="")
            return EXIT_OK
    except OpsError as exc:
        print(f"krx ops {cmd}: {exc.code}: {exc.message}")
        log.event(_log, "OPS_REFUSED", f"{cmd}: {exc.code}: {exc.message}", rc=exc.exit_code,
                  level=logging.WARNING if exc.exit_code == EXIT_BLOCKED else logging.ERROR)
        return exc.exit_code
    raise AssertionError(f"unknown ops subcommand {cmd}")


def _recover(home: Home) -> None:
    """Complete a live fire's lockdown that a killed process left recorded (before anything else runs)."""
    from nas import live_fire

    try:
        done = live_fire.recover(home)
    except Exception as exc:  # never keeps a command from running; the next command tries again
        print(f"krx ops: could not complete a recorded live fire lockdown: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return
    if done:
        print(f"krx ops: live fire {done['run_id']}: lockdown completed at start ({done['state']}: "
              + ", ".join(f"{k} {v}" for k, v in done["steps"].items()) + ")", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    cmd = args.ops_command
    _recover(home)
    # before logging starts: under MOCK_ONLY not even this process's ERROR log may reach Slack, and the cycle's
    # preflight, summary and self-test judge the configuration MOCK_ONLY really runs with
    switches.enforce_mock_only(home)
    if cmd in ("estop", "sender", "gate"):
        log.setup_logging("ops", home, console=False)
        return _switch_command(home, args)
    if cmd in ("operator", "window", "approve", "approval", "live-fire", "postmortem"):
        log.setup_logging("ops", home, console=False)
        return _real_path_command(home, args)
    if cmd == "verify-log":
        if args.reanchor:
            if not (args.reason or "").strip():
                print("krx ops verify-log --reanchor: --reason TEXT is required (it goes into the new log)")
                return EXIT_FAILED
            aside, _first = events.reanchor(home, args.reason)
            print(f"event log kept aside as {aside}; a new chain starts with EVENT_LOG_REANCHORED")
        ok, line, message = events.verify(home)
        print(message)
        return EXIT_OK if ok else 1
    if cmd == "cycle":
        from nas import cycle

        log.setup_logging("ops", home)
        try:  # the cron cycle and one started by hand never run at once (the wrapper's `--lock daily`)
            rc, receipt = cycle.run_exclusive(home, args.date, command=KRX)
        except OpsError as exc:
            return exc.exit_code
        print(f"ops cycle {receipt['run_id']}: {receipt['result']} ({receipt['reason']}) -> "
              f"{receipt.get('snapshot', cycle.latest_receipt_path(home))}")
        for check in receipt.get("preflight", []):  # what failed, not only that it did: the file and the key
            if not check["ok"]:
                print(f"  preflight {check['check']}: {check['details']}")
        return rc
    if cmd == "live-cycle":
        from nas import live_cycle

        log.setup_logging("ops", home)
        try:
            receipt = live_cycle.run(home, command=KRX, operator=_operator(home, args, "ops live-cycle"))
        except OpsError as exc:
            print(f"krx ops live-cycle: {exc.code}: {exc.message}")
            return exc.exit_code
        print(f"live cycle {receipt['run_id']}: {receipt['result']} ({receipt['reason']}); push "
              f"{receipt['push']['delivery_actual']} ({receipt['push']['reason']}) -> {receipt['snapshot_ref']}")
        return receipt["exit_code"]
    if cmd in ("summary", "status"):
        from nas import summary

        data, path = summary.regenerate(home)
        if cmd == "status":
            summary.render(data)
        else:
            if args.print:
                print(json.dumps(data, ensure_ascii=False, indent=2))
            print(f"ops summary: {data['overall_status']} ({len(data['top_risks'])} risk(s)) -> {path}")
        return EXIT_OK
    if cmd == "self-test":
        from nas import selftest

        return selftest.run(home)
    if cmd == "daily-summary":
        from common import config
        from nas import daily_summary

        log.setup_logging("ops", home)
        return daily_summary.send(home, config.load("notify", home), force=args.force)
    raise AssertionError(f"unknown ops subcommand {cmd}")
