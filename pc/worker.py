"""`krx worker`: watch the queue's inbox, claim requests, run the backtest, publish results (DESIGN section 6).

    krx worker [--inbox reports/pending] [--out reports/done] [--polling] [--interval S] [--lease S]
               [--max-attempts N] [--concurrency N] [--once]

- A watchdog observer (native, or polling for network shares) only wakes the worker up: the inbox is also
  scanned at start-up and every interval, so a file that raised no event (there before the start, written by
  another machine) is still found.
- Each request is validated before any work (common.schemas); an invalid one goes to failed/ with its
  error_code. A file that does not parse yet may still be being written in place (a plain SMB copy): it is
  retried until it has been unchanged for settle_s, and only then failed.
- A claimed request runs in a job thread; a heartbeat thread refreshes the claim's mtime, so a worker that dies
  (even by SIGKILL) loses nothing: after the lease another worker puts its claim back into the inbox.
- SIGINT or SIGTERM: no new claims; running jobs get stop_grace_s to finish, then their claims go back to the
  inbox uncounted; exit 0. A second signal releases at once.

Every failure is one ERROR line (so one Slack message) and an event in the ops event log.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common import config, events, heartbeat, log, safeio, schemas
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.queue import Queue
from common.queue_names import Claim, Entry, new_owner

DEFAULT_JOB = "pc.jobs:run"
RESULT_FILE = "result.json"

_log = log.get("worker")

# The job: run_request(request, out_dir, home, progress=None) -> result dict; it writes its files into out_dir.
Job = Callable[..., Mapping[str, Any] | None]


class JobCancelled(Exception):
    """Raised by progress() when the worker is stopping: the claim goes back to the inbox uncounted."""


class ClaimLost(Exception):
    """Raised by progress() when another worker took this claim back (our heartbeat came too late)."""


@dataclass(frozen=True)
class Settings:
    """The `worker:` section of configs/app.yaml, with command-line overrides."""

    polling: bool = False
    interval_s: float = 5.0
    lease_s: float = 300.0
    max_attempts: int = 3
    concurrency: int = 1
    settle_s: float = 3.0
    max_request_bytes: int = schemas.DEFAULT_MAX_BYTES
    stop_grace_s: float = 20.0

    @classmethod
    def from_config(cls, home: Home | None = None, **overrides: Any) -> Settings:
        cfg = config.load("app", home).get("worker", {})
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg.items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def heartbeat_s(self) -> float:
        # Several beats per lease, so one late beat (a busy machine) never looks like a dead worker.
        return max(0.02, min(self.interval_s, self.lease_s / 5))


def load_job(spec: str) -> Job:
    """`module:function` -> the callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--job expects MODULE:FUNCTION, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target


def _permanent(error: BaseException | None) -> bool:
    """A job error no retry can fix: the backtest's own refusals (no data in range, a bad parameter) and a store
    that lacks days. Anything else (a crash, a full disk, a share that dropped) is tried again."""
    from common.store import StoreError

    return bool(getattr(error, "permanent", False)) or isinstance(error, (StoreError, config.ConfigError))


def _append_event(home: Home, name: str, request: Mapping[str, Any] | None, **fields_: Any) -> None:
    """The ops event log is evidence, not a dependency: a worker on a share without the NAS's state keeps going."""
    correlation_id = request.get("correlation_id") if isinstance(request, Mapping) else None
    events.append_quietly(home, name, correlation_id=correlation_id, **fields_)


@dataclass
class _Active:
    claim: Claim
    request: dict
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    settled: bool = False  # finished, failed or released: nobody touches the claim any more
    thread: threading.Thread | None = None

    def progress(self, *_args: Any, **_kwargs: Any) -> None:
        """Handed to the job: a cheap check that lets a long job stop early when its work is no longer wanted."""
        if self.lost.is_set():
            raise ClaimLost(f"claim {self.claim.path.name} was taken back by another worker")
        if self.cancel.is_set():
            raise JobCancelled("the worker is stopping")


