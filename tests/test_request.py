from __future__ import annotations

import json

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
