"""The Slack ERROR log (DESIGN section 8): every ERROR record of every job goes to notify.yaml's slack.channel.

`send_verbose_log_to_slack(home, job)` attaches a `SlackErrorHandler` through `common.log.add_error_sink` when a
token or webhook is present and `error_log_to_slack: true` (independent of the alert's delivery policy: errors
are ops telemetry); `common.log.setup_logging` calls it once per process.

The handler:
- never blocks the job: `emit` only puts the formatted, redacted line on a bounded queue; a listener thread sends.
  When the queue is full the record is dropped and counted;
- never loops: records of its own loggers (krx.slack*, krx.slacklog), of slack_sdk and urllib3, and anything
  logged on the listener thread are ignored; a failed send is counted, never logged above DEBUG, never retried
  by us (slack-sdk's own bounded retries are the one retry chain per record);
- honours HTTP 429 Retry-After through slack-sdk's RateLimitErrorRetryHandler (common.slack.retry_handlers);
- folds repeats: the first occurrence of a line goes out at once, identical lines within the fold window
  (a minute) are counted and go out as one message "repeated N times";
- redacts tokens and webhook URLs from every text (common.slack.redact);
- at exit (atexit) sends what is still queued, within a bounded time; what cannot go out in time is dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common import log as krxlog
from common import slack
from common.redact import redact

log = logging.getLogger("krx.slacklog")

# Records from these loggers never go to Slack: they are ours or the HTTP stack's, and sending them would loop.
IGNORED_LOGGERS = ("krx.slacklog", "krx.slack", "slack_sdk", "slack", "urllib3")

DEFAULT_QUEUE_SIZE = 200
DEFAULT_FOLD_WINDOW_S = 60.0
DEFAULT_FLUSH_TIMEOUT_S = 5.0
_STOP = object()


@dataclass
class _Fold:
    first_at: float     # monotonic time of the occurrence that was sent
    repeats: int        # identical records since, not yet sent
    line: str           # the newest of them (its timestamp)


class SlackErrorHandler(logging.Handler):
    """A non-blocking logging handler that posts ERROR records to Slack from a listener thread."""

    def __init__(
        self,
        post: Callable[[str], object],
        *,
        job: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        fold_window_s: float = DEFAULT_FOLD_WINDOW_S,
        flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`post(text)` delivers one message and raises on failure (e.g. `slack.Sender.post(text=...)`)."""
        super().__init__(level=logging.ERROR)
        self.setFormatter(krxlog.LineFormatter())
        self.job = job
        self.host = socket.gethostname() or "unknown"
        self.fold_window_s = max(0.0, float(fold_window_s))
        self.flush_timeout_s = max(0.0, float(flush_timeout_s))
        self._post = post
        self._clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self._folds: dict[tuple, _Fold] = {}
        self._lock = threading.Lock()
        self.sent = self.failed = self.dropped = self.folded = self.suppressed = 0
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="krx-slack-error-log", daemon=True)
        self._thread.start()

    # --- the job's side: cheap and never blocking ------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or self._closed:
            return False
        if threading.current_thread() is self._thread:  # whatever the sending itself logs
            return False
        if getattr(record, "own_slack_message", False):  # the job posts it itself, once (the watchdog's incidents)
            return False
        name = record.name
        if any(name == p or name.startswith(p + ".") for p in IGNORED_LOGGERS):
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = redact(self.format(record))
            event = getattr(record, "event", None) or record.name
            key = (record.levelno, event, redact(record.getMessage()),
                   type(record.exc_info[1]).__name__ if record.exc_info and record.exc_info[1] else None)
        except Exception:  # a record that cannot be formatted is not worth breaking the job for
            self._count("dropped")
            return
        try:
            self._queue.put_nowait((key, line))
        except queue.Full:
            self._count("dropped")

    def handle(self, record: logging.LogRecord) -> bool:
        # logging.Handler.handle takes the handler lock around emit; emit is already thread-safe and cheap
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    # --- the listener thread -----------------------------------------------------------------------------------

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)

    def _text(self, line: str, repeats: int = 0) -> str:
        where = f"{self.job}@{self.host}" if self.job else self.host
        head = f"*{slack.escape(where)}*"
        if repeats:
            head += f" — repeated {repeats} more time{'s' if repeats != 1 else ''} within {self.fold_window_s:g}s"
        body = slack.escape(line)
        limit = slack.MAX_SECTION_TEXT - len(head) - 10
        if len(body) > limit:
            body = body[: limit - 1] + "…"
        return f"{head}\n```{body}```"

    def _send(self, text: str) -> None:
        try:
            self._post(redact(text))
        except Suppressed:
            self._count("suppressed")
        except Exception as exc:  # counted, never logged where it could come back here, never retried by us
            self._count("failed")
            log.debug("slack error log: send failed: %s", redact(exc))
        else:
            self._count("sent")

    def _flush_folds(self, force: bool = False) -> None:
        now = self._clock()
        for key, fold in list(self._folds.items()):
            if force or now - fold.first_at >= self.fold_window_s:
                del self._folds[key]
                if fold.repeats:
                    self._send(self._text(fold.line, fold.repeats))

    def _handle_item(self, key: tuple, line: str) -> None:
        now = self._clock()
        fold = self._folds.get(key)
        if fold is not None and now - fold.first_at < self.fold_window_s:
            fold.repeats += 1
            fold.line = line
            self._count("folded")
            return
        if fold is not None and fold.repeats:  # the old window ended: its count goes out first
            self._send(self._text(fold.line, fold.repeats))
        self._folds[key] = _Fold(now, 0, line)
        self._send(self._text(line))

    def _listen(self) -> None:
        while True:
            wait = min((f.first_at + self.fold_window_s for f in self._folds.values() if f.repeats), default=None)
            timeout = None if wait is None else max(0.05, wait - self._clock())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._flush_folds()
                continue
            if item is _STOP:
                self._flush_folds(force=True)
                return
            try:
                self._handle_item(*item)
            except Exception:  # the listener must survive anything
                self._count("failed")
            self._flush_folds()

    # --- shutdown ------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Nothing to do synchronously: the job never waits for Slack (close() drains at exit)."""

    def close(self, timeout_s: float | None = None) -> None:
        """Send what is queued (and pending fold counts) within `timeout_s`, then stop; idempotent."""
        if not self._closed:
            self._closed = True
            deadline = time.monotonic() + (self.flush_timeout_s if timeout_s is None else max(0.0, timeout_s))
            while True:
                try:
                    self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                    break
                except queue.Full:
                    if time.monotonic() >= deadline:
                        break
            self._thread.join(max(0.0, deadline - time.monotonic()))
            left = self._queue.qsize()
            if self._thread.is_alive() or left:
                self._count("dropped", left)
            with contextlib.suppress(ValueError):
                krxlog.remove_error_sink(self)
        super().close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "folded": self.folded,
                    "suppressed": self.suppressed, "queued": self._queue.qsize()}


