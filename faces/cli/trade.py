"""`krx trade`: trading, Phase 0 (docs/trading.md). A thin dispatcher over nas.trading and faces.http.

  krx trade init-db                                 create or migrate state/trading.sqlite3 (idempotent)
  krx trade propose [--date D | --snapshot FILE]    the day's decision as proposals (pending, or refused + why)
  krx trade list [--date D] [--status S] [--json]   proposals
  krx trade approve ID [--expires-in-seconds N]     an operator approves: prints the one-time token once
  krx trade reject ID --reason TEXT                 an operator rejects
  krx trade kill-switch [on|off --reason TEXT]      show or set the kill switch (an operator)
  krx trade events --correlation-id ID              one proposal's events, from the database's event_log
  krx trade verify-db-log                           the chain is intact and event_log equals its trade events
  krx trade execution-server [--port P]             the execution server (its own process)
  krx trade mock-broker [--port P] [--snapshot FILE] [--seed-positions]   the mock KIS broker
  krx trade reconcile                               model portfolio vs the broker -> recon_summary.json

Refusals exit 2, failures 3 (common.errors.OpsError's exit code), printing `code: message`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common import operators
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK, OpsError
from common.home import Home
from nas.trading import db


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="trade_command", required=True, metavar="SUBCOMMAND")
    sub.add_parser("init-db", help="create or migrate the trading database")
    s = sub.add_parser("propose", help="turn the day's decision into proposals")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--date", type=parse_date, help="scan this day (default: the store's last day)")
    g.add_argument("--snapshot", help="read a market snapshot JSON instead of scanning the store")
    s = sub.add_parser("list", help="list proposals")
    s.add_argument("--date", type=parse_date)
    s.add_argument("--status", choices=["pending", "refused", "approved", "rejected", "executed", "failed"])
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("approve", help="approve a proposal (an operator); prints its one-time token once")
    s.add_argument("id", type=int)
    s.add_argument("--expires-in-seconds", type=int)
    s.add_argument("--token-file", help=f"the operator token (default: ${operators.TOKEN_ENV})")
    s = sub.add_parser("reject", help="reject a proposal (an operator)")
    s.add_argument("id", type=int)
    s.add_argument("--reason", required=True)
    s.add_argument("--token-file", help=f"the operator token (default: ${operators.TOKEN_ENV})")
    s = sub.add_parser("kill-switch", help="show or set the kill switch")
    s.add_argument("state", nargs="?", choices=["on", "off"])
    s.add_argument("--reason")
    s.add_argument("--token-file", help=f"the operator token (default: ${operators.TOKEN_ENV})")
    s = sub.add_parser("events", help="a correlation id's events from the database")
    s.add_argument("--correlation-id", required=True)
    sub.add_parser("verify-db-log", help="check that event_log equals the chain's trade events")
    s = sub.add_parser("execution-server", help="run the execution server")
    s.add_argument("--port", type=int)
    s = sub.add_parser("mock-broker", help="run the mock KIS broker")
    s.add_argument("--port", type=int)
    s.add_argument("--snapshot", help="prices from this snapshot (default: the newest stored snapshot)")
    s.add_argument("--seed-positions", action="store_true", help="start the account with the snapshot's holdings")
    sub.add_parser("reconcile", help="compare the model portfolio with the broker's positions and our fills")


def _operator(home: Home, args: argparse.Namespace, action: str) -> str:
    return operators.identify(home, operators.token_from(os.environ, args.token_file), action=action)


def _print_json(data: object) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    cmd = args.trade_command
    try:
        if cmd == "init-db":
            before, after = db.init_db(home)
            print("Database initialized successfully" + (f" (schema version {before} -> {after})" if before != after
                                                         else f" (schema version {after}, nothing to do)"))
            return EXIT_OK
        if cmd in ("execution-server", "mock-broker"):
            return _serve(home, args)
        conn = db.open_db(home)
        try:
            return _command(home, conn, args)
        finally:
            conn.close()
    except OpsError as exc:
        print(f"krx trade {cmd}: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code


def _command(home: Home, conn, args: argparse.Namespace) -> int:
    from nas.trading import approvals, execution, ledger, proposals

    cfg = db.load_config(home)
    cmd = args.trade_command
    if cmd == "propose":
        snap = (proposals.read_snapshot(args.snapshot) if args.snapshot
                else proposals.snapshot_from_scan(home, args.date))
        made = proposals.propose(home, conn, snap, cfg)
        print(f"{snap['asof']}: {len(made)} proposals ({sum(p['status'] == 'pending' for p in made)} pending, "
              f"{sum(p['status'] == 'refused' for p in made)} refused)")
        _table(made)
    elif cmd == "list":
        rows = proposals.listing(conn, asof=args.date.isoformat() if args.date else None, status=args.status)
        _print_json(rows) if args.json else _table(rows)
    elif cmd == "approve":
        who = _operator(home, args, f"trade approve {args.id}")
        out = approvals.approve(home, conn, cfg, args.id, who, args.expires_in_seconds)
        print(f"proposal {args.id} approved by {who}; the token (shown once, expires {out['expires_at']}):")
        print(out["token"])
    elif cmd == "reject":
        who = _operator(home, args, f"trade reject {args.id}")
        approvals.reject(home, conn, cfg, args.id, who, args.reason)
        print(f"proposal {args.id} rejected by {who}")
    elif cmd == "kill-switch":
        if args.state is None:
            _print_json(execution.kill_switch(conn))
            return EXIT_OK
        who = _operator(home, args, f"trade kill-switch {args.state}")
        _print_json(execution.set_kill_switch(home, conn, cfg, args.state == "on", args.reason, who))
    elif cmd == "events":
        rows = ledger.by_correlation(conn, args.correlation_id)
        for rec in rows:
            print(json.dumps(rec, ensure_ascii=False, sort_keys=True))
        if not rows:
            print(f"no events for {args.correlation_id}", file=sys.stderr)
    elif cmd == "verify-db-log":
        ok, problems = ledger.verify(home, conn)
        for line in problems:
            print(line)
        print("event_log equals the chain's trade events" if ok else f"{len(problems)} differences")
        return EXIT_OK if ok else EXIT_FAILED
    elif cmd == "reconcile":
        from nas.trading import broker, reconcile

        client = broker.BrokerClient(cfg["broker"])
        try:
            path, summary = reconcile.run(home, conn, client)
        finally:
            client.close()
        print(f"{path}: {summary['differences']} differences over {len(summary['tickers'])} tickers")
    return EXIT_OK


def _table(rows: list[dict]) -> None:
    for p in rows:
        why = f"  ({p['refusal_reason']})" if p.get("refusal_reason") else ""
        print(f"  #{p['id']:<4} {p['status']:<9} {p['side']:<4} {p['quantity']:>8} {p['ticker']:<8} "
              f"@{p['limit_price']:>10,}  {p['correlation_id']}{why}")


def _serve(home: Home, args: argparse.Namespace) -> int:
    from faces.http import run as serve_http

    cfg = db.load_config(home)
    if args.trade_command == "execution-server":
        from faces.http import execution_server

        app = execution_server.create_app(home, cfg)
        host, port = cfg["execution"]["host"], args.port or cfg["execution"]["port"]
    else:
        from faces.http import mock_broker
        from nas.trading import broker as broker_mod
        from nas.trading import proposals

        snap = proposals.read_snapshot(args.snapshot) if args.snapshot else _newest_snapshot(home)
        prices = {r["ticker"]: r["close"] for r in snap["rows"]}
        held = {r["ticker"]: int(r.get("shares") or 0) for r in snap["rows"]} if args.seed_positions else {}
        creds = broker_mod.BrokerClient(cfg["broker"])  # the same credentials check as the client's
        creds.close()
        app = mock_broker.create_app(prices, creds.app_key, creds.app_secret,
                                     rate_limit_per_s=cfg["broker"]["rate_limit_per_s"],
                                     account=cfg["broker"]["account"], product_code=cfg["broker"]["product_code"],
                                     positions=held)
        host, port = "127.0.0.1", args.port or cfg["broker"]["port"]
    print(f"krx trade {args.trade_command}: listening on http://{host}:{port}", flush=True)
    serve_http(app, host, port)
    return EXIT_OK


def _newest_snapshot(home: Home) -> dict:
    conn = db.open_db(home)
    try:
        row = conn.execute("SELECT payload FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        raise OpsError("NO_SNAPSHOT", "no stored snapshot: run `krx trade propose` first or give --snapshot FILE",
                       EXIT_FAILED)
    return json.loads(row["payload"])
