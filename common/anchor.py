"""What anchors the event log's tail: a key that lives outside the log's folder, and signed checkpoints.

The sha256 chain of common.events catches an edit in the middle, but anyone who can write state/ can recompute it:
append a forged line, drop the newest lines, or delete the log with its head. So every line also carries `mac`,
an HMAC-SHA256 with a key the log's folder does not hold, and every append writes a signed checkpoint
(`event_checkpoint/1`: home, seq, hash, time, mac) to three places: state/events.head.json beside the log, a copy
beside the key (outside the home), and, once a day from the ops cycle, reports/ops/checkpoint/ (which `krx sync
push` carries off the box). verify() checks the chain against the newest valid checkpoint it finds.

The key: KRX_EVENT_LOG_KEY (environment or the home's .env), else the file KRX_EVENT_LOG_KEY_FILE (default
~/.config/krx-alertor/event_log.key), created on first use with mode 0600 (and logged). Never printed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from common import atomic, formats, safeio
from common.home import Home

KEY_ENV = "KRX_EVENT_LOG_KEY"
KEY_FILE_ENV = "KRX_EVENT_LOG_KEY_FILE"
SCHEMA = formats.EVENT_CHECKPOINT
HEAD_NAME = "events.head.json"
EXPORT_NAME = "event_log_checkpoint.json"

_log = logging.getLogger("krx.events")


def key_file() -> Path:
    raw = os.environ.get(KEY_FILE_ENV, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".config" / "krx-alertor" / "event_log.key"


def load_key(*, create: bool) -> tuple[bytes | None, str]:
    """(key, where it came from). With `create`, a missing key file is made (0600) and the creation logged."""
    value = os.environ.get(KEY_ENV, "").strip()
    if value:
        return value.encode("utf-8"), f"environment {KEY_ENV}"
    path = key_file()
    try:
        data = safeio.read_bytes(path, 4096).strip()
        if data:
            return data, str(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise OSError(f"event log key {path}: {exc}") from None
    if not create:
        return None, str(path)
    if atomic.create_secret(path, secrets.token_hex(32).encode() + b"\n"):
        _log.warning("event log key created at %s (mode 0600): keep it out of the home and back it up", path,
                     extra={"event": "EVENT_LOG_KEY_CREATED"})
    return load_key(create=False)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "backslashreplace")


def mac(key: bytes, obj: dict) -> str:
    """HMAC-SHA256 of the object's canonical JSON without its `hash` and `mac`."""
    body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def signed(key: bytes, obj: dict) -> bool:
    return isinstance(obj.get("mac"), str) and hmac.compare_digest(obj["mac"], mac(key, obj))


def external_path(home: Home) -> Path:
    """The checkpoint copy beside the key, outside the home: one per home, named by a hash of its path."""
    tag = hashlib.sha256(str(home.root).encode("utf-8", "backslashreplace")).hexdigest()[:16]
    return key_file().parent / "checkpoints" / f"{tag}.json"


def export_path(home: Home) -> Path:
    return home.reports / "ops" / "checkpoint" / EXPORT_NAME


def checkpoint(key: bytes, home: Home, seq: int, last_hash: str) -> dict:
    record = {"schema": SCHEMA, "home": str(home.root), "seq": seq, "hash": last_hash,
              "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    record["mac"] = mac(key, record)
    return record


def write(home: Home, record: dict, *, export: bool = False) -> None:
    """The checkpoint beside the log and beside the key (and into reports/ops/ for the sync when `export`).
    Without fsync: every line is signed, so a checkpoint a power cut sets back only bounds the tail less tightly
    (verify accepts signed lines after it); the log line itself is fsynced."""
    atomic.write_json(home.state / HEAD_NAME, record, durable=False)
    atomic.write_json(external_path(home), record, durable=False)
    if export:
        atomic.write_json(export_path(home), record)


def anchors(home: Home) -> list[tuple[str, dict | None, str | None]]:
    """Every checkpoint that can be found: (where, record or None, why unreadable or None)."""
    found = []
    for path in (home.state / HEAD_NAME, external_path(home), export_path(home)):
        try:
            record = safeio.read_json(path, 64 << 10)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            found.append((str(path), None, str(exc)))
            continue
        ok = isinstance(record, dict) and isinstance(record.get("seq"), int) and isinstance(record.get("hash"), str)
        found.append((str(path), record if ok else None, None if ok else "expected {seq, hash, ...}"))
    return found


def checkpoint_line(home: Home) -> str:
    """One line for the Slack daily summary (nas/daily_summary.py): the newest checkpoint, so a copy of it lives
    outside the box even where no git sync is configured."""
    best = max((r for _, r, _ in anchors(home) if r), key=lambda r: r["seq"], default=None)
    if best is None:
        return "event log checkpoint: none yet"
    return (f"event log checkpoint: seq {best['seq']} hash {best['hash'][:16]} at {best.get('at')} "
            f"mac {best.get('mac', '')[:16]}")
