"""One log format for every job, console and logs/<job>_<YYYYMMDD>.log, times in Asia/Seoul:

    [YYYY-MM-DD HH:MM:SS] [LEVEL] [EVENT] rc=0 details=... elapsed=1234ms

`event(log, "INGEST_DONE", "days=3", rc=0, elapsed_ms=812)` writes one such line. Records without an event
name use their logger's last name part, upper-cased. ERROR records also go to the error sinks (the Slack ERROR
log), which the face attaches at start-up through `add_error_sink`. A leaf: it imports nothing of the project.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Seoul")
ROOT = "krx"
MAX_DETAILS = 2000
_ERROR_SINKS: list[logging.Handler] = []


class _HasLogs(Protocol):  # a common.home.Home, without importing it
    @property
    def logs(self) -> Path: ...


def now() -> dt.datetime:
    """The current time in Asia/Seoul."""
    return dt.datetime.now(TZ)


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, TZ).strftime("%Y-%m-%d %H:%M:%S")
        name = getattr(record, "event", None) or record.name.rsplit(".", 1)[-1].upper()
        parts = [f"[{ts}] [{record.levelname}] [{name}]"]
        rc = getattr(record, "rc", None)
        if rc is not None:
            parts.append(f"rc={rc}")
        details = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            exc = record.exc_info[1]
            details = f"{details}: {type(exc).__name__}: {exc}" if details else f"{type(exc).__name__}: {exc}"
        details = " ".join(details.split())
        if len(details) > MAX_DETAILS:  # a 4,000-digit value or a whole file never fills the log or Slack
            details = f"{details[:MAX_DETAILS]}...(cut, {len(details)} chars)"
        parts.append(f"details={details}")
        elapsed = getattr(record, "elapsed_ms", None)
        if elapsed is not None:
            parts.append(f"elapsed={int(elapsed)}ms")
        return " ".join(parts)


class _QuietFileHandler(logging.FileHandler):
    """A log file that cannot be written (a full disk) is said once on stderr, not with a traceback per line:
    the job goes on and its console lines still tell what happened."""

    _said = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's naming)
        if not self._said:
            self._said = True
            exc = sys.exc_info()[1]
            sys.stderr.write(f"[LOG] cannot write {self.baseFilename}: {type(exc).__name__}: {exc}; "
                             "console only from here\n")


def get(name: str) -> logging.Logger:
    """The logger of a module or job, under the project's root logger."""
    return logging.getLogger(f"{ROOT}.{name}")


def event(
    logger: logging.Logger,
    name: str,
    details: str = "",
    *,
    rc: int | None = None,
    elapsed_ms: float | None = None,
    level: int = logging.INFO,
) -> None:
    logger.log(level, "%s", details, extra={"event": name, "rc": rc, "elapsed_ms": elapsed_ms})


def failed(logger: logging.Logger, command: str, name: str, exc: BaseException, started: float) -> int:
    """A command that failed: one ERROR line `name` (so one Slack message) and one line on stderr, exit 3. A
    project error's message says it all; anything else is named by its type."""
    message = str(exc) if getattr(exc, "exit_code", None) is not None else f"{type(exc).__name__}: {exc}"
    event(logger, name, message, rc=3, level=logging.ERROR, elapsed_ms=(time.monotonic() - started) * 1000)
    print(f"{command}: {message}", file=sys.stderr)
    return 3


def add_error_sink(handler: logging.Handler) -> None:
    """Plug a handler that receives every ERROR record of every job (the Slack ERROR log)."""
    handler.setLevel(logging.ERROR)
    _ERROR_SINKS.append(handler)
    logging.getLogger(ROOT).addHandler(handler)


def remove_error_sink(handler: logging.Handler) -> None:
    """Unplug an error sink (the Slack handler does this when it closes)."""
    _ERROR_SINKS.remove(handler)
    logging.getLogger(ROOT).removeHandler(handler)


def error_sinks() -> list[logging.Handler]:
    return list(_ERROR_SINKS)


def setup_logging(job: str, home: _HasLogs | None = None, *, console: bool = True, level: int = logging.INFO) -> None:
    """Configure the project's root logger for one job: console (stderr) and the job's daily log file."""
    root = logging.getLogger(ROOT)
    for handler in list(root.handlers):
        if handler not in _ERROR_SINKS:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    root.propagate = False
    fmt = LineFormatter()
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    if home is not None:
        try:
            home.logs.mkdir(parents=True, exist_ok=True)
            path = home.logs / f"{job}_{now():%Y%m%d}.log"
            file_handler = _QuietFileHandler(path, encoding="utf-8", errors="backslashreplace")
            file_handler.setFormatter(fmt)
            root.addHandler(file_handler)
        except OSError as exc:  # a read-only home still lets the job run and say so
            root.warning("cannot write log file in %s: %s", home.logs, exc)
