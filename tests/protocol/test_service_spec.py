"""The service spec contract: validation, and that everything in it is measured."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sealroom.errors import InvalidInputError
from sealroom.protocol.service import ServiceSpec, load_spec, parse_spec


def _doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "hello",
        "kind": "python",
        "command": ["app.py", "--flag"],
        "port": 8080,
        "env": {"GREETING": "world"},
        "files": {"app.py": {"content_b64": base64.b64encode(b"print(1)").decode()}},
    }
    doc.update(over)
    return doc


def test_hash_is_stable_and_covers_env_files_and_settings() -> None:
    base = parse_spec(_doc()).spec_hash
    assert parse_spec(_doc()).spec_hash == base
    changed = [
        _doc(env={"GREETING": "moon"}),
        _doc(files={"app.py": {"content_b64": base64.b64encode(b"print(2)").decode()}}),
        _doc(
            files={
                "app.py": {
                    "content_b64": base64.b64encode(b"print(1)").decode(),
                    "executable": True,
                }
            }
        ),
        _doc(port=8081),
        _doc(command=["app.py"]),
        _doc(egress=["example.org:443"]),
        _doc(restart={"policy": "always"}),
        _doc(resources={"memory_mb": 512}),
        _doc(domain="svc.example.org"),
    ]
    hashes = {parse_spec(d).spec_hash for d in changed}
    assert base not in hashes and len(hashes) == len(changed)


def test_measured_form_shows_no_env_value_or_file_bytes() -> None:
    m = json.dumps(parse_spec(_doc(env={"TOKEN": "s3cret-value"})).measured())
    assert "s3cret-value" not in m and "print(1)" not in m
    assert base64.b64encode(b"print(1)").decode() not in m


def test_spec_hash_is_domain_separated_from_a_plain_hash() -> None:
    import hashlib

    from sealroom.crypto.canonical import canonical_json

    s = parse_spec(_doc())
    assert s.spec_hash != hashlib.sha256(canonical_json(s.measured())).digest()


@pytest.mark.parametrize(
    ("defect", "over"),
    [
        ("reserved_env_path", {"env": {"PATH": "/evil"}}),
        ("reserved_env_sealroom_prefix", {"env": {"SEALROOM_EGRESS": "{}"}}),
        ("bad_env_name", {"env": {"A-B": "x"}}),
        ("file_escapes_with_dotdot", {"files": {"../x": {"content_b64": ""}}}),
        ("absolute_file_name", {"files": {"/etc/x": {"content_b64": ""}}}),
        ("command_not_a_spec_file", {"command": ["/usr/bin/python3"]}),
        ("privileged_port", {"port": 80}),
        ("egress_without_port", {"egress": ["example.org"]}),
        ("egress_repeated", {"egress": ["a.org:1", "a.org:1"]}),
        ("oci_without_digest", {"kind": "oci", "image": "nginx:latest"}),
        ("image_on_python_kind", {"image": "x@sha256:" + "0" * 64}),
        ("unknown_field", {"unknown": 1}),
        ("bad_domain", {"domain": "Not A Domain"}),
        ("not_base64", {"files": {"app.py": {"content_b64": "%%%"}}}),
    ],
)
def test_bad_spec_refused(defect: str, over: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as e:
        parse_spec(_doc(**over))
    assert e.value.code == "bad-spec", defect


def test_oci_pinned_by_digest_accepted() -> None:
    s = parse_spec(_doc(kind="oci", image="docker.io/library/nginx@sha256:" + "a" * 64, files={}))
    assert isinstance(s, ServiceSpec)


def test_load_spec_reads_sources_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_bytes(b"print(1)")
    (tmp_path / "spec.yaml").write_text(
        "name: hello\nkind: python\ncommand: [app.py, --flag]\nport: 8080\n"
        "env: {GREETING: world}\nfiles:\n  app.py: {source: app.py}\n"
    )
    assert load_spec(tmp_path / "spec.yaml").spec_hash == parse_spec(_doc()).spec_hash
    (tmp_path / "app.py").write_bytes(b"print(2)")
    assert load_spec(tmp_path / "spec.yaml").spec_hash != parse_spec(_doc()).spec_hash


def test_load_spec_missing_source_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(
        "name: x\nkind: python\ncommand: [a.py]\nport: 8080\nfiles:\n  a.py: {source: nope.py}\n"
    )
    with pytest.raises(InvalidInputError, match=r"nope\.py"):
        load_spec(tmp_path / "spec.yaml")