class _Hint:
    """watchdog handler: any new name in the inbox asks the worker for a scan (which then decides what to do)."""

    def __init__(self, inbox: Path, hint: Callable[[], None]):
        self.inbox = os.path.normcase(str(inbox))
        self.hint = hint

    def dispatch(self, event: Any) -> None:
        kind = event.event_type
        if kind not in ("created", "moved", "modified", "closed"):
            return
        path = os.fsdecode(event.dest_path if kind == "moved" else event.src_path)
        name = os.path.basename(path)
        if name.startswith(".") or not name.endswith(".json"):
            return
        if os.path.normcase(os.path.dirname(path)) == self.inbox:
            self.hint()


def _shorten_inotify_move_delay(seconds: float = 0.01) -> None:
    """watchdog's inotify backend holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and every
    later event waits behind it (watchdog issue #649). Each claim renames a file out of the inbox, so on a busy
    queue a new request would be seen half a second late. Events are only hints here (a move reported as a
    delete plus a create wakes us just the same), so a short pairing window is enough."""
    for module, name in (("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),  # 6+
                         ("watchdog.observers.inotify_buffer", "InotifyBuffer")):  # watchdog 4 and 5
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # not Linux, or another layout: the default delay stays
            continue
        if getattr(cls, "delay", 0) > seconds:
            cls.delay = seconds
        return


class Worker:
    """One worker process: claims requests from `queue` and runs `job` on them, `settings.concurrency` at a time."""

    def __init__(self, queue: Queue, home: Home, settings: Settings, job: Job, *, owner: str | None = None,
                 strategies: Mapping | None = None):
        self.queue, self.home, self.settings, self.job = queue, home, settings, job
        self.owner = owner or new_owner()
        self._strategies = strategies
        self._fixed_strategies = strategies is not None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._hard = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}  # unparsable files: (size, mtime) first seen
        self._stuck: dict[Path, str] = {}  # files this worker cannot claim (e.g. permissions): error last logged
        # The last scan's entries, taken in order: a backlog of n requests costs one scan, not n.
        self._backlog: collections.deque[Entry] = collections.deque()
        self._rescan = threading.Event()
        self._next_scan = 0.0
        self.observer_kind = "none"
        self.processed = 0  # jobs run to a result by this worker

    # --- control ----------------------------------------------------------------------------------------------

    def stop(self, *, hard: bool = False) -> None:
        """Ask the worker to stop (thread- and signal-safe): finish or release the running jobs, then return."""
        if hard or self._stopping.is_set():
            self._hard.set()
        self._stopping.set()
        self._wake.set()

    def hint(self) -> None:
        """Something new may be in the inbox (a watchdog event): scan again now."""
        self._rescan.set()
        self._wake.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop(hard=self._stopping.is_set())

    # --- the loop ----------------------------------------------------------------------------------------------

    def run(self, *, once: bool = False, install_signals: bool = True) -> int:
        """Work until stopped (or, with once, until the inbox holds nothing more to do). Returns an exit code."""
        s = self.settings
        if not self.queue.inbox.is_dir():
            # never create it: under an unmounted share that would be a local folder nobody writes to
            log.event(_log, "WORKER_START", f"the inbox {self.queue.inbox} does not exist (is the share mounted? "
                      "`krx init` creates a home's folders)", rc=EXIT_FAILED, level=logging.ERROR)
            return EXIT_FAILED
        self.queue.ensure()
        if not self._refresh_strategies(first=True):
            return EXIT_FAILED
        previous = self._install_signals() if install_signals else {}
        observer = None if once else self._start_observer()
        beat = threading.Thread(target=self._beat, name="krx-heartbeat", daemon=True)
        beat.start()
        log.event(_log, "WORKER_START", f"owner={self.owner} inbox={self.queue.inbox} out={self.queue.out} "
                  f"observer={self.observer_kind} interval={s.interval_s:g}s lease={s.lease_s:g}s "
                  f"max_attempts={s.max_attempts} concurrency={s.concurrency} once={once}")
        next_maintenance = 0.0
        try:
            io_error = ""
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    if time.monotonic() >= next_maintenance:
                        next_maintenance = time.monotonic() + s.interval_s
                        self._maintain()
                    started, left, scanned = self._fill()
                except OSError as exc:  # the share went away for a moment: say so once, try again next interval
                    if str(exc) != io_error:
                        log.event(_log, "QUEUE_IO", f"{type(exc).__name__}: {exc}; retrying every "
                                  f"{s.interval_s:g}s", level=logging.WARNING)
                    io_error, self._backlog = str(exc), collections.deque()
                    self._next_scan = time.monotonic() + s.interval_s
                    self._wake.wait(s.interval_s)
                    continue
                if io_error:
                    log.event(_log, "QUEUE_IO", "the queue folders are reachable again")
                    io_error = ""
                if once and scanned and not started and not left and not self._active:
                    break
                self._wake.wait(max(0.01, min(s.interval_s, self._next_scan - time.monotonic())))
        finally:
            self._shutdown(observer)
            beat.join(timeout=2)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.event(_log, "WORKER_STOP", f"owner={self.owner} processed={self.processed}", rc=EXIT_OK)
        return EXIT_OK

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _start_observer(self) -> Any:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        _shorten_inotify_move_delay()

        kinds = ["polling"] if self.settings.polling else ["native", "polling"]
        for kind in kinds:
            observer = PollingObserver(timeout=self.settings.interval_s) if kind == "polling" else Observer()
            try:
                observer.schedule(_Hint(self.queue.inbox, self.hint), str(self.queue.inbox), recursive=False)
                observer.start()
            except OSError as exc:  # e.g. the inotify watch limit: polling still works
                log.event(_log, "WATCH", f"{kind} observer failed ({exc}); trying polling", level=logging.WARNING)
                continue
            self.observer_kind = kind
            return observer
        self.observer_kind = "scan-only"
        return None

    def _beat(self) -> None:
        while not (self._stopping.is_set() and not self._active):
            with self._lock:
                active = list(self._active.values())
            for job in active:
                if not job.settled and not self.queue.heartbeat(job.claim):
                    job.lost.set()
            heartbeat.beat(self.queue.inbox.parent)  # for the NAS's watchdog (reports/ops/heartbeat/)
            if self._hard.wait(self.settings.heartbeat_s):
                return

    def _refresh_strategies(self, first: bool = False) -> bool:
        if self._fixed_strategies:
            return True
        try:
            self._strategies = config.load("strategies", self.home)
        except config.ConfigError as exc:
            level = logging.ERROR if first or self._strategies is None else logging.WARNING
            log.event(_log, "CONFIG", f"strategies config: {exc}", rc=EXIT_FAILED, level=level)
            return self._strategies is not None
        return True

    def _maintain(self) -> None:
        """Every interval: re-read the allowlist, return stale claims, clear up after crashes."""
        s = self.settings
        self._refresh_strategies()
        for rec in self.queue.recover(s.lease_s, s.max_attempts):
            c = rec.claim
            if rec.action == "failed":
                message = f"gave up after {c.attempt} attempts: the last worker ({c.owner}) stopped sending its " \
                          f"heartbeat for {rec.age_s:.0f}s"
                log.event(_log, "JOB_FAILED", f"id={c.id} error_code=JOB_FAILED {message}", rc=EXIT_FAILED,
                          level=logging.ERROR)
                _append_event(self.home, "backtest_failed", None, id=c.id, error_code="JOB_FAILED",
                              attempts=c.attempt, message=message)
            elif rec.action == "requeued":
                log.event(_log, "CLAIM_RECOVERED", f"id={c.id} owner={c.owner} attempt={c.attempt} "
                          f"heartbeat_age={rec.age_s:.1f}s lease={s.lease_s:g}s: back to the inbox",
                          level=logging.WARNING)
            else:  # its worker died between publishing and logging: the result gets its JOB_DONE now
                log.event(_log, "JOB_DONE", f"id={c.id} attempt={c.attempt} -> {self.queue.out.name}/{c.id}/ "
                          f"(recovered: {c.owner} stopped after publishing)", rc=EXIT_OK)
                _append_event(self.home, "backtest_done", None, id=c.id, attempt=c.attempt, owner=c.owner,
                              recovered=True, result=f"{c.id}/{RESULT_FILE}")
        for path in self.queue.cleanup(s.lease_s):
            log.event(_log, "CLEANUP", f"removed {path.name} left by a stopped worker", level=logging.DEBUG)

    # --- claiming ---------------------------------------------------------------------------------------------

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
            _append_event(self.home, "backtest_rejected", None, id=shown, error_code=exc.code, message=str(exc))

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
                _append_event(self.home, "backtest_rejected", None, id=claim.id, error_code=code, message=str(exc))
            return False
        active = _Active(claim, request)
        active.thread = threading.Thread(target=self._run_job, args=(active,), name=f"krx-job-{claim.id}",
                                         daemon=True)
        with self._lock:
            self._active[claim.id] = active
        active.thread.start()
        return True

    # --- running ----------------------------------------------------------------------------------------------

    def _run_job(self, active: _Active) -> None:
        claim, request = active.claim, active.request
        t0 = time.monotonic()
        log.event(_log, "JOB_START", f"id={claim.id} attempt={claim.attempt} strategy={request['strategy']} "
                  f"owner={self.owner}")
        outcome, error, tmp = "ok", None, None
        try:
            tmp = self.queue.temp_dir(claim)
            result = self.job(request, tmp, self.home, progress=active.progress)
            if not (tmp / RESULT_FILE).is_file():
                if not isinstance(result, Mapping):
                    raise RuntimeError(f"the job wrote no {RESULT_FILE} and returned no result")
                # a plain write: nothing reads the hidden folder, and finish() fsyncs it before publishing
                (tmp / RESULT_FILE).write_text(json.dumps(dict(result), ensure_ascii=False, indent=2,
                                                          default=str) + "\n", encoding="utf-8")
        except JobCancelled:
            outcome = "cancelled"
        except ClaimLost:
            outcome = "lost"
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a job's failure must never stop the worker
            outcome, error = "error", exc
        elapsed = (time.monotonic() - t0) * 1000
        try:
            with active.lock:
                if active.settled:  # released by a stopping worker: the request is back in the inbox
                    outcome = "released"
                else:
                    active.settled = True
                    self._settle_job(active, outcome, error, tmp, elapsed)
        except Exception as exc:  # noqa: BLE001 - e.g. the share went away; the lease brings the claim back
            log.event(_log, "JOB_FINISH", f"id={claim.id}: {type(exc).__name__}: {exc}", level=logging.WARNING)
        finally:
            if outcome != "ok" and tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._active.pop(claim.id, None)
            self._wake.set()

    def _settle_job(self, active: _Active, outcome: str, error: BaseException | None, tmp: Path | None,
                    elapsed: float) -> None:
        claim, request, s = active.claim, active.request, self.settings
        if outcome == "ok" and tmp is not None:
            def done() -> None:  # before the claim goes: a kill here is completed by _maintain's recovery
                log.event(_log, "JOB_DONE", f"id={claim.id} attempt={claim.attempt} -> {self.queue.out.name}/"
                          f"{claim.id}/", rc=EXIT_OK, elapsed_ms=elapsed)
                _append_event(self.home, "backtest_done", request, id=claim.id, attempt=claim.attempt,
                              owner=self.owner, elapsed_ms=int(elapsed), result=f"{claim.id}/{RESULT_FILE}")

            if self.queue.finish(claim, tmp, done):
                with self._lock:
                    self.processed += 1
            else:
                log.event(_log, "ALREADY_DONE", f"id={claim.id}: another worker published first; ours dropped",
                          elapsed_ms=elapsed)
        elif outcome == "cancelled":
            self.queue.release(claim, count_attempt=False)
            log.event(_log, "JOB_RELEASED", f"id={claim.id}: worker stopping, back to the inbox", elapsed_ms=elapsed)
        elif outcome == "lost":
            log.event(_log, "CLAIM_LOST", f"id={claim.id}: another worker took the claim back; run dropped",
                      level=logging.WARNING, elapsed_ms=elapsed)
        elif outcome == "error":
            message = f"{type(error).__name__}: {error}"[:2000]
            if claim.attempt >= s.max_attempts or _permanent(error):  # no data in range: a retry cannot help
                if self.queue.fail(claim, "JOB_FAILED", message):
                    log.event(_log, "JOB_FAILED", f"id={claim.id} error_code=JOB_FAILED attempts={claim.attempt} "
                              f"{message}", rc=EXIT_FAILED, elapsed_ms=elapsed, level=logging.ERROR)
                    _append_event(self.home, "backtest_failed", request, id=claim.id, error_code="JOB_FAILED",
                                  attempts=claim.attempt, message=message)
            elif self.queue.release(claim, count_attempt=True):
                log.event(_log, "JOB_RETRY", f"id={claim.id} attempt={claim.attempt} of {s.max_attempts} failed: "
                          f"{message}", elapsed_ms=elapsed, level=logging.WARNING)

    # --- stopping ----------------------------------------------------------------------------------------------

    def _shutdown(self, observer: Any) -> None:
        if observer is not None:
            observer.stop()
        deadline = time.monotonic() + self.settings.stop_grace_s
        while self._active and not self._hard.is_set() and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
        with self._lock:
            remaining = list(self._active.values())
        for active in remaining:
            active.cancel.set()
            with active.lock:
                if active.settled:
                    continue
                active.settled = True
                if self.queue.release(active.claim, count_attempt=False):
                    log.event(_log, "JOB_RELEASED", f"id={active.claim.id}: worker stopping, back to the inbox")
        for active in remaining:  # a job that calls progress() stops now; its output is of no use any more
            if active.thread is not None:
                active.thread.join(timeout=1)
            shutil.rmtree(self.queue.temp_path(active.claim), ignore_errors=True)
        self._stopping.set()
        self._hard.set()  # stops the heartbeat
        if observer is not None:
            observer.join(timeout=2)


