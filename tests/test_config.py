from __future__ import annotations

import datetime as dt

import pytest

from common import config
from common.home import Home


def test_defaults_load_and_validate(home: Home) -> None:
    app = config.load("app", home)
    assert app["source"] == "sample"
    assert dt.date(2026, 6, 3) in app["calendar"]["extra_closures"]
    assert config.load("notify", home)["slack"]["channel"] == "#invest_ops"
    assert "momentum_topN_v1" in config.load("strategies", home)["allowlist"]


def test_bad_value_names_file_key_and_expectation(home: Home) -> None:
    path = home.configs / "app.yaml"
    path.write_text(path.read_text().replace("source: sample", "source: yahoo"))
    with pytest.raises(config.ConfigError) as err:
        config.load("app", home)
    msg = str(err.value)
    assert str(path) in msg and "source" in msg and "one of sample, pykrx" in msg and "yahoo" in msg


def test_wrong_type_and_unknown_key(home: Home) -> None:
    path = home.configs / "app.yaml"
    path.write_text(path.read_text().replace("lease_s: 300.0", "lease_s: soon"))
    with pytest.raises(config.ConfigError, match=r"worker\.lease_s: expected a number, got 'soon'"):
        config.load("app", home)
    path.write_text("sourse: sample\n")
    with pytest.raises(config.ConfigError, match=r"sourse: expected a known key"):
        config.load("app", home)


def test_broken_yaml_is_a_clear_error(home: Home) -> None:
    (home.configs / "notify.yaml").write_text("delivery_policy: [unclosed\n")
    with pytest.raises(config.ConfigError, match=r"notify\.yaml: line \d+: expected valid YAML"):
        config.load("notify", home)


def test_environment_overrides_every_level(home: Home) -> None:
    env = {
        "KRX__NOTIFY__DELIVERY_POLICY": "SLACK",
        "KRX__NOTIFY__SLACK__CHANNEL": "#other",
        "KRX__APP__WORKER__LEASE_S": "12",
        "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__TOP_N": "7",
        "KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__FILTERS__ENABLED": "false",
    }
    notify = config.load("notify", home, env=env)
    assert notify["delivery_policy"] == "SLACK" and notify["slack"]["channel"] == "#other"
    assert config.load("app", home, env=env)["worker"]["lease_s"] == 12.0
    strat = config.load("strategies", home, env=env)["strategies"]["momentum_topN_v1"]
    assert strat["top_n"] == 7 and strat["filters"]["enabled"] is False


def test_bad_environment_override_names_the_variable_family(home: Home) -> None:
    with pytest.raises(config.ConfigError, match=r"KRX__NOTIFY__.*delivery_policy: expected one of"):
        config.load("notify", home, env={"KRX__NOTIFY__DELIVERY_POLICY": "EMAIL"})


def test_partial_file_keeps_defaults_for_missing_keys(home: Home) -> None:
    (home.configs / "notify.yaml").write_text("delivery_policy: SLACK\n")
    notify = config.load("notify", home)
    assert notify["delivery_policy"] == "SLACK" and notify["error_log_to_slack"] is True


def test_strategy_params_check(home: Home) -> None:
    base = config.load("strategies", home)["strategies"]["momentum_topN_v1"]
    merged = config.check_strategy_params({"top_n": 10, "filters": {"enabled": False}}, base)
    assert merged["top_n"] == 10 and merged["filters"]["enabled"] is False and merged["lookbacks"] == [21, 63, 126]
    with pytest.raises(config.ConfigError, match="rebalance: expected one of"):
        config.check_strategy_params({"rebalance": "daily"}, base)
    with pytest.raises(config.ConfigError, match="weights: expected one weight per lookback"):
        config.check_strategy_params({"weights": [1.0]}, base)
    with pytest.raises(config.ConfigError, match="core_holdings"):
        config.check_strategy_params({"core_holdings": [{"ticker": "069500", "weight": 2}]}, base)


def test_secret_reads_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX_PW", "  ")
    assert config.secret("KRX_PW") is None
    monkeypatch.setenv("KRX_PW", "hunter2")
    assert config.secret("KRX_PW") == "hunter2"
