"""Policy booleans are booleans: a quoted "yes" (or 1, or "false") is an error, never a
switch flipped by pydantic's lax coercion. Every bool field of every policy model is tried,
found by walking the models, so a knob added later is covered without editing this file."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from sealroom.attestation import kinds
from sealroom.attestation.policy import Policy
from sealroom.errors import InvalidInputError


def _models(ann: Any) -> list[type[BaseModel]]:
    """Pydantic models reachable through one annotation (Optional, list, dict, Annotated)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not BaseModel:
        return [ann]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(ann):
        out.extend(_models(arg))
    return out


def _is_bool(ann: Any) -> bool:
    return ann is bool or ann == (bool | None)


def _bool_paths(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for name, f in model.model_fields.items():
        path = (*prefix, f.alias or name)
        if _is_bool(f.annotation):
            yield path
            continue
        origin = typing.get_origin(f.annotation)
        if origin in (list, dict, tuple):
            continue  # no bool knob lives inside a list/dict of models today
        for sub in _models(f.annotation):
            yield from _bool_paths(sub, path)


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        obj = {key: obj}
    return obj


def _all_bool_fields() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [("allow_simulated",)]
    for name in kinds.names():
        paths.extend(_bool_paths(kinds.get(name).policy_model, (name,)))
    return paths


BOOL_FIELDS = _all_bool_fields()


def test_walk_finds_the_known_knobs() -> None:
    # The walk itself must work, or the parametrised test below tests nothing.
    found = {".".join(p) for p in BOOL_FIELDS}
    for known in (
        "allow_simulated",
        "snp.allow_debug",
        "snp.require_crl",
        "tdx.require_collateral",
        "sgx.allow_provision_key",
        "tpm.require_restricted_ak",
        "az-snp-vtpm.tpm.require_event_log",
        "nvidia.require_nonce",
    ):
        assert known in found, known


@pytest.mark.parametrize("path", BOOL_FIELDS, ids=lambda p: ".".join(p))
@pytest.mark.parametrize("bad", ["yes", "true", "no", 1, 0, "on"])
def test_policy_string_bool_refused(path: tuple[str, ...], bad: object) -> None:
    base: dict[str, Any] = {"version": 1}
    one = len(path) == 1
    doc = {**base, path[0]: bad, "snp": {}} if one else {**base, **_nested(path, bad)}
    with pytest.raises(InvalidInputError) as e:
        Policy.from_dict(doc)
    assert path[-1] in e.value.message
    assert "must be true or false" in e.value.message


@pytest.mark.parametrize("path", BOOL_FIELDS, ids=lambda p: ".".join(p))
def test_policy_real_bool_accepted(path: tuple[str, ...]) -> None:
    base: dict[str, Any] = {"version": 1}
    for value in (True, False):
        doc = {**base, path[0]: value, "snp": {}} if len(path) == 1 else _nested(path, value)
        pol = Policy.from_dict({**base, **doc})
        assert isinstance(pol, Policy)


def test_allow_simulated_yes_in_yaml_is_an_error_not_true() -> None:
    text = 'version: 1\nallow_simulated: "yes"\nsnp: {}\n'
    with pytest.raises(InvalidInputError, match="allow_simulated: must be true or false"):
        Policy.loads(text)
    assert Policy.loads("version: 1\nallow_simulated: true\nsnp: {}\n").allow_simulated
