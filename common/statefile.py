"""JSON state files under state/ that several commands read and change (operators, approvals, windows, the live
fire's journal): bounded, schema-tagged, written atomically, changed under a lock.

`load` fails closed: a file that is not a regular file, is too large, is not a JSON object or carries another
schema raises OpsError STATE_UNREADABLE, and the caller refuses (nothing is ever granted from a damaged file).
"""

from __future__ import annotations

import contextlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path

from common import atomic
from common.errors import REFUSED, OpsError
from common.home import Home

MAX_BYTES = 1024 * 1024  # far above any real state file; a larger one is damage, not data


def unreadable(path: Path, why: str) -> OpsError:
    return OpsError("STATE_UNREADABLE", f"{path}: {why} (fail closed: nothing is granted from it)", REFUSED)


def load(path: Path, schema: str) -> dict | None:
    """The file's object, None when it does not exist; raises OpsError STATE_UNREADABLE when it cannot be trusted."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise unreadable(path, f"cannot stat ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise unreadable(path, "not a regular file")
    if st.st_size > MAX_BYTES:
        raise unreadable(path, f"larger than {MAX_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise unreadable(path, f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise unreadable(path, "expected a JSON object")
    if data.get("schema") != schema:
        raise unreadable(path, f"schema: expected {schema!r}, got {data.get('schema')!r}")
    return data


def save(path: Path, data: dict) -> None:
    atomic.write_json(path, data)


@contextlib.contextmanager
def locked(home: Home, name: str, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on state/.<name>.lock for read-modify-write; yields False (and holds nothing) when
    `wait` is False and another process holds it. The kernel drops the lock of a killed process."""
    home.state.mkdir(parents=True, exist_ok=True)
    import fcntl  # the state lives on the NAS (Linux); the PC never changes it

    with open(home.state / f".{name}.lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

