"""Watching the inbox: a watchdog observer (native, else polling) whose events only wake the worker up (DESIGN
section 6: events are hints; the worker's scans decide)."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import log

_log = log.get("worker")


class Hint:
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


def start_observer(inbox: Path, hint: Callable[[], None], *, polling: bool, interval_s: float) -> tuple[Any, str]:
    """(a started observer calling `hint` on new names in `inbox`, its kind: native or polling); (None,
    "scan-only") when neither starts, and the worker's periodic scans carry on alone."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    _shorten_inotify_move_delay()

    for kind in ["polling"] if polling else ["native", "polling"]:
        observer = PollingObserver(timeout=interval_s) if kind == "polling" else Observer()
        try:
            observer.schedule(Hint(inbox, hint), str(inbox), recursive=False)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: polling still works
            log.event(_log, "WATCH", f"{kind} observer failed ({exc}); trying polling", level=logging.WARNING)
            continue
        return observer, kind
    return None, "scan-only"
