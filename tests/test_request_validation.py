"""backtest_request/1 (common.schemas): every way a request can be wrong ends in a RequestError whose code and
message name the file and the field; nothing else ever escapes (hypothesis fuzz)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import config, schemas
from common.home import init_home
from common.schemas import RequestError

STRATEGIES = config.load("strategies", env={})


def good(**changes) -> dict:
    request = schemas.new_request("momentum_topN_v1", "2023-01-02", "2023-12-28", params={"top_n": 7},
                                  requested_by="nas", correlation_id="20231228-momentum_topN_v1",
                                  strategies=STRATEGIES)
    request.update(changes)
    return request


def check(request, **kw) -> dict:
    return schemas.validate(request, strategies=STRATEGIES, file="r.json", **kw)


def fails(request, code: str, field: str | None, **kw) -> RequestError:
    with pytest.raises(RequestError) as info:
        check(request, **kw)
    err = info.value
    assert (err.code, err.field) == (code, field), str(err)
    assert str(err).startswith("r.json: " + (f"{field}: " if field else ""))
    return err


def test_new_request_is_valid_by_construction_and_its_id_is_deterministic() -> None:
    a, b = good(), good()
    assert check(a) == a
    assert a["id"] == b["id"] == schemas.request_id("momentum_topN_v1", "2023-01-02", "2023-12-28", {"top_n": 7})
    assert a["id"] != schemas.request_id("momentum_topN_v1", "2023-01-02", "2023-12-28", {"top_n": 8})
    assert a["schema"] == "backtest_request/1" and a["universe"] == "ALL"
    assert set(a) == set(schemas.REQUIRED) | {"correlation_id"}


def test_new_request_uses_the_home_allowlist(tmp_path: Path) -> None:
    home, _ = init_home(tmp_path)
    (home.configs / "strategies.yaml").write_text(
        (home.configs / "strategies.yaml").read_text().replace("allowlist: [momentum_topN_v1]", "allowlist: []"))
    with pytest.raises(RequestError) as info:
        schemas.new_request("momentum_topN_v1", "2023-01-02", "2023-12-28", home=home)
    assert info.value.code == "STRATEGY_NOT_ALLOWED"


def test_new_request_refuses_bad_params() -> None:
    with pytest.raises(RequestError) as info:
        schemas.new_request("momentum_topN_v1", "2023-01-02", "2023-12-28", params={"top_n": "ten"},
                            strategies=STRATEGIES)
    assert info.value.code == "INVALID_REQUEST" and info.value.field == "params.top_n"


@pytest.mark.parametrize("field", schemas.REQUIRED)
def test_each_missing_field_is_named(field: str) -> None:
    request = good()
    del request[field]
    fails(request, "INVALID_REQUEST", field)


@pytest.mark.parametrize(("field", "value"), [
    ("schema", "backtest_request/2"), ("id", 5), ("id", "../../x"), ("id", ".."), ("id", "a b"), ("id", "x" * 129),
    ("created_at", "yesterday"), ("created_at", 20240101), ("requested_by", ""), ("requested_by", "a\nb"),
    ("correlation_id", 7), ("start", "2023-13-01"), ("start", "2023-W01-1"), ("start", 20230102),
    ("end", "2022-01-03"), ("universe", "NYSE"), ("universe", []), ("universe", "ALL;rm -rf"), ("universe", {}),
    ("params", []), ("params", "top_n=3"), ("strategy", 3),
])
def test_wrong_values_and_types_are_named(field: str, value) -> None:
    fails(good(**{field: value}), "INVALID_REQUEST", field)


@pytest.mark.parametrize(("params", "field"), [
    ({"top_n": "ten"}, "params.top_n"), ({"top_n": -1}, "params.top_n"), ({"unknown": 1}, "params.unknown"),
    ({"filters": {"enabled": "yes"}}, "params.filters.enabled"), ({"weights": [1.0]}, "params.weights"),
    ({"rebalance": "hourly"}, "params.rebalance"), ({"top_n": True}, "params.top_n"),
])
def test_bad_params_are_named_by_their_path(params: dict, field: str) -> None:
    fails(good(params=params), "INVALID_REQUEST", field)


def test_tickers_in_the_universe_are_checked_one_by_one() -> None:
    assert check(good(universe=["005930", "00104K"]))
    fails(good(universe=["005930", "../x"]), "INVALID_REQUEST", "universe[1]")
    fails(good(universe=["005930", "005930"]), "INVALID_REQUEST", "universe")


def test_unknown_fields_are_refused_a_request_never_chooses_a_path() -> None:
    err = fails(good(out_dir="/etc"), "INVALID_REQUEST", "out_dir")
    assert "unknown field" in str(err)


def test_the_id_must_be_the_file_name() -> None:
    fails(good(), "INVALID_REQUEST", "id", stem="other")
    assert check(good(), stem=good()["id"])


def test_unknown_strategy() -> None:
    err = fails(good(strategy="martingale"), "STRATEGY_NOT_ALLOWED", "strategy")
    assert "momentum_topN_v1" in str(err)


@pytest.mark.parametrize(("data", "code"), [
    (b"", "INVALID_JSON"), (b"  \n", "INVALID_JSON"), (b"{", "INVALID_JSON"), (b"\xff\xfe\x00garbage", "INVALID_JSON"),
    (b'{"a": NaN}', "INVALID_JSON"), (b"[" * 100_000, "INVALID_JSON"), (b"[1, 2]", "INVALID_REQUEST"),
    (b'"text"', "INVALID_REQUEST"), (b"null", "INVALID_REQUEST"),
])
def test_parse_errors(data: bytes, code: str) -> None:
    with pytest.raises(RequestError) as info:
        schemas.parse(data, file="r.json")
    assert info.value.code == code and str(info.value).startswith("r.json: ")


def test_a_bom_is_harmless() -> None:
    assert schemas.parse(b"\xef\xbb\xbf" + json.dumps(good()).encode(), file="r.json")["schema"]


def test_load_checks_the_size_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # 5 MB, sparse: reading it would be the mistake
        fh.truncate(5 * 1024 * 1024)
    with pytest.raises(RequestError) as info:
        schemas.load(big)
    assert info.value.code == "TOO_LARGE" and "5242880 bytes" in str(info.value)
    request = good()
    path = tmp_path / f"{request['id']}.json"
    path.write_text(json.dumps(request))
    assert schemas.load(path, strategies=STRATEGIES) == request
    with pytest.raises(RequestError) as info:
        schemas.load(path, strategies=STRATEGIES, max_bytes=100)
    assert info.value.code == "TOO_LARGE"


def test_load_names_the_file_and_refuses_links(tmp_path: Path) -> None:
    request = good()
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(request))
    link = tmp_path / f"{request['id']}.json"
    link.symlink_to(target)
    with pytest.raises(RequestError) as info:
        schemas.load(link, strategies=STRATEGIES)
    assert info.value.code == "INVALID_REQUEST" and str(info.value).startswith(link.name)


# --- fuzz --------------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
param_keys = st.sampled_from(sorted(STRATEGIES["strategies"]["momentum_topN_v1"]) + ["nope"])
field_values = {
    "schema": st.sampled_from(["backtest_request/1", "backtest_request/0"]) | json_values,
    "id": st.from_regex(r"[A-Za-z0-9._-]{1,10}", fullmatch=True) | st.sampled_from(["..", "../x", ""]) | json_values,
    "created_at": st.sampled_from(["2024-01-05T16:00:00+09:00", "2024-01-05"]) | json_values,
    "strategy": st.sampled_from(["momentum_topN_v1", "other"]) | json_values,
    "params": st.dictionaries(param_keys, json_values, max_size=3) | json_values,
    "universe": st.sampled_from(["ALL", "KOSDAQ"]) | st.lists(st.sampled_from(["005930", "bad"])) | json_values,
    "start": st.sampled_from(["2023-01-02", "2023-02-30"]) | json_values,
    "end": st.sampled_from(["2023-12-28", "1999-01-01"]) | json_values,
    "requested_by": st.sampled_from(["nas", ""]) | json_values,
    "correlation_id": st.none() | json_values,
}
requests = st.fixed_dictionaries({}, optional={**field_values, "extra": json_values})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_fuzz_validate_returns_or_raises_a_request_error(request: dict) -> None:
    try:
        out = check(request)
    except RequestError as err:
        assert err.code in ("INVALID_REQUEST", "STRATEGY_NOT_ALLOWED")
        assert str(err).startswith("r.json")
    else:
        assert out["strategy"] == "momentum_topN_v1" and out["schema"] == "backtest_request/1"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_parse_returns_a_dict_or_raises_a_request_error(data: bytes) -> None:
    try:
        assert isinstance(schemas.parse(data, file="r.json"), dict)
    except RequestError as err:
        assert err.code in ("INVALID_JSON", "INVALID_REQUEST")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(field_values)).flatmap(lambda k: st.tuples(st.just(k), field_values[k])))
def test_fuzz_one_field_of_a_good_request(change: tuple) -> None:
    field, value = change
    request = good(**{field: value})
    try:
        check(request)
    except RequestError as err:  # the message names the field that was changed (or the params key inside it)
        assert err.field is not None and err.field.split(".")[0].split("[")[0] in (field, "end"), str(err)
