"""The worker's intake (half of pc.worker.Worker): scan the inbox, refuse what must not run (a bad name, a file that
does not parse once it has settled, a request that fails validation: each to failed/ with its error_code), claim
the rest and hand each claim to the worker's job runner. Only a parse before the claim: the full validation
(common.schemas, the same as `krx request` and the backtest API use) reads the claimed file."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from common import events, log, safeio, schemas
from common.errors import EXIT_FAILED
from common.home import Home
from common.queue import Queue
from common.queue_names import Claim, Entry
from pc.worker_settings import Settings

_log = log.get("worker")


class Intake:
    """Mixed into Worker, whose __init__ sets these; Worker provides `_start(claim, request)`."""

    queue: Queue
    home: Home
    settings: Settings
    owner: str
    _strategies: Mapping | None
    _stopping: threading.Event
    _lock: threading.Lock
    _active: dict
    _seen: dict[Path, tuple[tuple[int, int], float]]  # unparsable files: (size, mtime) first seen
    _stuck: dict[Path, str]  # files this worker cannot claim (e.g. permissions): error last logged
    _backlog: collections.deque[Entry]  # the last scan's entries, taken in order: a backlog of n costs one scan
    _rescan: threading.Event
    _next_scan: float

    _start: Callable[[Claim, dict], None]  # runs a validated claim in a job thread

    def _fill(self) -> tuple[int, int, bool]:
        """Claim what fits. Returns (jobs started, inbox entries left for later, whether the inbox was scanned)."""
        s = self.settings
        now = time.monotonic()
        scanned = False
        if not self._backlog or self._rescan.is_set() or now >= self._next_scan:
            self._rescan.clear()
            self._next_scan = now + s.interval_s
            entries = self.queue.pending()
            present = {e.path for e in entries}
            for path in [p for p in self._seen if p not in present]:
                del self._seen[path]
            for path in [p for p in self._stuck if p not in present]:
                del self._stuck[path]
            self._backlog = collections.deque(entries)
            scanned = True
        started, skipped = 0, 0
        while self._backlog and not self._stopping.is_set():
            with self._lock:
                if len(self._active) >= s.concurrency:
                    break
                mine = self._backlog[0].id in self._active
            entry = self._backlog.popleft()
            if mine:  # the same id queued twice: the next scan sees it again once ours is finished
                skipped += 1
                continue
            try:
                wait = self._consider(entry)
            except OSError as exc:
                if not self.queue.inbox.is_dir():
                    raise  # the share itself is gone: the run loop waits for it
                # one file this worker cannot touch must not hold up the requests behind it
                if self._stuck.get(entry.path) != str(exc):
                    self._stuck[entry.path] = str(exc)
                    log.event(_log, "REQUEST_STUCK", f"{entry.path.name}: {type(exc).__name__}: {exc}; skipped, "
                              f"tried again every {s.interval_s:g}s (check the file's permissions)",
                              level=logging.WARNING)
                continue
            if wait is True:
                started += 1
            elif wait is not False:  # not complete yet: look again when it may have settled
                skipped += 1
                self._next_scan = min(self._next_scan, time.monotonic() + wait)
        return started, len(self._backlog) + skipped, scanned

    def _consider(self, entry: Entry) -> bool | float:
        """Claim and start one inbox entry: True if started, False if not (gone, failed), or seconds to wait for
        a file that is still being written. Only a parse here: the full validation reads the claimed file."""
        if not entry.valid_name:
            name = safeio.show_name(entry.path.name)
            if entry.kind != "file":
                what = f"{name}: is a {entry.kind}, not a regular file (a request never chooses a path)"
            else:
                what = f"{name}: id: the file name is not a request file name <id>.json with id matching " \
                       "[A-Za-z0-9._-]{1,128}"
            self._reject(entry, schemas.RequestError(schemas.INVALID_REQUEST, what, file=name, field="id"))
            return False
        try:
            schemas.read(entry.path, max_bytes=self.settings.max_request_bytes)
        except FileNotFoundError:
            return False  # another worker claimed it
        except schemas.RequestError as exc:
            wait = self._settle(entry, exc)
            if wait is not None:
                return wait
            self._reject(entry, exc)
            return False
        except OSError as exc:
            log.event(_log, "READ", f"{entry.path.name}: {exc}", level=logging.WARNING)
            return False
        self._seen.pop(entry.path, None)
        return self._claim_and_start(entry)

    def _settle(self, entry: Entry, exc: schemas.RequestError) -> float | None:
        """Seconds to wait before failing a file that does not parse, or None to fail it now. The file must stay
        the same (size and mtime, as seen by this worker's own clock) for settle_s: a copy still writing in place
        changes, and another machine's clock never enters the comparison."""
        if exc.code != schemas.INVALID_JSON:
            return None
        try:
            st = entry.path.stat()
        except FileNotFoundError:
            return self.settings.settle_s
        sig, now = (st.st_size, st.st_mtime_ns), time.monotonic()
        seen = self._seen.get(entry.path)
        if seen is None or seen[0] != sig:
            self._seen[entry.path] = (sig, now)
            return self.settings.settle_s
        left = self.settings.settle_s - (now - seen[1])
        return left if left > 0 else None

    def _reject(self, entry: Entry, exc: schemas.RequestError) -> None:
        if self.queue.fail_entry(entry, exc.code, str(exc), self.owner, field=exc.field):
            self._seen.pop(entry.path, None)
            shown = safeio.show_name(entry.id)
            log.event(_log, "REQUEST_FAILED", f"id={shown} error_code={exc.code} {exc}", rc=EXIT_FAILED,
                      level=logging.ERROR)
            events.append_quietly(self.home, "backtest_rejected", correlation_id=None, id=shown,
                                  error_code=exc.code, message=str(exc))

    def _claim_and_start(self, entry: Entry) -> bool:
        s = self.settings
        claim = self.queue.claim(entry, self.owner)
        if claim is None:
            return False
        if self.queue.is_done(claim.id):  # idempotent: a request queued again after its result
            self.queue.drop(claim)
            log.event(_log, "ALREADY_DONE", f"id={claim.id}: done/{claim.id}/ exists; not run again")
            return False
        try:  # the claimed file is the one that counts: read it again
            request = schemas.load(claim.path, stem=claim.id, strategies=self._strategies,
                                   max_bytes=s.max_request_bytes, name=entry.path.name)
        except (schemas.RequestError, OSError) as exc:
            code = getattr(exc, "code", schemas.INVALID_REQUEST)
            if self.queue.fail(claim, code, str(exc), attempts=entry.attempts, field=getattr(exc, "field", None)):
                log.event(_log, "REQUEST_FAILED", f"id={claim.id} error_code={code} {exc}", rc=EXIT_FAILED,
                          level=logging.ERROR)
                events.append_quietly(self.home, "backtest_rejected", correlation_id=None, id=claim.id,
                                      error_code=code, message=str(exc))
            return False
        self._start(claim, request)
        return True

