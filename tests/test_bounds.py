"""Findings 9 and 10: values without bounds, and requests that were accepted although they should not be."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import krx

from common import config, config_rules, schemas
from common.home import Home

OUT_OF_RANGE = [
    ("KRX__APP__WORKER__MAX_REQUEST_BYTES", "-1", "worker.max_request_bytes"),
    ("KRX__APP__OPS__STEP_TIMEOUT_S", "-1", "ops.step_timeout_s"),
    ("KRX__APP__REQUEST__YEARS", "-3", "request.years"),
    ("KRX__APP__WORKER__SETTLE_S", ".nan", "worker.settle_s"),
    ("KRX__APP__WORKER__STOP_GRACE_S", "-5", "worker.stop_grace_s"),
    ("KRX__APP__WORKER__LEASE_S", ".inf", "worker.lease_s"),
    ("KRX__APP__RETRY__DEADLINE_S", "0", "retry.deadline_s"),
    ("KRX__APP__SYNC__TIMEOUT_S", "-1", "sync.timeout_s"),
    ("KRX__NOTIFY__ERROR_LOG__QUEUE_SIZE", "0", "error_log.queue_size"),
    ("KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__DAILY_LIMIT_PCT", "-1",
     "strategies.momentum_topN_v1.daily_limit_pct"),
]


@pytest.mark.parametrize(("var", "value", "key"), OUT_OF_RANGE)
def test_every_out_of_range_setting_is_refused_naming_the_variable(home: Home, var: str, value: str,
                                                                    key: str) -> None:
    name = var.split("__")[1].lower()
    with pytest.raises(config.ConfigError) as err:
        config.load(name, home, env={var: value})
    assert str(err.value).startswith(f"environment variable {var}: {key}: expected ")


def test_the_cli_names_the_environment_variable(home: Home) -> None:
    proc = krx("calendar", "--next", "2026-06-01", home=home, env={"KRX__APP__WORKER__MAX_REQUEST_BYTES": "-1"})
    assert proc.returncode == 3
    assert ("environment variable KRX__APP__WORKER__MAX_REQUEST_BYTES: worker.max_request_bytes: expected a number "
            "between 1024 and 1073741824, got -1") in proc.stderr


def _numbers(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield prefix


@pytest.mark.parametrize("name", ["app", "notify", "strategies"])
def test_every_numeric_setting_has_a_range(name: str) -> None:
    shipped = yaml.safe_load(config.default_path(name).read_text(encoding="utf-8"))
    for key in _numbers(shipped):
        patterns = config_rules.RULES[name]
        assert any(config._matches(p, key) for p in patterns), f"{name}.yaml: {key} has no range"


def test_nan_and_infinity_are_refused_in_the_file_too(home: Home) -> None:
    path = home.configs / "app.yaml"
    path.write_text(path.read_text().replace("settle_s: 3.0", "settle_s: .nan"))
    with pytest.raises(config.ConfigError, match=r"worker\.settle_s: expected a number, got nan"):
        config.load("app", home, env={})


def test_an_allowlisted_strategy_without_parameters_is_refused_at_load(home: Home) -> None:
    path = home.configs / "strategies.yaml"
    path.write_text(path.read_text().replace("allowlist: [momentum_topN_v1]", "allowlist: [momentum_topN_v1, evil]"))
    with pytest.raises(config.ConfigError, match=r"allowlist: expected names with parameters under strategies:, "
                                                 r"got 'evil'"):
        config.load("strategies", home, env={})


def _request(**over) -> dict:
    req = schemas.new_request("momentum_topN_v1", "2024-01-02", "2024-06-28", id="r1")
    req.update(over)
    return req


def test_duplicate_keys_are_refused(home: Home) -> None:
    text = json.dumps(_request())[:-1] + ', "strategy": "momentum_topN_v1"}'
    text = text.replace('"strategy": "momentum_topN_v1"', '"strategy": "evil"', 1)
    with pytest.raises(schemas.RequestError) as err:
        schemas.parse(text.encode())
    assert err.value.code == schemas.INVALID_JSON and "duplicate key 'strategy'" in str(err.value)
    (home.queue("pending") / "r1.json").write_text(text, encoding="utf-8")
    proc = krx("worker", "--once", home=home, env={"KRX__APP__WORKER__SETTLE_S": "0"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((home.queue("failed") / "r1.error.json").read_text(encoding="utf-8"))
    assert record["error_code"] == "INVALID_JSON" and "duplicate key 'strategy'" in record["message"]


@pytest.mark.parametrize("ticker", ["../../x", "005930 ", "abcdef", "0059301"])
def test_tickers_in_parameters_must_be_krx_codes(home: Home, ticker: str) -> None:
    req = _request(params={"core_holdings": [{"ticker": ticker, "weight": 0.2}]})
    with pytest.raises(schemas.RequestError) as err:
        schemas.validate(req, home=home, file="r1.json")
    assert err.value.field == "params.core_holdings"


def test_a_huge_number_is_cut_in_the_message_and_the_log(home: Home) -> None:
    req = _request(params={"top_n": int("9" * 4000)})
    with pytest.raises(schemas.RequestError) as err:
        schemas.validate(req, home=home, file="r1.json")
    assert len(str(err.value)) < 400 and "(4000 chars)" in str(err.value)
    (home.queue("pending") / "r1.json").write_text(json.dumps(req), encoding="utf-8")
    proc = krx("worker", "--once", home=home, timeout=120)
    assert proc.returncode == 0
    line = next(ln for ln in proc.stderr.splitlines() if "REQUEST_FAILED" in ln)
    assert len(line) < 800 and "9" * 200 not in line
