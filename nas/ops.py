"""`krx ops`: the safety switches, the event log check, the daily cycle, the risk summary and the secrets self-test.

A thin dispatcher: the state lives in common.switches and common.events, the cycle in nas.cycle, the summary and
status table in nas.summary, the self-test in nas.selftest.

  krx ops estop [on|off --reason TEXT]     the emergency stop (no argument: show who set it, when and why)
  krx ops sender [on|off --reason TEXT]    the sender switch (external sends; off on a fresh home)
  krx ops gate [MODE --reason TEXT]        the execution gate: MOCK_ONLY | DRY_RUN | REAL_ENABLED (refused today)
  krx ops verify-log                       0 intact, 1 naming the first bad line
  krx ops cycle [--date D]                 the daily cycle: 0 completed (or WARN), 2 blocked, 3 failed
  krx ops summary                          write reports/ops/summary/ops_summary_latest.json
  krx ops status                           the summary as a table, exit 0
  krx ops self-test                        required secrets present? 0 complete, 1 not
"""

from __future__ import annotations

import argparse
import json
import logging

from common import events, locks, log, switches
from common.cli import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, parse_date
from common.home import Home

_log = log.get("ops")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ops_command", required=True, metavar="SUBCOMMAND")
    for name, help_text in (("estop", "show or set the emergency stop"), ("sender", "show or set the sender switch")):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("state", nargs="?", choices=["on", "off"])
        s.add_argument("--reason", help="why (required to change it; goes into the event log)")
    s = sub.add_parser("gate", help="show or set the execution gate", description="show or set the execution gate")
    s.add_argument("mode", nargs="?", type=str.upper, choices=list(switches.GATE_MODES))
    s.add_argument("--reason", help="why (required to change it; goes into the event log)")
    s = sub.add_parser("verify-log", help="check the event log's hash chain against its signed checkpoints")
    s.add_argument("--reanchor", action="store_true", help="after a tampering was looked into: keep the log "
                   "aside for the audit and start a new chain (needs --reason)")
    s.add_argument("--reason", help="why (with --reanchor; goes into the new log's first event)")
    s = sub.add_parser("cycle", help="run the daily ops cycle")
    s.add_argument("--date", type=parse_date, help="the trading day to run (default: today, Asia/Seoul)")
    s = sub.add_parser("summary", help="write the risk summary JSON")
    s.add_argument("--print", action="store_true", help="also print the JSON")
    sub.add_parser("status", help="show switches, the last run and the risks as a table")
    sub.add_parser("self-test", help="which required secrets are present (never their values)")


def _show_switch(item: switches.Switch | switches.Gate) -> None:
    value = getattr(item, "mode", None) or ("ON" if item.on else "OFF")
    if not item.readable:
        print(f"{getattr(item, 'name', 'gate')}: UNREADABLE, treated as {value} (fail closed): {item.error}")
        return
    print(f"{getattr(item, 'name', 'gate')}: {value}")
    print(f"  set by: {item.by}")
    print(f"  at:     {item.at or '-'}")
    print(f"  reason: {item.reason or '-'}")


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
        if cmd == "estop":
            item = switches.set_emergency_stop(home, value == "on", args.reason)
        elif cmd == "sender":
            item = switches.set_sender(home, value == "on", args.reason)
        else:
            item = switches.set_gate(home, value, args.reason)
    except switches.SwitchError as exc:
        print(f"krx ops {cmd}: {exc}")
        log.event(_log, "OPS_SWITCH_REFUSED", f"{cmd} {value}: {exc}", rc=EXIT_BLOCKED, level=logging.WARNING)
        return EXIT_BLOCKED  # a refused change is a safety check doing its job
    log.event(_log, "OPS_SWITCH_SET", f"{cmd}={value} by={item.by} reason={item.reason}", rc=EXIT_OK)
    _show_switch(item)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    cmd = args.ops_command
    # before logging starts: under MOCK_ONLY not even this process's ERROR log may reach Slack, and the cycle's
    # preflight, summary and self-test judge the configuration MOCK_ONLY really runs with
    switches.enforce_mock_only(home)
    if cmd in ("estop", "sender", "gate"):
        log.setup_logging("ops", home, console=False)
        return _switch_command(home, args)
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
            with locks.job_lock(home, "daily", wait_s=0):
                rc, receipt = cycle.run_cycle(home, args.date)
        except locks.LockBusy:
            log.event(_log, "OPS_CYCLE_LOCKED", f"another ops cycle is running ({locks.job_lock_path(home, 'daily')}"
                      "); this one did nothing", rc=EXIT_BLOCKED, level=logging.WARNING)
            return EXIT_BLOCKED
        print(f"ops cycle {receipt['run_id']}: {receipt['result']} ({receipt['reason']}) -> "
              f"{receipt.get('snapshot', cycle.latest_receipt_path(home))}")
        for check in receipt.get("preflight", []):  # what failed, not only that it did: the file and the key
            if not check["ok"]:
                print(f"  preflight {check['check']}: {check['details']}")
        return rc
    if cmd in ("summary", "status"):
        from nas import summary

        data = summary.build(home)
        path = summary.write(home, data)
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
    raise AssertionError(f"unknown ops subcommand {cmd}")