# --- entry points ---------------------------------------------------------------------------------------------------


def build(inbox: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *, home: Home | None = None,
          job: Job | str | None = None, settings: Settings | None = None, **overrides: Any) -> Worker:
    """A Worker on `inbox`/`out` (default: the home's reports/pending and reports/done), settings from app.yaml
    `worker:` with `overrides` (polling, interval_s, lease_s, max_attempts, concurrency, settle_s, ...)."""
    home = home or Home.from_env()
    if inbox is None:
        queue = Queue.of_home(home)
        if out is not None:
            queue = replace(queue, out=Path(out).absolute())
    else:
        queue = Queue.at(inbox, out)
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None}) if settings \
        else Settings.from_config(home, **overrides)
    job = load_job(job or DEFAULT_JOB) if job is None or isinstance(job, str) else job
    return Worker(queue, home, settings, job)


def run_once(inbox: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *,
             home: Home | None = None, job: Job | str | None = None, **overrides: Any) -> int:
    """Process everything pending, then return 0: the one-shot behind `krx worker --once` and
    `python -m pc.backtest run --inbox reports/pending --out reports/done` (cron, Task Scheduler, watchmedo)."""
    home = home or Home.from_env()
    log.setup_logging("worker", home)
    try:
        worker = build(inbox, out, home=home, job=job, **overrides)
    except (ImportError, AttributeError, ValueError) as exc:
        log.event(_log, "WORKER_START", f"cannot load the job: {exc}", rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    return worker.run(once=True)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inbox", type=Path, help="the queue's inbox (default: reports/pending of the home); "
                        "processing/ and failed/ sit beside it")
    parser.add_argument("--out", type=Path, help="where results go (default: done/ beside the inbox)")
    parser.add_argument("--polling", action=argparse.BooleanOptionalAction, default=None,
                        help="poll instead of native file events: needed on SMB/NFS shares (default: app.yaml)")
    parser.add_argument("--interval", type=_positive(float), metavar="S",
                        help="inbox re-scan, lease check and polling period in seconds")
    parser.add_argument("--lease", type=_positive(float), metavar="S",
                        help="a claim whose heartbeat is older than this goes back to the inbox")
    parser.add_argument("--max-attempts", type=_positive(int), metavar="N", help="tries before failed/")
    parser.add_argument("--concurrency", type=_positive(int), metavar="N", help="jobs run at the same time")
    parser.add_argument("--settle", type=_positive(float), metavar="S",
                        help="a request that does not parse is failed once unchanged this long")
    parser.add_argument("--once", action="store_true", help="process everything pending, then exit")
    parser.add_argument("--job", default=DEFAULT_JOB, metavar="MODULE:FUNCTION",
                        help=f"the job run on each request (default {DEFAULT_JOB}); another function with the same "
                        "signature serves tests, benchmarks and custom jobs. Requests never choose it.")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("worker", home)
    try:
        worker = build(args.inbox, args.out, home=home, job=args.job, polling=args.polling,
                       interval_s=args.interval, lease_s=args.lease, max_attempts=args.max_attempts,
                       concurrency=args.concurrency, settle_s=args.settle)
    except (ImportError, AttributeError, ValueError) as exc:
        log.event(_log, "WORKER_START", f"cannot load the job {args.job}: {exc}", rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    return worker.run(once=args.once)
