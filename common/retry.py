"""The one retry policy for network calls: bounded attempts and a total deadline, exponential backoff with
jitter, retrying only transient errors (timeouts, connection errors, HTTP 5xx and 429), each retry a WARNING."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from common import log

T = TypeVar("T")
_log = log.get("retry")


class TransientError(Exception):
    """Raised by our own code for a failure worth another try (e.g. an rsync exit code for a dropped link)."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TransientError, TimeoutError, ConnectionError)):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - requests ships with pykrx and slack tooling
        return False
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return status == 429 or 500 <= status < 600
    return False


def _warn(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    log.event(
        _log, "RETRY", f"{state.fn.__name__ if state.fn else 'call'} attempt={state.attempt_number} "
        f"error={type(exc).__name__}: {exc} next_in={wait:.1f}s", level=logging.WARNING,
    )


def policy(
    attempts: int = 4, deadline_s: float = 120.0, wait_initial_s: float = 1.0, wait_max_s: float = 20.0
) -> tenacity.Retrying:
    """A tenacity Retrying object: `policy(**cfg["retry"])(fn, *args)` or `policy().wraps(fn)`."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(deadline_s),
        wait=tenacity.wait_exponential_jitter(multiplier=wait_initial_s, max=wait_max_s, jitter=wait_initial_s),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=_warn,
        reraise=True,
    )


def call(fn: Callable[..., T], *args: Any, retry_cfg: dict | None = None, **kwargs: Any) -> T:
    """Call `fn` under the retry policy configured in app.yaml's `retry` section (or the defaults)."""
    return policy(**(retry_cfg or {}))(fn, *args, **kwargs)
