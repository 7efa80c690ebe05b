"""The `krx` face (faces/cli): one line and an exit code of 0, 2 or 3 whatever a job raises."""

from __future__ import annotations

from common.home import Home


def test_an_unexpected_error_exits_3_with_one_line(home: Home) -> None:
    """Exit codes are 0, 2 or 3 (the cycle and cron read them): an exception a job did not expect is a failure,
    exit 3 with one line naming it, not Python's traceback and exit 1."""
    from conftest import krx

    (home.reports / "ops").write_text("a file where a folder belongs", encoding="utf-8")
    out = krx("ops", "summary", home=home)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert "krx ops: failed:" in out.stderr and "reports/ops" in out.stderr
