"""Canonical JSON (RFC 8785) as sealroom uses it: integers only, typed errors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.crypto.canonical import MAX_SAFE_INTEGER, canonical_json, sha256_hex
from sealroom.errors import InvalidInputError


def test_rfc8785_key_order_and_whitespace() -> None:
    assert canonical_json({"b": [1, {"z": None, "a": True}], "a": "x"}) == (
        b'{"a":"x","b":[1,{"a":true,"z":null}]}'
    )


def test_rfc8785_sorts_keys_by_utf16_code_units() -> None:
    # RFC 8785 section 3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33.
    obj = {"\ufb33": 1, "\U0001f600": 2, "a": 3}
    assert canonical_json(obj) == '{"a":3,"\U0001f600":2,"\ufb33":1}'.encode()


def test_strings_are_utf8_with_minimal_escapes() -> None:
    assert (
        canonical_json(["\u20ac", "\n", '"', "\u001f"]) == b'["\xe2\x82\xac","\\n","\\"","\\u001f"]'
    )


def test_integral_float_is_the_integer() -> None:
    assert canonical_json({"n": 1.0, "m": json.loads("1e3")}) == b'{"m":1000,"n":1}'


@pytest.mark.parametrize(
    "value", [0.5, math.nan, math.inf, -math.inf, float(2**60), 2**53, -(2**53)]
)
def test_number_outside_integer_range_is_rejected(value: float) -> None:
    with pytest.raises(InvalidInputError) as ei:
        canonical_json({"x": [value]})
    assert ei.value.code == "json-not-canonical"
    assert "$.x[0]" in ei.value.message


def test_safe_integer_bounds_accepted() -> None:
    assert (
        canonical_json([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
        == b"[9007199254740991,-9007199254740991]"
    )


@pytest.mark.parametrize(
    "value", [b"bytes", {1, 2}, {1: "non-string key"}, object(), "lone \ud800 surrogate"]
)
def test_non_json_values_are_rejected(value: object) -> None:
    with pytest.raises(InvalidInputError):
        canonical_json({"v": value})


def test_deep_nesting_is_rejected_not_a_crash() -> None:
    obj: Any = []
    for _ in range(5000):
        obj = [obj]
    with pytest.raises(InvalidInputError, match="nested deeper"):
        canonical_json(obj)


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=250, deadline=None)
@given(JSON)
def test_canonical_form_round_trips_and_is_a_fixed_point(value: object) -> None:
    out = canonical_json(value)
    assert json.loads(out) == value
    assert canonical_json(json.loads(out)) == out
