"""Exclusive locks between processes on one machine (fcntl.flock; msvcrt on Windows).

- `locked(path)`: the lock file at `path` (the event log's, the EOD store's), waited for.
- `job_lock(home, name)`: one lock per daily job that matters, `state/locks/<name>.lock`, the very file the cron
  wrapper (`_run_generic.sh --lock NAME`) locks. The wrapper keeps its lock on descriptor 9 and says so in
  KRX_LOCK_FD; a command started under it finds that descriptor open on the same file and holds the lock already,
  so the wrapper and the command never lock each other out, while any other run of the job waits or stops.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from common.errors import EXIT_BLOCKED, AlertorError
from common.home import Home

HELD_FD_ENV = "KRX_LOCK_FD"
_POLL_S = 0.05


class LockBusy(AlertorError, RuntimeError):
    """Another process held the lock for longer than we were willing to wait."""

    exit_code = EXIT_BLOCKED  # another run holds the job: a normal outcome, not a failure


def _open(path: Path) -> int:
    """The lock file's descriptor; never follows a link or blocks on a FIFO: anything but a regular file where the
    lock file should be is moved aside (`<name>.damaged`) and a fresh one made, so a lock can always be taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            os.replace(path, path.with_name(f"{path.name}.damaged"))
    except FileNotFoundError:
        pass
    fd = os.open(path, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced again in between: give up rather than guess
        os.close(fd)
        raise OSError(f"{path}: the lock file is not a regular file")
    return fd


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _inherited(path: Path) -> int | None:
    """The descriptor our parent (the cron wrapper) holds this lock on, if it handed us one."""
    raw = os.environ.get(HELD_FD_ENV, "")
    if not raw.isdigit():
        return None
    try:
        held, ours = os.fstat(int(raw)), os.stat(path)
    except OSError:
        return None
    return int(raw) if (held.st_dev, held.st_ino) == (ours.st_dev, ours.st_ino) else None


@contextlib.contextmanager
def locked(path: str | os.PathLike, wait_s: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock on `path` for the block; wait at most `wait_s` (None: as long as it takes), then
    LockBusy."""
    path = Path(path)
    inherited = _inherited(path)
    if inherited is not None and _try_lock(inherited):  # same open file as the wrapper's: already ours
        yield
        return
    fd = _open(path)
    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not _try_lock(fd):
            if deadline is not None and time.monotonic() >= deadline:
                raise LockBusy(f"{path} is held by another run (waited {wait_s:g}s)")
            time.sleep(_POLL_S)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def attempt(path: str | os.PathLike) -> Iterator[bool]:
    """Hold the lock on `path` for the block if it is free (yields True); when another run holds it, yield False
    at once, holding nothing."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(path, wait_s=0))
        except LockBusy:
            yield False
            return
        yield True


def job_lock_path(home: Home, name: str) -> Path:
    return home.state / "locks" / f"{name}.lock"


def job_lock(home: Home, name: str, wait_s: float | None = None) -> contextlib.AbstractContextManager[None]:
    """The lock of one daily job (ingest, alert, daily), shared with the cron wrapper's `--lock NAME`."""
    return locked(job_lock_path(home, name), wait_s)


def home_lock(home: Home, name: str) -> contextlib.AbstractContextManager[bool]:
    """A non-blocking lock on state/.<name>.lock: False when another run of this home holds it (sync, retention)."""
    return attempt(home.state / f".{name}.lock")
