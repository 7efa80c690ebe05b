from __future__ import annotations

import logging
import time

import pytest
import requests

from common import retry

FAST = {"attempts": 3, "deadline_s": 30, "wait_initial_s": 0.01, "wait_max_s": 0.02}


def flaky(errors: list[BaseException]):
    """A call that raises the given errors in turn, then returns 'ok'; counts its calls."""
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    fn.calls = calls
    return fn


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"HTTP {status}", response=response)


@pytest.mark.parametrize("exc", [requests.Timeout("t"), requests.ConnectionError("c"), TimeoutError(),
                                 http_error(503), http_error(429), retry.TransientError("rsync 23")])
def test_transient_errors_are_retried_and_logged(exc, caplog: pytest.LogCaptureFixture) -> None:
    fn = flaky([exc, exc])
    with caplog.at_level(logging.WARNING, logger="krx.retry"):
        assert retry.call(fn, retry_cfg=FAST) == "ok"
    assert len(fn.calls) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and getattr(r, "event", "") == "RETRY"]
    assert len(warnings) == 2 and "attempt=1" in warnings[0].getMessage()


@pytest.mark.parametrize("exc", [http_error(400), http_error(404), ValueError("bad"), KeyError("close")])
def test_other_errors_are_not_retried(exc) -> None:
    fn = flaky([exc])
    with pytest.raises(type(exc)):
        retry.call(fn, retry_cfg=FAST)
    assert len(fn.calls) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    fn = flaky([requests.Timeout(f"t{i}") for i in range(10)])
    with pytest.raises(requests.Timeout, match="t2"):
        retry.call(fn, retry_cfg=FAST)
    assert len(fn.calls) == 3


def test_total_deadline_stops_retrying() -> None:
    def slow() -> None:
        slow.calls += 1
        time.sleep(0.2)
        raise requests.Timeout("slow")

    slow.calls = 0
    with pytest.raises(requests.Timeout):
        retry.call(slow, retry_cfg={**FAST, "attempts": 50, "deadline_s": 0.3})
    assert slow.calls <= 3  # the deadline, not the 50 attempts, ended it
