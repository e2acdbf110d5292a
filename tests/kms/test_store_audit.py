"""Versioned keys and the hash-chained audit trail."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from sealroom.errors import AccessDeniedError, AttestationError, ConflictError, NotFoundError
from sealroom.kms import KeyManager, release
from sealroom.kms.audit import AuditLog, load_head, verify_lines, verify_log
from tests.kms.claims import snp_claims


@pytest.fixture
def km(tmp_path: Path) -> KeyManager:
    return KeyManager.init(tmp_path / "kms")


def test_create_rotate_revoke_destroy(km: KeyManager) -> None:
    info = km.create("ds1", account="acme", actor="alice")
    assert info.primary == 1 and [v.state for v in info.versions] == ["active"]
    _, v1 = km.material("ds1")
    info = km.rotate("ds1", actor="alice")
    assert info.primary == 2
    n, v2 = km.material("ds1")
    assert n == 2 and v2 != v1 and len(v2) == 32
    assert km.material("ds1", 1) == (1, v1)  # a specific version stays addressable
    km.revoke("ds1", 1, actor="alice")
    with pytest.raises(AccessDeniedError) as e:
        km.material("ds1", 1)
    assert e.value.code == "kms-version-not-active"
    km.destroy("ds1", actor="alice")
    with pytest.raises(NotFoundError):
        km.material("ds1")
    listed = km.list()[0]
    assert listed.destroyed and {v.state for v in listed.versions} == {"destroyed"}
    stored = json.loads((km.directory / "keys.json").read_text())
    assert all("wrapped" not in v for v in stored["ds1"]["versions"])


def test_store_files_are_private(km: KeyManager) -> None:
    km.create("ds1", account="acme", actor="a")
    for name in ("keys.json", "kms.json", "audit.jsonl", "audit.head"):
        assert stat.S_IMODE((km.directory / name).stat().st_mode) == 0o600, name
    assert b"material" not in (km.directory / "keys.json").read_bytes()


def test_revoke_primary_needs_rotation(km: KeyManager) -> None:
    km.create("ds1", account="acme", actor="a")
    with pytest.raises(ConflictError):
        km.revoke("ds1", 1, actor="a")
    info = km.revoke("ds1", 1, actor="a", rotate_primary=True)
    assert info.primary == 2 and info.versions[0].state == "revoked"


def test_duplicate_key_refused(km: KeyManager) -> None:
    km.create("ds1", account="acme", actor="a")
    with pytest.raises(ConflictError):
        km.create("ds1", account="acme", actor="a")


def test_wrapped_key_swapped_between_versions_detected(km: KeyManager) -> None:
    km.create("ds1", account="acme", actor="a")
    km.rotate("ds1", actor="a")
    path = km.directory / "keys.json"
    doc = json.loads(path.read_text())
    v = doc["ds1"]["versions"]
    v[0]["wrapped"], v[1]["wrapped"] = v[1]["wrapped"], v[0]["wrapped"]
    path.write_text(json.dumps(doc))
    with pytest.raises(AttestationError) as e:
        km.material("ds1")
    assert e.value.code == "kms-binding-mismatch"


def test_kek_rotation_rewraps_and_destroys_old(km: KeyManager) -> None:
    km.create("ds1", account="acme", actor="a")
    _, before = km.material("ds1")
    old_wrapped = json.loads((km.directory / "keys.json").read_text())["ds1"]["versions"][0]
    old, new = km.rotate_kek(actor="a")
    assert km.material("ds1") == (1, before)
    assert not km.backend.exists(old) and km.backend.exists(new)
    with pytest.raises(NotFoundError):
        km.backend.unwrap(old, __import__("base64").b64decode(old_wrapped["wrapped"]))


def test_kek_rotated_by_another_process_is_used_by_a_running_key_manager(
    km: KeyManager,
) -> None:
    """Defect: a KeyManager read kms.json once; after `sealroom kms lockdown` (another
    process) rotated the KEK, a running `kbs serve` kept the destroyed KEK as current, so
    it wrapped new versions under a KEK that no longer exists and reported the old label."""
    km.create("ds1", account="acme", actor="a")
    other = KeyManager(km.directory)  # e.g. the CLI, next to the running broker
    old, new = other.rotate_kek(actor="lockdown")
    assert km.kek_label == new
    info = km.rotate("ds1", actor="a")  # wraps v2 under the new KEK, not the destroyed one
    assert info.versions[-1].kek == new
    assert len(km.material("ds1")[1]) == 32 and km.material("ds1", 1)[0] == 1
    assert km.rotate_kek(actor="a")[0] == new  # rotating again starts from the current KEK
    assert not km.backend.exists(old) and not km.backend.exists(new)


def test_every_change_and_release_is_audited(km: KeyManager) -> None:
    km.create("ds1", account="acme", actor="alice")
    km.rotate("ds1", actor="alice")
    km.revoke("ds1", 1, actor="bob")
    release(km, "ds1", None, snp_claims(), actor="kbs", policy="p1")
    with pytest.raises(AccessDeniedError):
        release(km, "ds1", 1, snp_claims(), actor="kbs", policy="p1")
    km.destroy("ds1", actor="carol")
    events = [e["event"] for e in km.audit.entries()]
    assert [e["action"] for e in events] == [
        "kek-rotate",
        "key-create",
        "key-rotate",
        "key-revoke",
        "release",
        "refusal",
        "key-destroy",
    ]
    rel = events[4]
    assert rel["result"] == "released" and rel["version"] == 2 and rel["policy"] == "p1"
    assert len(rel["evidence_digest"]) == 64
    assert rel["detail"]["facts"][0]["measurement"] == "aa" * 48
    assert events[5]["result"] == "refused" and "revoked" in events[5]["detail"]["reason"]
    assert verify_log(km.audit.path, km.audit.head()).seq == 6


def _chain(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "a")
    for i in range(n):
        log.append("key-create", actor=f"u{i}", key_id=f"k{i}")
    return log


def test_audit_rewritten_entry_detected(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["event"]["actor"] = "mallory"
    lines[1] = json.dumps(entry)
    with pytest.raises(AttestationError, match="entry 1: its hash"):
        verify_lines(lines)


def test_audit_rewritten_entry_with_rehash_breaks_next(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["event"]["actor"] = "mallory"
    from sealroom.kms.audit import _entry_hash

    entry["hash"] = _entry_hash(entry["seq"], entry["time"], entry["prev"], entry["event"])
    lines[1] = json.dumps(entry)
    with pytest.raises(AttestationError, match="entry 2: prev"):
        verify_lines(lines)


def test_audit_dropped_entry_detected(tmp_path: Path) -> None:
    lines = _chain(tmp_path).path.read_text().splitlines()
    del lines[2]
    with pytest.raises(AttestationError, match="entry 3: seq is 3, want 2"):
        verify_lines(lines)


def test_audit_dropped_tail_detected_against_head(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.path.read_text().splitlines()
    verify_lines(lines[:-1])  # the chain alone cannot see a cut tail ...
    with pytest.raises(AttestationError, match="head says 3"):
        verify_lines(lines[:-1], log.head())  # ... the head can


def test_audit_export_verifies_and_copies(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    out = tmp_path / "export.jsonl"
    head = log.export(out)
    assert head.seq == 3
    assert verify_log(out, load_head(Path(f"{out}.head"))) == head
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_audit_export_of_tampered_log_refused(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    text = log.path.read_text().replace('"u2"', '"ux"')
    log.path.write_text(text)
    with pytest.raises(AttestationError):
        log.export(tmp_path / "export.jsonl")


def test_evidence_digest_of_claims_with_64_bit_tcb(km: KeyManager) -> None:
    # Real SNP claims carry REPORTED_TCB.raw beyond 2**53: the release must still be
    # audited (it crashed the KBS release path when the digest used RFC 8785).
    km.create("ds1", account="acme", actor="a")
    release(km, "ds1", None, snp_claims(), actor="kbs", policy="p")
    assert km.audit.entries()[-1]["event"]["action"] == "release"
