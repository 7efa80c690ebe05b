"""The queue: a Maildir-like folder protocol between the NAS and any number of PC workers (DESIGN section 6).

Folders (default: the home's reports/): `pending/` (the inbox), `processing/`, `failed/` beside it, and the out
folder `done/`. Every step is one rename, so it stays correct when the folders sit on an SMB or NFS share and
several machines work on them: no hard links, no locks across machines. Only one rename of a given source can
succeed; a loser sees the source gone (FileNotFoundError; on Windows also FileExistsError or PermissionError)
and just moves on: another worker won.

Names (an id matches ID_RE; `@` never occurs in an id or an owner, so names parse without ambiguity):

    pending/.<id>.tmp                    a submit in progress (files starting with "." are never read)
    pending/<id>.json                    a request no worker has tried yet
    pending/<id>@<n>.json                a request tried n times already (n counts claims that ended unfinished)
    processing/<id>@<n>@<owner>.json     attempt n, claimed by owner; the file's mtime is the heartbeat
    done/.<id>.<owner>.tmp/              a job's output while it runs (hidden: never a result)
    done/<id>/                           the result, published by one rename of the folder above
    failed/<id>.json + <id>.error.json   {error_code, message, attempts, ...}
    failed/.<id>.<owner>.error.tmp       an error record waiting for its request (a crash between two renames)

Exactly one result per id: `done/<id>/` is published by renaming a folder onto a name that must not exist (POSIX
refuses to rename a folder onto a non-empty one, Windows onto any), and a claimed request whose `done/<id>/`
already exists is not run again. A request queued twice is therefore harmless.

This module is the protocol and nothing else: no logging, no validation of request contents (see
common.schemas), no watching (see pc.worker).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import atomic, formats, safeio
from common.home import Home
from common.log import now
from common.queue_names import (
    ERROR_SUFFIX,
    ID_RE,
    SEP,
    SUFFIX,
    Claim,
    Entry,
    Recovered,
    failed_stem,
    is_valid_id,
    is_valid_owner,
    parse_claim_name,
    parse_pending_name,
    pending_name,
)

ERROR_SCHEMA = formats.QUEUE_ERROR
_WINDOWS = sys.platform == "win32"
# What a lost race looks like: the source is gone; on Windows a rename also refuses an existing target and a file
# another process holds open (an SMB copy still in progress). On POSIX a PermissionError is a real fault.
LOST_RACE: tuple[type[OSError], ...] = (
    (FileNotFoundError, FileExistsError, PermissionError) if _WINDOWS else (FileNotFoundError,)
)


def encode(request: Mapping[str, Any]) -> bytes:
    """A request as the queue stores it (and as `krx request --via` sends it): UTF-8 JSON, dates as text."""
    return (json.dumps(dict(request), ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Queue:
    """The four folders of one queue. Build it with `Queue.at(inbox, out)` or `Queue.of_home(home)`."""

    inbox: Path
    out: Path
    processing: Path
    failed: Path

    @classmethod
    def at(cls, inbox: str | os.PathLike, out: str | os.PathLike | None = None) -> Queue:
        """processing/ and failed/ sit beside the inbox; out defaults to done/ beside it too."""
        inbox = Path(inbox).absolute()
        parent = inbox.parent
        return cls(inbox, Path(out).absolute() if out is not None else parent / "done",
                   parent / "processing", parent / "failed")

    @classmethod
    def of_home(cls, home: Home) -> Queue:
        return cls(home.queue("pending"), home.queue("done"), home.queue("processing"), home.queue("failed"))

    def ensure(self) -> Queue:
        for folder in (self.inbox, self.processing, self.failed, self.out):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    # --- looking ------------------------------------------------------------------------------------------

    def pending(self) -> list[Entry]:
        """The inbox's request files, oldest first. Hidden files and other suffixes are left alone; a `.json`
        whose name is not a valid id (not UTF-8 included), or that is not a regular file (a symbolic link, a
        folder, a FIFO, a device), comes back with valid_name=False so the worker can fail it."""
        found: list[tuple[float, Entry]] = []
        try:
            scan = list(os.scandir(self.inbox))
        except FileNotFoundError:
            return []
        for item in scan:
            name = item.name
            if name.startswith(".") or not name.endswith(SUFFIX):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:  # claimed by someone else while we looked
                continue
            kind = safeio.file_kind(st.st_mode)
            parsed = parse_pending_name(name) if kind == "file" else None
            if parsed is None:
                entry = Entry(Path(item.path), name[: -len(SUFFIX)], 0, False, kind)
            else:
                entry = Entry(Path(item.path), parsed[0], parsed[1])
            found.append((st.st_mtime, entry))
        found.sort(key=lambda pair: (pair[0], pair[1].path.name))
        return [entry for _, entry in found]

    def claims(self) -> list[Claim]:
        """Every claim in processing/ (of any owner)."""
        out = []
        try:
            names = os.listdir(self.processing)
        except FileNotFoundError:
            return []
        for name in names:
            parsed = parse_claim_name(name)
            if parsed:
                out.append(Claim(self.processing / name, *parsed))
        return out

    def is_done(self, request_id: str) -> bool:
        return (self.out / request_id).is_dir()

    def where(self, request_id: str) -> str | None:
        """Which folder holds the id: "done", "failed", "processing", "pending", or None."""
        if not is_valid_id(request_id):
            raise ValueError(f"not a valid request id: {request_id!r}")
        # A request moves while we look (pending -> processing -> failed between two of the checks below): one
        # more look finds it where it went; only an id that is nowhere twice is unknown.
        for _ in range(2):
            found = self._where(request_id)
            if found is not None:
                return found
        return None

    def _where(self, request_id: str) -> str | None:
        if self.is_done(request_id):
            return "done"
        if (self.failed / f"{request_id}{SUFFIX}").exists():
            return "failed"
        prefix = f"{request_id}{SEP}"
        try:
            if any(n.startswith(prefix) and parse_claim_name(n) for n in os.listdir(self.processing)):
                return "processing"
        except FileNotFoundError:
            pass
        if (self.inbox / f"{request_id}{SUFFIX}").exists():
            return "pending"
        try:
            if any(n.startswith(prefix) and parse_pending_name(n) for n in os.listdir(self.inbox)):
                return "pending"
        except FileNotFoundError:
            pass
        return None

    # --- 1. submit ----------------------------------------------------------------------------------------

    def submit(self, request: Mapping[str, Any]) -> bool:
        """Queue `request` as pending/<id>.json: write pending/.<id>.tmp, flush, fsync, rename. Returns False and
        queues nothing when the id is already pending, processing, done or failed (running twice is harmless)."""
        request_id = request.get("id")
        if not is_valid_id(request_id):
            raise ValueError(f"request id must match {ID_RE.pattern} (not starting with '.'), got {request_id!r}")
        if self.where(request_id):
            return False
        self.inbox.mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / f".{request_id}.tmp"
        data = encode(request)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if self.where(request_id):  # a second look narrows the window of two concurrent submits
                tmp.unlink(missing_ok=True)
                return False
            os.rename(tmp, self.inbox / f"{request_id}{SUFFIX}")
        except FileExistsError:  # Windows: the same id was submitted a moment ago
            tmp.unlink(missing_ok=True)
            return False
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic.fsync_dir(self.inbox)
        return True

    # --- 2. claim and heartbeat -----------------------------------------------------------------------------

    def claim(self, entry: Entry, owner: str) -> Claim | None:
        """Rename the entry to processing/<id>@<n+1>@<owner>.json. None when another worker won."""
        if not entry.valid_name:
            raise ValueError(f"cannot claim {entry.path.name}: not a request file name")
        if not is_valid_owner(owner):
            raise ValueError(f"owner must match [A-Za-z0-9-]{{1,80}}, got {owner!r}")
        attempt = entry.attempts + 1
        target = self.processing / f"{entry.id}{SEP}{attempt}{SEP}{owner}{SUFFIX}"
        try:
            # Touch first: a rename keeps the mtime, and the claim's mtime is its heartbeat, so a request that
            # waited longer than the lease must not look stale the moment it is claimed.
            os.utime(entry.path)
            os.rename(entry.path, target)
        except LOST_RACE:
            return None
        return Claim(target, entry.id, attempt, owner)

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's mtime. False when the claim is gone (recovered by another worker: stop working)."""
        try:
            os.utime(claim.path)
            return True
        except LOST_RACE:
            return False

    # --- 3. run into a hidden folder, 4. finish ---------------------------------------------------------------

    def temp_path(self, claim: Claim) -> Path:
        """done/.<id>.<owner>.tmp/: where the claim's job writes (hidden: never taken for a result)."""
        return self.out / f".{claim.id}.{claim.owner}.tmp"

    def temp_dir(self, claim: Claim) -> Path:
        """A fresh, empty temp_path(claim) for the job's output."""
        tmp = self.temp_path(claim)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def finish(self, claim: Claim, tmp: Path, published_hook: Callable[[], None] | None = None) -> bool:
        """Publish `tmp` as done/<id>/ and remove the claim. False when done/<id>/ existed already (the other
        result wins; ours is deleted). `published_hook` runs after the publish and before the claim goes: a crash
        in between leaves the claim, and recover() finds its result ("done"), so the hook's work can be redone."""
        target = self.out / claim.id
        published = False
        if not target.exists():
            for path in tmp.rglob("*"):  # the folder's contents must be durable before its name is
                if path.is_file():
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
                elif path.is_dir():
                    atomic.fsync_dir(path)
            atomic.fsync_dir(tmp)
            try:
                os.rename(tmp, target)
                published = True
            except OSError as exc:
                lost = exc.errno in (errno.ENOTEMPTY, errno.EEXIST) or isinstance(exc, LOST_RACE)
                if not lost:
                    raise
        if published:
            atomic.fsync_dir(self.out)
            if published_hook is not None:
                published_hook()
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        self.drop(claim)
        return published

    def drop(self, claim: Claim) -> None:
        """Remove a claim whose request has its result (a missing claim is fine: someone else removed it)."""
        try:
            claim.path.unlink()
        except LOST_RACE:
            pass

    def release(self, claim: Claim, *, count_attempt: bool) -> bool:
        """Put a claim back into the inbox: counted (a failed try) or not (the worker is stopping)."""
        attempts = claim.attempt if count_attempt else claim.attempt - 1
        try:
            os.replace(claim.path, self.inbox / pending_name(claim.id, attempts))
        except LOST_RACE:
            return False
        return True

    # --- 5. fail --------------------------------------------------------------------------------------------

    def _error_record(self, request_id: str, code: str, message: str, attempts: int, owner: str | None,
                      source: str, extra: Mapping[str, Any]) -> dict:
        return {"schema": ERROR_SCHEMA, "id": safeio.show_name(request_id), "error_code": code, "message": message,
                "attempts": attempts, "owner": owner, "file": safeio.show_name(source),
                "failed_at": now().isoformat(), **extra}

    def _fail_move(self, source: Path, stem: str, owner: str, record: dict) -> bool:
        # The error record waits under a hidden name until the request itself is moved: if we lose the race
        # there is no stray error.json, and a crash between the two renames is completed by cleanup().
        tmp_err = self.failed / f".{stem}.{owner}.error.tmp"
        self.failed.mkdir(parents=True, exist_ok=True)
        atomic.write_json(tmp_err, record)
        try:
            os.replace(source, self.failed / f"{stem}{SUFFIX}")
        except LOST_RACE:
            tmp_err.unlink(missing_ok=True)
            return False
        os.replace(tmp_err, self.failed / f"{stem}{ERROR_SUFFIX}")
        atomic.fsync_dir(self.failed)
        return True

    def fail(self, claim: Claim, code: str, message: str, *, attempts: int | None = None, **extra: Any) -> bool:
        """Move a claim to failed/<id>.json with failed/<id>.error.json beside it (attempts: default the claim's
        attempt number; a request refused before it ran passes the tries it really had). False when we no longer
        own the claim."""
        attempts = claim.attempt if attempts is None else attempts
        record = self._error_record(claim.id, code, message, attempts, claim.owner, claim.path.name, extra)
        return self._fail_move(claim.path, claim.id, claim.owner, record)

    def fail_entry(self, entry: Entry, code: str, message: str, owner: str, **extra: Any) -> bool:
        """Move an inbox file straight to failed/ (it is invalid: it is never claimed nor run)."""
        stem = failed_stem(entry.path.name)
        record = self._error_record(entry.id, code, message, entry.attempts, owner, entry.path.name, extra)
        return self._fail_move(entry.path, stem, owner, record)

    # --- 6. recover -----------------------------------------------------------------------------------------

    def recover(self, lease_s: float, max_attempts: int, *, at: float | None = None) -> list[Recovered]:
        """Claims whose heartbeat is older than the lease: back to the inbox with the attempt counted, or to
        failed/ (JOB_FAILED) once max_attempts were used, or just removed when their result exists."""
        at = time.time() if at is None else at
        out: list[Recovered] = []
        for claim in self.claims():
            mtime = _mtime(claim.path)
            if mtime is None or at - mtime <= lease_s:
                continue
            age = at - mtime
            if self.is_done(claim.id):
                self.drop(claim)
                out.append(Recovered(claim, "done", age))
            elif claim.attempt >= max_attempts:
                message = (f"attempt {claim.attempt} of {max_attempts} by {claim.owner} stopped sending its heartbeat "
                           f"({age:.0f}s > lease {lease_s:g}s): the worker died or hung")
                if self.fail(claim, "JOB_FAILED", message, lease_s=lease_s):
                    out.append(Recovered(claim, "failed", age))
            elif self.release(claim, count_attempt=True):
                out.append(Recovered(claim, "requeued", age))
        return out

    def cleanup(self, lease_s: float, *, at: float | None = None) -> list[Path]:
        """Housekeeping after crashes: remove hidden temp folders in done/ whose owner no longer holds a claim
        (and that are older than the lease), and complete or remove hidden error records in failed/."""
        at = time.time() if at is None else at
        removed: list[Path] = []
        live = {(c.id, c.owner) for c in self.claims()}
        try:
            names = os.listdir(self.out)
        except FileNotFoundError:
            names = []
        for name in names:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            request_id, _, owner = name[1:-4].rpartition(".")
            path = self.out / name
            mtime = _mtime(path)
            if (request_id, owner) in live or mtime is None or at - mtime <= lease_s:
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        try:
            names = os.listdir(self.failed)
        except FileNotFoundError:
            names = []
        for name in names:
            if not (name.startswith(".") and name.endswith(".error.tmp")):
                continue
            stem = name[1:-len(".error.tmp")].rpartition(".")[0]
            path = self.failed / name
            try:
                if (self.failed / f"{stem}{SUFFIX}").exists() and not (self.failed / f"{stem}{ERROR_SUFFIX}").exists():
                    os.replace(path, self.failed / f"{stem}{ERROR_SUFFIX}")
                elif (mtime := _mtime(path)) is not None and at - mtime > lease_s:
                    path.unlink()
                    removed.append(path)
            except LOST_RACE:
                pass
        return removed


def submit(inbox: str | os.PathLike, request: Mapping[str, Any], *, out: str | os.PathLike | None = None) -> bool:
    """Queue `request` into `inbox` (see Queue.submit). False, queuing nothing, when its id is known already."""
    return Queue.at(inbox, out).submit(request)
