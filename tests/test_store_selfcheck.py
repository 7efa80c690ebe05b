"""Finding 7: a store whose year files and manifest disagree. The real CLI on a real sample store whose 2023 file
is lost or truncated: scan and backtest refuse naming the days and the repair; ingest fetches them again."""

from __future__ import annotations

import re

import pytest
from conftest import krx

from common.home import Home
from common.store import EodStore

ENV = {"KRX__APP__SAMPLE__TICKERS": "30"}


@pytest.mark.parametrize("damage", ["lost", "truncated"])
def test_a_lost_year_file_is_named_and_refetched(home: Home, damage: str, tmp_path) -> None:
    proc = krx("ingest", "--source", "sample", "--start", "2023-06-01", "--end", "2024-06-28", home=home, env=ENV)
    assert proc.returncode == 0, proc.stderr
    year = home.data / "eod" / "2023.parquet"
    if damage == "lost":
        year.unlink()
    else:
        year.write_bytes(year.read_bytes()[: year.stat().st_size // 2])

    scan = krx("scan", "--date", "2024-06-28", home=home, env=ENV)
    assert scan.returncode == 3
    assert re.search(r"the manifest lists \d+ day\(s\) its year files do not hold \(2023-", scan.stderr)
    assert re.search(r"repair with `krx ingest --start 2023-\d\d-\d\d --end 2023-12-28`", scan.stderr)
    assert "KeyError" not in scan.stderr

    bt = krx("backtest", "--strategy", "momentum_topN_v1", "--start", "2024-03-04", "--end", "2024-06-28",
             "--out", str(tmp_path / "bt"), home=home, env=ENV)
    assert bt.returncode == 3
    assert "repair with `krx ingest --start 2023-" in bt.stderr + bt.stdout
    assert not (tmp_path / "bt" / "equity.csv").exists()

    fix = krx("ingest", "--source", "sample", "--start", "2023-06-01", "--end", "2024-06-28", home=home, env=ENV)
    assert fix.returncode == 0, fix.stderr
    assert "STORE_REPAIRED" in fix.stderr
    assert int(re.search(r"days_fetched=(\d+)", fix.stderr).group(1)) == 143  # every 2023 trading day from June on
    assert EodStore.for_home(home).missing_days() == []
    assert krx("scan", "--date", "2024-06-28", home=home, env=ENV).returncode == 0
    if damage == "truncated":  # kept for a look, never read again
        assert [p.name.split(".damaged-")[0] for p in year.parent.glob("*.damaged-*")] == ["2023.parquet"]
