"""What every command line of the project shares: dates as arguments, and usage errors that exit 3.

The `krx` face (faces/cli) and the one command a core module keeps for itself (`python -m pc.backtest run`, the
seed's PC command) both use these."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import NoReturn

from common.errors import EXIT_FAILED


def parse_date(text: str) -> dt.date:
    """argparse type for dates: YYYY-MM-DD or YYYYMMDD."""
    try:
        return dt.date.fromisoformat(text) if "-" in text else dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which here means "blocked by a safety check": a usage error is a failure."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FAILED, f"{self.prog}: error: {message}\n")
