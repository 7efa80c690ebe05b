"""`krx`: one console script, one subcommand per job. Each subcommand lives in the module named in COMMANDS,
which provides `add_arguments(parser)` and `run(args) -> int` (exit codes: 0 done, 2 blocked, 3 failed)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from typing import NoReturn

from common import config
from common.home import Home, init_home

EXIT_OK, EXIT_BLOCKED, EXIT_FAILED = 0, 2, 3

# subcommand -> (module, one-line help). Modules import lazily so `krx calendar` never loads pandas' panels.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("common.cli", "create a home: default configs and empty folders"),
    "calendar": ("common.cli", "print KRX trading days, or the next one"),
    "ingest": ("nas.ingest", "fetch end-of-day prices into the store"),
    "scan": ("nas.scan", "scan the market for the strategy's picks"),
    "alert": ("nas.alert", "render and deliver the day's alert"),
    "request": ("nas.request", "queue a backtest request for the PC worker"),
    "backtest": ("pc.backtest", "run one backtest on the store"),
    "sweep": ("pc.sweep", "run a grid of backtests on Dask: every combination of the parameters"),
    "worker": ("pc.worker", "watch the queue and run backtest requests"),
    "sync": ("nas.sync", "bring results home with rsync or git"),
    "retention": ("nas.retention", "archive old reports and data; back up the home"),
    "ops": ("nas.ops", "safety switches, event log, daily cycle, risk summary"),
    "demo": ("common.demo", "run the whole day on the embedded sample market"),
}


def parse_date(text: str) -> dt.date:
    """argparse type for dates: YYYY-MM-DD or YYYYMMDD."""
    try:
        return dt.date.fromisoformat(text) if "-" in text else dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _handlers(name: str):
    """(add_arguments, run) of a subcommand."""
    if COMMANDS[name][0] == "common.cli":  # also when run as `python -m common.cli`
        return globals()[f"add_{name}_arguments"], globals()[f"run_{name}"]
    module = importlib.import_module(COMMANDS[name][0])
    return module.add_arguments, module.run


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which here means "blocked by a safety check": a usage error is a failure."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FAILED, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="krx", description="krx-alertor: the daily KRX market routine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):  # only the chosen command's module is imported
            _handlers(name)[0](p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    home = Home.from_env()
    try:
        from dotenv import load_dotenv

        load_dotenv(home.root / ".env", override=False)  # secrets only; never logged
    except OSError:
        pass
    from common import switches

    switches.enforce_mock_only(home)  # MOCK_ONLY: no external channel for this job or its children
    try:
        return int(_handlers(args.command)[1](args) or 0)
    except config.ConfigError as exc:
        print(f"krx {args.command}: config error: {exc}", file=sys.stderr)
        return EXIT_FAILED
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
            for day in cal.sessions(args.start, args.end):
                print(day.isoformat())
        else:
            print("krx calendar: give FROM TO, or --next DATE", file=sys.stderr)
            return EXIT_FAILED
    except ValueError as exc:
        print(f"krx calendar: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
