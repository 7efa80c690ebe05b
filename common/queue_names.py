"""The names of the queue's files and what they stand for (the protocol itself is common/queue.py):

    pending/<id>.json, pending/<id>@<n>.json, processing/<id>@<n>@<owner>.json, failed/<stem>.json

An id matches ID_RE; `@` never occurs in an id or an owner, so names parse without ambiguity.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import safeio

ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
SEP = "@"
SUFFIX = ".json"
ERROR_SUFFIX = ".error.json"


def is_valid_id(value: Any) -> bool:
    """A request id is a safe file name: `[A-Za-z0-9._-]{1,128}`, not starting with "." (hidden names are never
    read: pending/.<id>.json would never run nor fail; this also refuses "." and ".."), and not ending with
    ".error" (failed/<id>.error.json is the error record of request <id>)."""
    return (isinstance(value, str) and ID_RE.fullmatch(value) is not None and not value.startswith(".")
            and not value.endswith(ERROR_SUFFIX.removesuffix(".json")))


def new_owner() -> str:
    """A worker's name in claim and temp-folder names: host, pid and a random tag (no "." and no "@")."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname() or "host").strip("-")[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def is_valid_owner(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9-]{1,80}", value) is not None


@dataclass(frozen=True)
class Entry:
    """A file waiting in the inbox. `valid_name` is False when the name is not `<id>[@<n>].json`; then `id` is
    the raw file stem and the entry can only be failed."""

    path: Path
    id: str
    attempts: int
    valid_name: bool = True
    kind: str = "file"  # or symlink, directory, fifo, device, socket: never read, only failed


@dataclass(frozen=True)
class Claim:
    """A request claimed by `owner` for its attempt number `attempt` (1-based)."""

    path: Path
    id: str
    attempt: int
    owner: str


@dataclass(frozen=True)
class Recovered:
    """What recover() did with one stale claim: "requeued", "failed" (max attempts) or "done" (already had a
    result; only the claim was left)."""

    claim: Claim
    action: str
    age_s: float


def parse_pending_name(name: str) -> tuple[str, int] | None:
    """`<id>.json` -> (id, 0); `<id>@<n>.json` -> (id, n); None for any other name."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    parts = name[: -len(SUFFIX)].split(SEP)
    if len(parts) == 1 and is_valid_id(parts[0]):
        return parts[0], 0
    if len(parts) == 2 and is_valid_id(parts[0]) and parts[1].isdigit() and len(parts[1]) <= 6:
        return parts[0], int(parts[1])
    return None


def parse_claim_name(name: str) -> tuple[str, int, str] | None:
    """`<id>@<n>@<owner>.json` -> (id, n, owner); None for any other name."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    parts = name[: -len(SUFFIX)].split(SEP)
    if len(parts) == 3 and is_valid_id(parts[0]) and parts[1].isdigit() and len(parts[1]) <= 6 \
            and is_valid_owner(parts[2]):
        return parts[0], int(parts[1]), parts[2]
    return None


def failed_stem(name: str) -> str:
    """The stem an inbox file keeps in failed/: its own, unless it is too long for the names built on it
    (`failed/.<stem>.<owner>.error.tmp` must fit the file system's 255 bytes); then its start and a hash of the
    whole name; a name that is not plain ASCII gets the same, made of safe characters. The error record keeps the
    original name (escaped where it is not UTF-8)."""
    stem = name[: -len(SUFFIX)]
    if not stem.isascii():  # not UTF-8 (surrogates) or exotic: a portable name, told apart by the hash below
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", safeio.show_name(stem))
    elif len(os.fsencode(stem)) <= 128:
        return stem
    short = stem[:64]
    while len(os.fsencode(short)) > 64:
        short = short[:-1]
    return f"{short}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}"


def pending_name(request_id: str, attempts: int) -> str:
    return f"{request_id}{SUFFIX}" if attempts <= 0 else f"{request_id}{SEP}{attempts}{SUFFIX}"
