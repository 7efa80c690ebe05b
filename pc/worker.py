"""The worker loop behind `krx worker`: watch the queue's inbox, claim requests, run the backtest, publish results
(DESIGN section 6). Its settings and queue options: pc.worker_settings; its intake (scan, refuse, claim):
pc.worker_intake; the command (with `--http`, the backtest API): faces/cli/worker.py.

- A watchdog observer (native, or polling for network shares; pc.watch) only wakes the worker up: the inbox is
  also scanned at start-up and every interval, so a file that raised no event (there before the start, written by
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

import collections
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common import config, events, heartbeat, log
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.queue import Queue
from common.queue_names import Claim, Entry, new_owner
from pc.watch import start_observer
from pc.worker_intake import Intake
from pc.worker_settings import DEFAULT_JOB, Job, Settings, add_arguments, load_job

__all__ = ["DEFAULT_JOB", "Job", "Settings", "Worker", "add_arguments", "build", "load_job", "run_once"]

RESULT_FILE = "result.json"

_log = log.get("worker")


class JobCancelled(Exception):
    """Raised by progress() when the worker is stopping: the claim goes back to the inbox uncounted."""


class ClaimLost(Exception):
    """Raised by progress() when another worker took this claim back (our heartbeat came too late)."""


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


class Worker(Intake):
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
        observer = None
        if not once:
            observer, self.observer_kind = start_observer(self.queue.inbox, self.hint, polling=s.polling,
                                                          interval_s=s.interval_s)
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

    # --- running ----------------------------------------------------------------------------------------------

    def _start(self, claim: Claim, request: dict) -> None:
        active = _Active(claim, request)
        active.thread = threading.Thread(target=self._run_job, args=(active,), name=f"krx-job-{claim.id}",
                                         daemon=True)
        with self._lock:
            self._active[claim.id] = active
        active.thread.start()

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