def _current() -> SlackErrorHandler | None:
    return next((h for h in krxlog.error_sinks() if isinstance(h, SlackErrorHandler)), None)


class Suppressed(Exception):
    """A message not sent because the emergency stop is on: counted, not a failure."""


def send_verbose_log_to_slack(notify: Mapping[str, Any], job: str, stopped: Callable[[], bool]
                              ) -> SlackErrorHandler | None:
    """Attach the Slack ERROR handler once per process when notify.yaml's `error_log_to_slack` is true (`notify`:
    that file's settings) and a token or webhook is present; return it (the one already attached, with `job`
    updated), or None when not configured. `stopped()` is asked before each message: the emergency stop silences
    every external send, ops telemetry included (asked per message: it may be switched on while the job runs)."""
    current = _current()
    if current is not None:
        if job:
            current.job = job
        return current
    if not notify["error_log_to_slack"]:
        return None
    opts = notify["error_log"]
    sender = slack.sender(notify["slack"]["channel"], timeout_s=int(opts["timeout_s"]), rate_limit_retries=1)
    if sender is None:
        return None

    def post(text: str) -> None:
        if stopped():
            raise Suppressed()
        sender.post(text=text)

    handler = SlackErrorHandler(
        post,
        job=job,
        queue_size=opts["queue_size"],
        fold_window_s=opts["fold_window_s"],
        flush_timeout_s=opts["flush_timeout_s"],
    )
    krxlog.add_error_sink(handler)
    atexit.register(handler.close)
    return handler
