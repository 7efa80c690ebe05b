"""The append-only, tamper-evident event log: state/events.jsonl (DESIGN section 9).

Each line is one JSON object carrying `seq`, `ts`, `event`, `by` (user@host), `correlation_id`, the caller's fields,
`prev_hash` (the `hash` of the line before; 64 zeros for the first) and `hash`: the sha256 of the line's canonical
JSON without `hash`. Editing a line breaks its own hash; deleting, inserting or reordering breaks the chain of
`prev_hash`. Dropping the newest lines is caught by `state/events.head.json`, which records the count and the last
hash after every append.

Appends take an exclusive lock (`state/.events.lock`, fcntl.flock) so concurrent jobs on the NAS never interleave
or fork the chain; the line is fsynced before the lock is released.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from common import atomic, locks, safeio
from common.home import Home
from common.log import now

LOG_NAME = "events.jsonl"
HEAD_NAME = "events.head.json"
LOCK_NAME = ".events.lock"
GENESIS = "0" * 64
MAX_LOG_BYTES = 256 << 20  # ~300 bytes an event, a few hundred events a day: decades of room
RESERVED = ("seq", "ts", "event", "by", "correlation_id", "prev_hash", "hash")


def log_path(home: Home | str | os.PathLike) -> Path:
    return Home.of(home).state / LOG_NAME


def who() -> str:
    """user@host of the running process, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname() or 'unknown'}"


def correlation_id(asof_date: dt.date | str, strategy: str) -> str:
    """The id that ties one day's scan, alert, request and result together, e.g. `20240105-momentum_topN_v1`."""
    if isinstance(asof_date, str):
        asof_date = dt.date.fromisoformat(asof_date) if "-" in asof_date else dt.datetime.strptime(
            asof_date, "%Y%m%d").date()
    return f"{asof_date:%Y%m%d}-{strategy}"


def canonical(obj: Any) -> bytes:
    # a file name that is not UTF-8 carries surrogates: written as the JSON escape \udcXX, which parses back to
    # the same string, so the hash a reader computes is the one written
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "backslashreplace")


def line_hash(record: dict) -> str:
    """sha256 of the record's canonical JSON without its own `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _tail(path: Path) -> tuple[int, bytes, bool]:
    """(size, last non-empty line, file ends with a newline) without reading the whole log."""
    try:
        fh = os.fdopen(safeio.open_regular(path), "rb")
    except FileNotFoundError:
        return 0, b"", True
    with fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0, b"", True
        block, buf = 8192, b""
        pos = size
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            stripped = buf.rstrip(b"\n")
            if b"\n" in stripped or pos == 0:
                break
        fh.seek(size - 1)
        ends_nl = fh.read(1) == b"\n"
    lines = [ln for ln in buf.split(b"\n") if ln.strip()]
    return size, (lines[-1] if lines else b""), ends_nl


def _last_link(last: bytes) -> tuple[int, str]:
    """(seq, hash) of the newest line; a damaged line still gets a deterministic link so appends go on."""
    if not last:
        return 0, GENESIS
    try:
        rec = json.loads(last)
        return int(rec["seq"]), str(rec["hash"])
    except (ValueError, KeyError, TypeError):
        # verify() reports the damaged line; chaining to its raw bytes keeps every later line verifiable
        return -1, hashlib.sha256(last).hexdigest()


def append(home: Home | str | os.PathLike, event: str, *, correlation_id: str | None = None, **fields: Any) -> dict:
    """Append one event and return the record as written (with `seq`, `ts`, `by`, `prev_hash`, `hash`)."""
    home = Home.of(home)
    clash = [k for k in fields if k in RESERVED]
    if clash:
        raise ValueError(f"event fields may not use reserved names: {', '.join(clash)}")
    path = home.state / LOG_NAME
    with locks.locked(home.state / LOCK_NAME):
        _size, last, ends_nl = _tail(path)
        seq, prev = _last_link(last)
        if seq < 0:  # count lines the slow way only when the newest line is damaged
            seq = sum(1 for ln in path.read_bytes().split(b"\n") if ln.strip())
        record: dict[str, Any] = {
            "seq": seq + 1,
            "ts": now().isoformat(timespec="milliseconds"),
            "event": str(event),
            "by": who(),
            "correlation_id": correlation_id,
            # a JSON round trip makes the hashed form exactly what a reader will parse back
            **json.loads(json.dumps(fields, ensure_ascii=False, default=str)),
            "prev_hash": prev,
        }
        record["hash"] = line_hash(record)
        data = canonical(record) + b"\n"
        if not ends_nl:  # a torn last line (crash mid-write) must not swallow this one
            data = b"\n" + data
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        atomic.write_json(home.state / HEAD_NAME, {"seq": record["seq"], "hash": record["hash"]})
    return record


def read(home: Home | str | os.PathLike) -> list[dict]:
    """Every parseable event, oldest first (for reports; verify() is the integrity check)."""
    out = []
    try:
        raw = safeio.read_bytes(log_path(home), MAX_LOG_BYTES)
    except (FileNotFoundError, ValueError):  # absent, or not a regular file: verify() says which
        return out
    for ln in raw.split(b"\n"):
        if ln.strip():
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
    return out


def verify(home: Home | str | os.PathLike) -> tuple[bool, int | None, str]:
    """(ok, first bad line number (1-based) or None, message). A missing log is an intact, empty one."""
    home = Home.of(home)
    path = home.state / LOG_NAME
    try:
        raw = safeio.read_bytes(path, MAX_LOG_BYTES)
    except FileNotFoundError:
        raw = b""
    except ValueError as exc:
        return False, None, f"cannot read {path.name}: {exc}"
    except OSError as exc:
        return False, None, f"cannot read {path}: {exc.strerror}"
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev, count = GENESIS, 0
    for number, ln in enumerate(lines, start=1):
        if not ln.strip():
            return False, number, f"line {number}: empty line inside the log (a line was removed or inserted)"
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            return False, number, f"line {number}: not valid JSON (edited or torn)"
        if rec.get("hash") != line_hash(rec):
            return False, number, f"line {number}: content does not match its hash (edited)"
        if rec.get("prev_hash") != prev:
            return False, number, (f"line {number}: does not follow line {number - 1} "
                                   "(a line was deleted, inserted or reordered)")
        if rec.get("seq") != number:
            return False, number, f"line {number}: sequence number {rec.get('seq')!r} out of order"
        prev, count = rec["hash"], number
    head_path = home.state / HEAD_NAME
    try:
        head = json.loads(head_path.read_text(encoding="utf-8"))
        head_seq, head_hash = int(head["seq"]), str(head["hash"])
        if head_seq < 1:  # written after an append, so it counts at least one event
            raise ValueError(f"seq {head_seq}")
    except FileNotFoundError:
        head_seq, head_hash = None, None
    except (OSError, ValueError, KeyError, TypeError):
        return False, count + 1, f"{head_path.name}: unreadable head record"
    if head_seq is not None:
        if head_seq > count:
            return False, count + 1, (f"line {count + 1}: missing; the head records {head_seq} events but the log "
                                      f"has {count} (newest lines deleted)")
        # the head may lag by lines appended after it was written (a crash in between): those still chain
        got = json.loads(lines[head_seq - 1]).get("hash") if head_seq else GENESIS
        if got != head_hash:
            return False, head_seq, f"line {head_seq}: does not match the recorded head hash"
    elif count:
        return False, count + 1, f"{head_path.name} is missing although the log has {count} events"
    return True, None, f"event log intact: {count} events"
