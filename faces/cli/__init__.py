"""`krx`: one console script, one subcommand per job (the face above common/, nas/ and pc/; no core module
imports it). Each subcommand lives in the module named in COMMANDS, which provides `add_arguments(parser)` and
`run(args) -> int` (exit codes of common.errors: 0 done, 2 blocked, 3 failed). The Slack ERROR log is attached
here, once per process, with the notify settings and the emergency stop as its handles."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from common import config
from common.args import Parser, parse_date
from common.errors import EXIT_FAILED, EXIT_OK, AlertorError
from common.home import Home, init_home

# subcommand -> (module, one-line help). Modules import lazily so `krx calendar` never loads pandas' panels.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("faces.cli", "create a home: default configs and empty folders"),
    "calendar": ("faces.cli", "print KRX trading days, or the next one"),
    "ingest": ("nas.ingest", "fetch end-of-day prices into the store"),
    "scan": ("nas.scan", "scan the market for the strategy's picks"),
    "alert": ("nas.alert", "render and deliver the day's alert"),
    "request": ("nas.request", "queue a backtest request for the PC worker"),
    "backtest": ("pc.backtest", "run one backtest on the store"),
    "sweep": ("pc.sweep", "run a grid of backtests on Dask: every combination of the parameters"),
    "worker": ("faces.cli.worker", "watch the queue and run backtest requests (--http: the backtest API)"),
    "sync": ("nas.sync", "bring results home with rsync or git"),
    "retention": ("nas.retention", "archive old reports and data; back up the home"),
    "ops": ("faces.cli.ops", "safety switches, event log, daily cycle, risk summary"),
    "trade": ("faces.cli.trade", "trading, Phase 0: proposals, approval, execution server, mock broker"),
    "serve": ("faces.cli.serve", "the approval side's HTTP face: the proposals API and page"),
    "demo": ("faces.demo", "run the whole day on the embedded sample market"),
}


SWITCH_COMMANDS = ("estop", "sender", "gate")
MAX_ENV_BYTES = 1 << 20


def load_env_file(home: Home) -> str | None:
    """Put the home's .env into the environment (existing variables win; secrets are never logged). Returns what
    is wrong with it (naming the file, the line and what was expected), or None."""
    from common import safeio

    path = home.root / ".env"
    try:
        data = safeio.read_bytes(path, MAX_ENV_BYTES)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # a folder, FIFO or link where .env should be, or far too large
        return f"{path}: expected a regular file of KEY=value lines ({exc})"
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc})"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return f"{path}: line {line}: expected UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x})"
    import io

    from dotenv import load_dotenv

    load_dotenv(stream=io.StringIO(text), override=False)
    return None


def _handlers(name: str):
    """(add_arguments, run) of a subcommand."""
    if COMMANDS[name][0] == "faces.cli":  # init and calendar live below
        return globals()[f"add_{name}_arguments"], globals()[f"run_{name}"]
    module = importlib.import_module(COMMANDS[name][0])
    return module.add_arguments, module.run


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="krx", description="krx-alertor: the daily KRX market routine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):  # only the chosen command's module is imported
            _handlers(name)[0](p)
    return parser


def attach_error_log(home: Home, job: str) -> None:
    """The Slack ERROR log of this process, when notify.yaml and a token or webhook say so, with the emergency
    stop as its handle (unreadable means stopped). Telemetry never stops a job: a failure is one warning line."""
    from common import slack, slacklog, switches

    if not slack.configured():  # checked first: without credentials no config is read at all
        return

    def stopped() -> bool:
        stop = switches.emergency_stop(home)
        return stop.on or not stop.readable

    try:
        slacklog.send_verbose_log_to_slack(config.load("notify", home), job, stopped)
    except Exception as exc:  # noqa: BLE001 - a bad notify.yaml fails the job that reads it, not this
        print(f"krx {job}: warning: Slack ERROR log not attached: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen == "worker" and hasattr(signal, "SIGTERM"):
        # until the worker installs its own handlers (after its imports) a SIGTERM finds nothing claimed: a clean
        # exit 0, not the default 143
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    home = Home.from_env()
    env_error = load_env_file(home)
    # the switch commands need no secret: a damaged .env must never lock out the emergency stop
    if env_error and not (args.command == "ops" and getattr(args, "ops_command", None) in SWITCH_COMMANDS):
        print(f"krx {args.command}: config error: {env_error}", file=sys.stderr)
        return EXIT_FAILED
    if env_error:
        print(f"krx {args.command}: warning: {env_error}; ignored for this switch command", file=sys.stderr)
    from common import switches

    switches.enforce_mock_only(home)  # MOCK_ONLY: no external channel for this job or its children
    attach_error_log(home, args.command)
    try:
        return int(_handlers(args.command)[1](args) or 0)
    except AlertorError as exc:  # the one place an error becomes an exit code
        kind = "config error: " if isinstance(exc, config.ConfigError) else ""
        print(f"krx {args.command}: {kind}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"krx {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # exit codes are 0, 2 and 3: an error a job did not expect is a failure, not exit 1
        print(f"krx {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# --- init and calendar are small enough to live here ---------------------------------------------------------


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", help="home folder (default: KRX_HOME or the current folder)")


def run_init(args: argparse.Namespace) -> int:
    home, created = init_home(args.dir or Home.from_env().root)
    print(f"home: {home.root}")
    for item in created:
        print(f"  created {item}")
    if not created:
        print("  already complete; nothing changed")
    return EXIT_OK


def add_calendar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("start", nargs="?", type=parse_date, metavar="FROM")
    p.add_argument("end", nargs="?", type=parse_date, metavar="TO")
    p.add_argument("--next", type=parse_date, metavar="DATE", help="print the next trading day after DATE")


def run_calendar(args: argparse.Namespace) -> int:
    from common import calendar

    cal = calendar.load()
    try:
        if args.next:
            print(cal.next_trading_day(args.next).isoformat())
        elif args.start and args.end:
            if args.start > args.end:
                raise ValueError(f"FROM {args.start} is after TO {args.end}")
            if args.start < cal.first or args.end > cal.last:  # silence would read as "no trading day"
                raise ValueError(f"{args.start}..{args.end} reaches outside the calendar ({cal.first}..{cal.last})")
            for day in cal.sessions(args.start, args.end):
                print(day.isoformat())
        else:
            print("krx calendar: give FROM TO, or --next DATE", file=sys.stderr)
            return EXIT_FAILED
    except ValueError as exc:
        print(f"krx calendar: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK

