"""The manifest: parsing with errors named per field, the hash rule, slots and consumers,
and fuzzing (only InvalidInputError escapes)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.crypto.keys import PartyKeys
from sealroom.errors import InvalidInputError, NotFoundError
from sealroom.manifest import DEFAULT_ALGORITHM_MAX_SIZE, Manifest

PARTIES = {n: PartyKeys.generate(n).public.to_json_obj() for n in ("algo", "dp1", "dp2", "alice")}


def example() -> dict[str, Any]:
    return {
        "version": 1,
        "id": "demo-001",
        "name": "Average of two datasets",
        "algorithm": {
            "kind": "python",
            "sha256": "ab" * 32,
            "provider": dict(PARTIES["algo"]),
            "entrypoint": "main.py",
            "args": ["--mode", "mean"],
            "archive": None,
        },
        "datasets": [
            {
                "name": "a",
                "sha256": "cd" * 32,
                "provider": dict(PARTIES["dp1"]),
                "max_size": 1048576,
                "archive": None,
            },
            {
                "name": "b-2",
                "sha256": "ef" * 32,
                "provider": dict(PARTIES["dp2"]),
                "max_size": 4096,
                "archive": "zip",
            },
        ],
        "consumers": [dict(PARTIES["alice"])],
        "policy": {
            "version": 1,
            "id": "sim-dev",
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {"report_data": {"mode": "sealroom-v1"}},
        },
        "limits": {"vcpus": 1, "memory_mb": 512, "wall_seconds": 60, "max_result_bytes": 10485760},
    }


def test_example_parses() -> None:
    m = Manifest.from_dict(example())
    assert m.id == "demo-001" and m.version == 1
    assert m.algorithm.kind == "python" and m.algorithm.entrypoint == "main.py"
    assert m.algorithm.args == ("--mode", "mean")
    assert m.algorithm.max_size == DEFAULT_ALGORITHM_MAX_SIZE
    assert m.algorithm.provider.to_json_obj() == PARTIES["algo"]
    assert [d.name for d in m.datasets] == ["a", "b-2"]
    assert m.slot_names == ("algorithm", "a", "b-2")
    assert m.limits.wall_seconds == 60
    assert m.limits.model_dump(mode="json") == example()["limits"]
    assert m.policy().allow_simulated is True
    assert m.policy().require == ("snp",)


def test_slots_name_signer_hash_size_and_archive() -> None:
    m = Manifest.from_dict(example())
    alg = m.slot("algorithm")
    assert (alg.kind, alg.sha256, alg.max_size) == (
        "algorithm",
        bytes.fromhex("ab" * 32),
        DEFAULT_ALGORITHM_MAX_SIZE,
    )
    b = m.slot("b-2")
    assert b.kind == "dataset" and b.archive == "zip" and b.max_size == 4096
    assert b.provider.to_json_obj() == PARTIES["dp2"]
    assert [s.name for s in m.slots()] == ["algorithm", "a", "b-2"]


def test_unknown_slot_and_consumer() -> None:
    m = Manifest.from_dict(example())
    with pytest.raises(NotFoundError, match="slots: algorithm, a, b-2") as ei:
        m.slot("c")
    assert ei.value.code == "unknown-slot"
    assert m.consumer("alice").to_json_obj() == PARTIES["alice"]
    with pytest.raises(NotFoundError) as ei2:
        m.consumer("mallory")
    assert ei2.value.code == "unknown-consumer"


# --- the hash --------------------------------------------------------------------------


def test_hash_is_sha256_of_rfc8785_form() -> None:
    obj = example()
    m = Manifest.from_dict(obj)
    assert m.canonical_bytes() == rfc8785.dumps(obj)
    assert m.manifest_hash == hashlib.sha256(rfc8785.dumps(obj)).digest()
    assert m.manifest_hash_hex == m.manifest_hash.hex()
    assert m.to_json_obj() == obj


def _reorder(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reorder(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reorder(v) for v in obj]
    return obj


def test_hash_stable_under_key_order_and_whitespace() -> None:
    obj = example()
    h = Manifest.from_dict(obj).manifest_hash
    texts = [
        json.dumps(obj),
        json.dumps(obj, indent=4, sort_keys=True),
        json.dumps(_reorder(obj), separators=(",", ":")),
        "\n\n  " + json.dumps(_reorder(obj), indent="\t") + "\n",
        json.dumps(obj, ensure_ascii=True).replace('"demo-001"', '"\\u0064emo-001"'),
    ]
    for t in texts:
        assert Manifest.loads(t).manifest_hash == h


def test_hash_covers_every_value() -> None:
    h = Manifest.from_dict(example()).manifest_hash
    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d.update(name="other"),
        lambda d: d["algorithm"]["args"].append("x"),
        lambda d: d["datasets"].reverse(),
        lambda d: d["limits"].update(wall_seconds=61),
        lambda d: d["policy"].update(id="other"),
        lambda d: d["algorithm"].pop("archive"),  # a default spelled out is part of the hash
    ]
    for change in changes:
        d = example()
        change(d)
        assert Manifest.from_dict(d).manifest_hash != h


def test_load_from_file(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps(example(), indent=2))
    assert Manifest.load(p).manifest_hash == Manifest.from_dict(example()).manifest_hash
    with pytest.raises(InvalidInputError, match="cannot read manifest"):
        Manifest.load(tmp_path / "missing.json")


# --- validation errors, named after the defect -------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        cur: Any = d
        for p in head:
            cur = cur[int(p)] if p.isdigit() else cur[p]
        if value is _DELETE:
            del cur[last]
        elif last.isdigit():
            cur[int(last)] = value
        else:
            cur[last] = value

    return f


_DELETE = object()

INVALID: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "version_missing": (_set("version", _DELETE), "'version' is required"),
    "version_unknown": (_set("version", 2), "manifest.version: 2 is not supported"),
    "unknown_top_level_key": (_set("extra", 1), "manifest.extra: Extra inputs"),
    "id_with_slash": (_set("id", "a/b"), "manifest.id"),
    "name_empty": (_set("name", ""), "manifest.name"),
    "algorithm_kind_unknown": (_set("algorithm.kind", "jvm"), "manifest.algorithm.kind"),
    "algorithm_sha256_short": (
        _set("algorithm.sha256", "ab" * 31),
        "manifest.algorithm.sha256: must be 64",
    ),
    "algorithm_sha256_uppercase": (_set("algorithm.sha256", "AB" * 32), "not lowercase hex"),
    "algorithm_sha256_0x_prefix": (_set("algorithm.sha256", "0x" + "ab" * 31), "algorithm.sha256"),
    "provider_key_short": (
        _set("algorithm.provider.ed25519", "00" * 31),
        "manifest.algorithm.provider.ed25519",
    ),
    "provider_key_not_hex": (
        _set("datasets.0.provider.x25519", "zz" * 32),
        "manifest.datasets[0].provider.x25519",
    ),
    "provider_low_order_x25519": (
        _set("datasets.1.provider.x25519", "00" * 32),
        "manifest.datasets[1].provider: ",
    ),
    "provider_missing": (
        _set("algorithm.provider", _DELETE),
        "manifest.algorithm.provider: Field required",
    ),
    "python_without_entrypoint": (
        _set("algorithm.entrypoint", _DELETE),
        "entrypoint: required for kind 'python'",
    ),
    "entrypoint_absolute": (
        _set("algorithm.entrypoint", "/bin/sh"),
        "manifest.algorithm.entrypoint: must be a relative",
    ),
    "entrypoint_dotdot": (
        _set("algorithm.entrypoint", "lib/../../x.py"),
        "manifest.algorithm.entrypoint",
    ),
    "entrypoint_backslash": (
        _set("algorithm.entrypoint", "..\\x.py"),
        "manifest.algorithm.entrypoint",
    ),
    "args_not_strings": (_set("algorithm.args", [1]), "manifest.algorithm.args[0]"),
    "archive_unknown": (_set("datasets.0.archive", "rar"), "manifest.datasets[0].archive"),
    "dataset_named_algorithm": (_set("datasets.0.name", "algorithm"), "'algorithm' is reserved"),
    "dataset_name_uppercase": (_set("datasets.0.name", "A"), "manifest.datasets[0].name"),
    "dataset_name_too_long": (_set("datasets.0.name", "a" * 65), "manifest.datasets[0].name"),
    "dataset_names_duplicate": (_set("datasets.1.name", "a"), "'a' is also datasets[0]"),
    "max_size_zero": (_set("datasets.0.max_size", 0), "manifest.datasets[0].max_size"),
    "max_size_missing": (
        _set("datasets.0.max_size", _DELETE),
        "manifest.datasets[0].max_size: Field required",
    ),
    "max_size_string": (
        _set("datasets.0.max_size", "1024"),
        "manifest.datasets[0].max_size: Input should be a valid integer",
    ),
    "max_size_fraction": (_set("datasets.0.max_size", 1.5), "manifest.datasets[0].max_size"),
    "max_size_bool": (_set("datasets.0.max_size", True), "manifest.datasets[0].max_size"),
    "no_consumer": (_set("consumers", []), "manifest.consumers"),
    "consumer_names_duplicate": (
        lambda d: d["consumers"].append(dict(d["consumers"][0])),
        "consumer names must be unique",
    ),
    "consumer_extra_field": (_set("consumers.0.rsa", "x"), "manifest.consumers[0].rsa"),
    "consumer_name_with_space": (_set("consumers.0.name", "a b"), "manifest.consumers[0].name"),
    "limits_zero_vcpus": (_set("limits.vcpus", 0), "manifest.limits.vcpus"),
    "limits_negative_wall": (_set("limits.wall_seconds", -1), "manifest.limits.wall_seconds"),
    "limits_zero_result": (_set("limits.max_result_bytes", 0), "manifest.limits.max_result_bytes"),
    "limits_missing_memory": (
        _set("limits.memory_mb", _DELETE),
        "manifest.limits.memory_mb: Field required",
    ),
    "policy_missing": (_set("policy", _DELETE), "manifest.policy: Field required"),
    "policy_unknown_kind": (_set("policy.sgx2", {}), "manifest.policy: unknown key 'sgx2'"),
    "policy_bad_section": (
        _set("policy.snp.report_data", {"mode": "maybe"}),
        "manifest.policy: snp.report_data.mode",
    ),
    "policy_accepts_nothing": (_set("policy.snp", _DELETE), "manifest.policy"),
    "float_inside_policy": (_set("policy.max_evidence_age", 0.5), "manifest.policy"),
    "log_reader_is_a_consumer": (
        _set("log_readers", [dict(PARTIES["alice"])]),
        "manifest.log_readers[0].name: 'alice' is a consumer",
    ),
    "log_reader_twice": (
        _set("log_readers", [dict(PARTIES["algo"]), dict(PARTIES["algo"])]),
        "manifest.log_readers[1].name: 'algo' appears twice",
    ),
    "log_reader_not_a_party": (_set("log_readers", ["algo"]), "manifest.log_readers[0]"),
}


def test_log_readers_are_optional_and_covered_by_the_hash() -> None:
    plain = Manifest.from_dict(example())
    assert plain.log_readers == () and plain.log_recipients == plain.consumers
    d = example()
    d["log_readers"] = [dict(PARTIES["algo"])]
    m = Manifest.from_dict(d)
    assert [p.name for p in m.log_recipients] == ["alice", "algo"]
    assert m.log_recipient("algo").ed25519 == bytes.fromhex(PARTIES["algo"]["ed25519"])
    assert m.manifest_hash != plain.manifest_hash  # every party agrees to the list
    with pytest.raises(NotFoundError):
        m.log_recipient("dp1")


@pytest.mark.parametrize("defect", sorted(INVALID))
def test_invalid_manifest_names_the_field(defect: str) -> None:
    mutate, want = INVALID[defect]
    d = example()
    mutate(d)
    with pytest.raises(InvalidInputError) as ei:
        Manifest.from_dict(d)
    assert want in ei.value.message, ei.value.message
    assert ei.value.code == "invalid-manifest"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"version": 1, "version": 1}', "'version' appears twice"),
        ('{"version": NaN}', "NaN is not JSON"),
        ("[" * 100_000, "manifest"),
        ('{"a": "' + "x" * (1024 * 1024) + '"}', "byte limit"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unparseable_manifest(text: str | bytes, want: str) -> None:
    with pytest.raises(InvalidInputError, match=want):
        Manifest.loads(text)


def test_no_datasets_is_allowed_and_only_the_algorithm_slot_remains() -> None:
    d = example()
    d["datasets"] = []
    assert Manifest.from_dict(d).slot_names == ("algorithm",)


def test_wasm_without_entrypoint_is_allowed() -> None:
    d = example()
    d["algorithm"]["kind"] = "wasm"
    del d["algorithm"]["entrypoint"]
    assert Manifest.from_dict(d).algorithm.entrypoint is None


# --- fuzzing ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["python", "zip", "ab" * 32, "main.py", "algorithm", "snp"]),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(["version", "name", "kind", "sha256", "policy", "x"])
            | st.text(max_size=6),
            kids,
            max_size=5,
        )
    ),
    max_leaves=25,
)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(JSON)
def test_fuzz_random_json(obj: Any) -> None:
    try:
        Manifest.from_dict(obj)
    except InvalidInputError:
        pass


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


EXAMPLE_PATHS = _paths(example())[1:]


@FUZZ
@given(st.sampled_from(EXAMPLE_PATHS), JSON)
def test_fuzz_one_value_replaced(path: tuple[Any, ...], value: Any) -> None:
    d = copy.deepcopy(example())
    cur: Any = d
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    try:
        Manifest.from_dict(d)
    except InvalidInputError:
        pass


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_fuzz_random_text(text: str | bytes) -> None:
    try:
        Manifest.loads(text)
    except InvalidInputError:
        pass


KBS_SOURCE = {
    "kbs": {
        "url": "http://127.0.0.1:8090",
        "resource": "kms/ds1/v1",
        "ciphertext": "http://blobs.example/a.enc",
    }
}


def test_kbs_source_is_optional_and_covered_by_the_hash() -> None:
    plain = Manifest.from_dict(example())
    assert all(s.kbs is None for s in plain.slots())
    d = example()
    d["datasets"][0]["source"] = copy.deepcopy(KBS_SOURCE)
    m = Manifest.from_dict(d)
    slot = m.slots()[1]
    assert slot.name == "a" and slot.kbs is not None
    assert (slot.kbs.url, slot.kbs.resource) == ("http://127.0.0.1:8090", "kms/ds1/v1")
    assert m.manifest_hash != plain.manifest_hash  # every party agrees on broker and key
    d["datasets"][0]["source"]["kbs"]["resource"] = "kms/ds1/v2"
    assert Manifest.from_dict(d).manifest_hash != m.manifest_hash


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("url", "ftp://kbs.example", "an http(s):// URL of a key broker"),
        ("resource", "kms/ds1", "<repository>/<type>/<tag>"),
        ("resource", "kms/../v1", "<repository>/<type>/<tag>"),
        ("ciphertext", "", "ciphertext"),
    ],
    ids=["url_not_http", "resource_two_segments", "resource_dot_dot_segment", "ciphertext_empty"],
)
def test_invalid_kbs_source_names_the_field(field: str, value: str, want: str) -> None:
    d = example()
    d["datasets"][0]["source"] = copy.deepcopy(KBS_SOURCE)
    d["datasets"][0]["source"]["kbs"][field] = value
    with pytest.raises(InvalidInputError) as ei:
        Manifest.from_dict(d)
    assert f"manifest.datasets[0].source.kbs.{field}" in ei.value.message, ei.value.message
    assert want in ei.value.message, ei.value.message


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.__setitem__("name", "nul\x00name"), "manifest.name"),
        (lambda d: d["datasets"][0].__setitem__("name", "a\x00"), "manifest.datasets[0].name"),
        (lambda d: d.__setitem__("x\x00", 1), "manifest (a key)"),
    ],
)
def test_nul_character_in_a_manifest_is_invalid_input_not_a_store_error(
    mutate: Callable[[dict[str, Any]], None], where: str
) -> None:
    """A NUL in a manifest string passed validation and failed only when PostgreSQL
    refused the row: the create ended in a store error instead of a 400 naming the field."""
    d = example()
    mutate(d)
    with pytest.raises(InvalidInputError, match="NUL character") as ei:
        Manifest.from_dict(d)
    assert ei.value.message.startswith(where), ei.value.message
    assert ei.value.code == "invalid-manifest"
    with pytest.raises(InvalidInputError, match="NUL character"):
        Manifest.loads(json.dumps(d))  # the JSON escape \u0000 is the same character
