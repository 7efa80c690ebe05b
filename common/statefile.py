"""JSON state files under state/ that several commands read and change (operators, approvals, windows, the live
fire's journal): bounded, schema-tagged, written atomically, changed under a lock.

`load` fails closed: a file that is not a regular file, is too large, is not a JSON object or carries another
schema raises OpsError STATE_UNREADABLE, and the caller refuses (nothing is ever granted from a damaged file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import atomic, locks, safeio
from common.errors import REFUSED, OpsError
from common.home import Home

MAX_BYTES = 1024 * 1024  # far above any real state file; a larger one is damage, not data


def unreadable(path: Path, why: str) -> OpsError:
    return OpsError("STATE_UNREADABLE", f"{path}: {why} (fail closed: nothing is granted from it)", REFUSED)


def load(path: Path, schema: str) -> dict | None:
    """The file's object, None when it does not exist; raises OpsError STATE_UNREADABLE when it cannot be trusted
    (read as every state file is: common.safeio)."""
    try:
        data = safeio.read_json(path, MAX_BYTES)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # not a regular file, too large, not strict JSON
        raise unreadable(path, str(exc)) from None
    except OSError as exc:
        raise unreadable(path, f"cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise unreadable(path, "expected a JSON object")
    if data.get("schema") != schema:
        raise unreadable(path, f"schema: expected {schema!r}, got {data.get('schema')!r}")
    return data


def load_records(path: Path, schema: str, key: str, valid: Callable[[Any], bool], shape: str) -> dict[str, dict]:
    """The file's `key` object of records ({} when the file does not exist); STATE_UNREADABLE unless every record
    is `valid` (`shape` says what one looks like)."""
    data = load(path, schema) or {key: {}}
    recs = data.get(key)
    if not isinstance(recs, dict) or not all(valid(r) for r in recs.values()):
        raise unreadable(path, f"{key}: expected {shape}")
    return recs


def save(path: Path, data: dict) -> None:
    atomic.write_json(path, data)


@contextlib.contextmanager
def locked(home: Home, name: str, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on state/.<name>.lock for read-modify-write (common.locks); yields False (and holds
    nothing) when `wait` is False and another process holds it. The kernel drops the lock of a killed process."""
    path = home.state / f".{name}.lock"
    if not wait:
        with locks.attempt(path) as got:
            yield got
        return
    with locks.locked(path):
        yield True
