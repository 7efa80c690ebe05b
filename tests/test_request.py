from __future__ import annotations

import json

import pytest
from conftest import krx

from common import events, schemas
from common.home import Home


def test_request_is_queued_once(home: Home) -> None:
    assert krx("ingest", "--start", "2025-01-02", "--end", "2025-02-28", home=home,
               env={"KRX__APP__SAMPLE__TICKERS": "30"}).returncode == 0
    first = krx("request", home=home)
    assert first.returncode == 0, first.stderr
    request_id = first.stdout.strip()
    files = list(home.queue("pending").iterdir())
    assert [f.name for f in files] == [f"{request_id}.json"]  # no temporary file left behind
    request = schemas.load(files[0], home=home)
    assert request["end"] == "2025-02-28" and request["start"] == "2025-01-02"
    assert request["correlation_id"] == events.correlation_id("2025-02-28", "momentum_topN_v1")
    second = krx("request", home=home)
    assert second.returncode == 0 and second.stdout.strip() == request_id
    assert "REQUEST_EXISTS" in second.stderr
    assert len(list(home.queue("pending").iterdir())) == 1
    # a different day is a different request
    assert krx("request", "--date", "2025-02-27", home=home).stdout.strip() != request_id
    logged = [json.loads(line)["event"] for line in (home.state / "events.jsonl").read_text().splitlines()]
    assert logged.count("request_queued") == 2


def test_request_parameters_change_the_id(home: Home) -> None:
    krx("ingest", "--start", "2025-01-02", "--end", "2025-01-31", home=home, env={"KRX__APP__SAMPLE__TICKERS": "30"})
    a = krx("request", home=home).stdout.strip()
    b = krx("request", home=home, env={"KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__TOP_N": "9"}).stdout.strip()
    assert a and b and a != b


def test_request_on_empty_store_fails_clearly(home: Home) -> None:
    out = krx("request", home=home)
    assert out.returncode == 3 and "store" in out.stderr and "krx ingest" in out.stderr
    assert list(home.queue("pending").iterdir()) == []


SMALL_MARKET = {"KRX__APP__SAMPLE__TICKERS": "30"}


@pytest.fixture()
def stored(home: Home) -> Home:
    out = krx("ingest", "--start", "2025-01-02", "--end", "2025-02-28", home=home, env=SMALL_MARKET)
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
