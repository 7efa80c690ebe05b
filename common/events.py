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
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

from common import anchor, locks, log, safeio
from common.home import Home
from common.log import now

LOG_NAME = "events.jsonl"
HEAD_NAME = anchor.HEAD_NAME
LOCK_NAME = ".events.lock"
GENESIS = "0" * 64
MAX_LOG_BYTES = 256 << 20  # ~300 bytes an event, a few hundred events a day: decades of room
_log = log.get("events")
RESERVED = ("seq", "ts", "event", "by", "correlation_id", "prev_hash", "hash", "mac")


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

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def append_quietly(home: Home | str | os.PathLike, event: str, *, correlation_id: str | None = None,
                   level: int = logging.WARNING, **fields: Any) -> str | None:
    """Append one event where the log is evidence, not a dependency (a job whose work is done, a worker on a share
    without the NAS's state): a failure is one log line at `level`, and its text is returned (None when written)."""
    try:
        append(home, event, correlation_id=correlation_id, **fields)
    except Exception as exc:  # noqa: BLE001 - whatever broke the audit trail must not stop the job
        why = f"{type(exc).__name__}: {exc}"
        log.event(_log, "EVENT_LOG_WRITE_FAILED", f"cannot append {event}: {why}", level=level)
        return why
    return None


def append(home: Home | str | os.PathLike, event: str, *, correlation_id: str | None = None, **fields: Any) -> dict:
    """Append one event and return the record as written (with `seq`, `ts`, `by`, `prev_hash`, `hash`).

    Event names are lower snake_case (`scan_done`, `alert_sent`, `emergency_stop_on`), as the trade flow's names
    in the runbook are; UPPERCASE tags belong to log lines (common.log), so the two are never confused."""
    if not NAME_RE.fullmatch(event):
        raise ValueError(f"event name {event!r}: expected lower snake_case like alert_sent")
    home = Home.of(home)
    clash = [k for k in fields if k in RESERVED]
    if clash:
        raise ValueError(f"event fields may not use reserved names: {', '.join(clash)}")
    path = home.state / LOG_NAME
    key, _where = anchor.load_key(create=True)
    with locks.locked(home.state / LOCK_NAME):
        try:
            _size, last, ends_nl = _tail(path)
        except safeio.UnsafeFile as exc:  # a FIFO or link put where the log should be: kept aside, never read
            os.replace(path, path.with_name(f"{LOG_NAME}.damaged-{now():%Y%m%d%H%M%S}-{exc.kind}"))
            _size, last, ends_nl = 0, b"", True
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
        record["mac"] = anchor.mac(key, record)  # what the chain alone cannot give: only the key's holder signs
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
        anchor.write(home, anchor.checkpoint(key, home, record["seq"], record["hash"]))
    return record


def export_checkpoint(home: Home | str | os.PathLike) -> None:
    """Copy the newest checkpoint into reports/ops/checkpoint/, which `krx sync push` carries off the box (the
    daily cycle calls this). A checkpoint is a count and a hash: it reveals nothing of the events."""
    home = Home.of(home)
    key, _where = anchor.load_key(create=True)
    with locks.locked(home.state / LOCK_NAME):
        _size, last, _nl = _tail(home.state / LOG_NAME)
        seq, last_hash = _last_link(last)
        if seq > 0:
            anchor.write(home, anchor.checkpoint(key, home, seq, last_hash), export=True)


def reanchor(home: Home | str | os.PathLike, reason: str) -> tuple[Path, dict]:
    """After a tampering was found and looked into: keep the log aside for the audit and start a new chain whose
    first event names it. Returns (where the old log went, the first event)."""
    home = Home.of(home)
    ok, _line, message = verify(home)
    path = home.state / LOG_NAME
    aside = path.with_name(f"events.{now():%Y%m%d-%H%M%S}.{'intact' if ok else 'tampered'}.jsonl")
    with locks.locked(home.state / LOCK_NAME):
        if os.path.lexists(path):
            os.replace(path, aside)
        for found, _record, _why in anchor.anchors(home):
            Path(found).unlink(missing_ok=True)
    first = append(home, "event_log_reanchored", previous_log=aside.name, previous_verify=message, reason=reason)
    export_checkpoint(home)
    return aside, first


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
    """(ok, first bad line number (1-based) or None, message naming the anchor used). A missing log with no
    checkpoint anywhere is an intact, empty one."""
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
    try:
        key, key_where = anchor.load_key(create=False)
    except OSError as exc:
        return False, None, str(exc)
    lines = raw.split(b"\n")
    while lines and not lines[-1].strip():  # trailing blank lines are not a gap
        lines.pop()
    prev, hashes, signed_from = GENESIS, [], None
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
        if "mac" in rec or signed_from is not None:  # once signed, every later line must be
            if key is None:
                return False, number, f"line {number}: signed, but the event log key is missing ({key_where})"
            if not anchor.signed(key, rec):
                return False, number, f"line {number}: signature does not match (forged, or written without the key)"
            signed_from = signed_from or number
        prev = rec["hash"]
        hashes.append(prev)
    return _check_anchors(home, hashes, signed_from, key, key_where)


def _check_anchors(home: Home, hashes: list[str], signed_from: int | None, key: bytes | None,
                   key_where: str) -> tuple[bool, int | None, str]:
    """Every checkpoint found must be genuine and agree with the chain; the newest one bounds the tail."""
    count, best, best_name = len(hashes), None, ""
    for where, record, why in anchor.anchors(home):
        name = Path(where).name if Path(where).parent == home.state else where
        if record is None:
            return False, count + 1, f"{name}: unreadable checkpoint ({why})"
        if "mac" in record:
            if key is None:
                return False, count + 1, f"{name}: signed checkpoint, but the event log key is missing ({key_where})"
            if not anchor.signed(key, record):
                return False, count + 1, f"{name}: checkpoint signature does not match (forged or edited)"
        elif signed_from is not None or Path(where).parent != home.state:
            return False, count + 1, f"{name}: unsigned checkpoint where signed ones are written (forged)"
        seq = record["seq"]
        if seq < 1:
            return False, count + 1, f"{name}: unreadable checkpoint (seq {seq})"
        if seq > count:
            return False, count + 1, (f"line {count + 1}: missing; checkpoint {name} records {seq} events but the "
                                      f"log has {count} (newest lines deleted, or the whole log)")
        if hashes[seq - 1] != record["hash"]:
            return False, seq, f"line {seq}: does not match the hash recorded by checkpoint {name}"
        if best is None or seq > best["seq"]:
            best, best_name = record, name
    if best is None:
        if count:
            return False, count + 1, f"{HEAD_NAME} is missing although the log has {count} events (no checkpoint found)"
        return True, None, "event log intact: 0 events"
    if "mac" in best and signed_from is None and count > best["seq"]:
        return False, best["seq"] + 1, f"line {best['seq'] + 1}: not signed, after a signed checkpoint (forged)"
    kind = "signed" if "mac" in best else "unsigned, written before signing began"
    return True, None, (f"event log intact: {count} events; anchor: {best_name} (seq {best['seq']}, {kind}, "
                        f"{best.get('at') or 'no time'})")
