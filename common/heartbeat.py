"""The PC worker's heartbeat: a small JSON file the running worker rewrites, and the NAS's watchdog reads.

Where: `reports/ops/heartbeat/<host>.json` (`reports/` is the folder holding the queue's inbox), one file per
worker machine, so several PCs never overwrite each other's beat and the watchdog takes the newest. Under
`reports/ops/` it travels with what already goes to the NAS: a shared `reports/` is read directly, `krx sync push`
(rsync or git) sends `reports/ops/`, and `krx sync pull` fetches `reports/ops/heartbeat/` besides the results.

The file (`worker_heartbeat/1`): `host`, `pid`, `at` (the worker's clock, ISO 8601 with its offset). It is written
atomically (a reader sees a whole beat or the previous one) at most every EVERY_S seconds: the worker's heartbeat
thread runs every few seconds, and a fsync every few seconds on a network share is a cost for nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import atomic, formats, safeio
from common.log import event, get, now

SCHEMA = formats.WORKER_HEARTBEAT
EVERY_S = 60.0          # a beat is written at most this often by one process
MAX_FILES = 100         # heartbeat files read at most (one per worker machine)

_log = get("heartbeat")
_last: dict[Path, float] = {}   # folder -> monotonic time of this process's last write there
_failed: set[Path] = set()      # folders whose write failed and was said once
_lock = threading.Lock()


def folder(reports: str | os.PathLike) -> Path:
    """The heartbeat folder of the `reports/` folder that holds the queue."""
    return Path(reports) / "ops" / "heartbeat"


def _host() -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname()).strip(".")
    return name or "host"


def write(reports: str | os.PathLike, *, at: dt.datetime | None = None) -> Path:
    """Write this machine's beat now (or dated `at`: the tests' injected clock)."""
    record = {"schema": SCHEMA, "host": _host(), "pid": os.getpid(),
              "at": (at or now()).isoformat(timespec="seconds")}
    # not durable: a beat lost to a power cut is simply the previous one, and no fsync hits the share every time
    return atomic.write_json(folder(reports) / f"{record['host']}.json", record, durable=False)


def beat(reports: str | os.PathLike) -> None:
    """The worker's hook: write a beat unless this process wrote one in the last EVERY_S seconds. Never raises: a
    share that is away is said once (WARNING) and the job goes on; the beat resumes when the share is back."""
    where = folder(reports)
    with _lock:
        if time.monotonic() - _last.get(where, -EVERY_S) < EVERY_S:
            return
        _last[where] = time.monotonic()
    try:
        write(reports)
    except OSError as exc:
        with _lock:
            _last.pop(where, None)  # try again at the next beat
            said = where in _failed
            _failed.add(where)
        if not said:
            event(_log, "HEARTBEAT_WRITE_FAILED", f"{where}: {type(exc).__name__}: {exc}; the NAS's watchdog may "
                  "report this worker as silent", level=logging.WARNING)
        return
    with _lock:
        _failed.discard(where)


@dataclass(frozen=True)
class Beat:
    host: str
    pid: int | None
    at: dt.datetime
    path: Path


def read(path: Path) -> Beat:
    """One heartbeat file; ValueError naming the file and the field when it is not one."""
    try:
        data = safeio.read_json(path, 64 * 1024)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # its text starts with the file's name
        raise ValueError(f"{path.parent}/{exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: expected a {SCHEMA} object")
    try:
        at = dt.datetime.fromisoformat(str(data.get("at")))
    except ValueError:
        raise ValueError(f"{path}: at: expected an ISO 8601 time, got {safeio.clip(data.get('at'))}") from None
    if at.tzinfo is None:
        raise ValueError(f"{path}: at: expected a time with its UTC offset, got {safeio.clip(data.get('at'))}")
    pid = data.get("pid")
    return Beat(str(data.get("host", path.stem)), pid if isinstance(pid, int) else None, at, path)


def latest(reports: str | os.PathLike) -> tuple[Beat | None, list[str]]:
    """(the newest readable beat or None, what was wrong with the files that could not be read)."""
    where = folder(reports)
    try:
        paths = sorted(p for p in where.glob("*.json") if not p.name.startswith("."))[:MAX_FILES]
    except OSError as exc:
        return None, [f"{where}: cannot list ({exc.strerror or exc})"]
    beats, problems = [], []
    for path in paths:
        try:
            beats.append(read(path))
        except ValueError as exc:
            problems.append(str(exc))
    return max(beats, key=lambda b: b.at, default=None), problems
