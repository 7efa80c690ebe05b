"""Review findings on the NAS jobs: damaged inputs give a clear error (file, field, expectation) and exit 3,
never a traceback; requests never reach past the store."""

from __future__ import annotations

import pytest
from conftest import krx

from common.home import Home

SMALL = {"KRX__APP__SAMPLE__TICKERS": "30"}


@pytest.fixture()
def stored(home: Home) -> Home:
    out = krx("ingest", "--start", "2025-01-02", "--end", "2025-02-28", home=home, env=SMALL)
    assert out.returncode == 0, out.stderr
    return home


@pytest.mark.parametrize("damage", ["{broken", '{"dates": ["2025-13-45"], "closed": []}'])
@pytest.mark.parametrize("job", ["scan", "request"])
def test_damaged_manifest_fails_clearly(stored: Home, damage: str, job: str) -> None:
    (stored.data / "eod" / "manifest.json").write_text(damage, encoding="utf-8")
    out = krx(job, home=stored)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert "manifest.json" in out.stderr
    assert list(stored.queue("pending").iterdir()) == []


@pytest.mark.parametrize("day", ["2024-06-03", "2025-06-02"])
def test_request_for_a_day_outside_the_store_is_refused(stored: Home, day: str) -> None:
    """Before the first stored day (was an IndexError traceback) or after the last (was a request for data the
    store does not have, queued as if fine)."""
    out = krx("request", "--date", day, home=stored)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr and "store" in out.stderr
    assert list(stored.queue("pending").iterdir()) == []


@pytest.mark.parametrize("receipt", ["[]", '"x"', '{"result": "FAILED", "steps": [1, {"status": "FAILED"}]}',
                                     '{"result": "FAILED", "steps": "preflight"}'])
def test_ops_status_survives_a_damaged_receipt(home: Home, receipt: str) -> None:
    from nas import cycle, summary

    path = cycle.latest_receipt_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(receipt, encoding="utf-8")
    codes = {r["code"] for r in summary.build(home)["top_risks"]}
    assert "LAST_RUN_FAILED" in codes
    for cmd, shown in (("status", "LAST_RUN_FAILED"), ("summary", "WARN")):
        out = krx("ops", cmd, home=home, env={"COLUMNS": "160"})
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
        assert shown in out.stdout, out.stdout  # the damaged receipt is reported, not passed over
        if cmd == "status":  # and the run section does not claim the cycle never ran
            assert "none yet" not in out.stdout and "receipt unreadable" in out.stdout


def test_real_source_refuses_a_day_whose_close_is_not_final(home: Home) -> None:
    """KRX serves intraday prices before the close; stored as the day's EOD they would stay (incremental ingest
    never fetches a stored day again). A real source only fetches days up to the latest complete one."""
    from common import calendar

    cal = calendar.load(home)
    not_final = cal.next_trading_day(cal.latest_complete_day())
    out = krx("ingest", "--source", "pykrx", "--date", not_final.isoformat(), home=home,
              env={"KRX_ID": "someone", "KRX_PW": "not-a-real-password"})
    assert out.returncode == 3, out.stderr
    assert "not final" in out.stderr and "not-a-real-password" not in out.stderr
    assert not (home.data / "eod" / "manifest.json").exists()
