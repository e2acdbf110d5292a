"""configfs-tsm provider against a fake kernel tree (sealroom.testing.fake_tsm)."""

from __future__ import annotations

import errno
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.snp.abi import parse_report
from sealroom.attestation.snp.certs import parse_cert_table
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    UnavailableError,
)
from sealroom.tee.base import EvidenceProvider, open_provider
from sealroom.tee.configfs_tsm import ConfigfsTsmProvider, OsTsmFs
from sealroom.testing.fake_intel import FakeIntelPki
from sealroom.testing.fake_snp import FakeSnpPki
from sealroom.testing.fake_tsm import FAKE_MANIFEST, FakeTsm

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
REPORT_DATA = hashlib.sha512(b"manifest hash, key digest, nonce").digest()


@pytest.fixture(scope="module")
def pki() -> FakeSnpPki:
    return FakeSnpPki(NOW)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "config" / "tsm" / "report"


@pytest.fixture
def kernel(root: Path, pki: FakeSnpPki) -> FakeTsm:
    return FakeTsm.snp(root, pki)


def _provider(kernel: FakeTsm, **kw: object) -> ConfigfsTsmProvider:
    return ConfigfsTsmProvider(kernel.root, fs=kernel, **kw)  # type: ignore[arg-type]


def _no_entries_left(kernel: FakeTsm) -> None:
    assert list(kernel.root.iterdir()) == []
    assert kernel.entries == {}
    assert kernel.created and sorted(kernel.created) == sorted(kernel.removed)


def _verify_snp(pki: FakeSnpPki, item: EvidenceItem) -> SnpClaims:
    claims = kinds.get("snp").verify(item, VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert isinstance(claims, SnpClaims)
    return claims


def test_snp_evidence_verifies_and_carries_report_data(pki: FakeSnpPki, kernel: FakeTsm) -> None:
    provider = _provider(kernel)
    assert isinstance(provider, EvidenceProvider)
    item = provider.collect(REPORT_DATA)
    assert item.kind == "snp" and set(item.attachments) == {"certtable"}
    assert set(parse_cert_table(item.attachments["certtable"])) == {"vcek", "ask"}
    claims = _verify_snp(pki, item)
    assert claims.verified and claims.report_data == REPORT_DATA
    assert claims.simulated  # anchored in the fake root, never reported as AMD
    _no_entries_left(kernel)


def test_kind_comes_from_the_provider_attribute(kernel: FakeTsm) -> None:
    provider = _provider(kernel)
    assert provider.kind == "snp"
    _no_entries_left(kernel)  # the probe entry is removed too


def test_tdx_quote_verifies(root: Path) -> None:
    intel = FakeIntelPki(NOW)
    kernel = FakeTsm.tdx(root, intel)
    provider = _provider(kernel)
    assert provider.kind == "tdx"
    item = provider.collect(REPORT_DATA)
    assert item.kind == "tdx" and dict(item.attachments) == {}
    with_collateral = item.with_attachments({"collateral": intel.collateral()})
    claims = kinds.get("tdx").verify(
        with_collateral, VerifyContext(now=NOW, extra_roots=(intel.root.cert,))
    )
    assert claims.verified
    assert getattr(claims, "report_data") == REPORT_DATA  # noqa: B009
    _no_entries_left(kernel)


def test_entry_names_are_fresh_per_request(kernel: FakeTsm) -> None:
    provider = _provider(kernel)
    provider.collect(REPORT_DATA)
    provider.collect(REPORT_DATA)
    assert len(set(kernel.created)) == 2
    assert all(n.startswith("sealroom-") for n in kernel.created)


def test_missing_root_means_no_tee(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="absent") as e:
        ConfigfsTsmProvider(tmp_path / "sys" / "kernel" / "config" / "tsm" / "report")
    assert e.value.code == "tsm-unavailable"


def test_missing_root_through_open_provider(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError):
        open_provider(f"configfs-tsm:{tmp_path / 'none'}")


def test_open_provider_default_root_is_sysfs() -> None:
    if Path("/sys/kernel/config/tsm/report").is_dir():
        pytest.skip("this machine has a real configfs-tsm")
    with pytest.raises(UnavailableError, match="/sys/kernel/config/tsm/report"):
        open_provider("configfs-tsm")


def test_generation_conflict_is_retried(pki: FakeSnpPki, kernel: FakeTsm) -> None:
    kernel.races = 1
    item = _provider(kernel).collect(REPORT_DATA)
    assert _verify_snp(pki, item).report_data == REPORT_DATA
    assert len(kernel.created) == 2  # the conflicting entry was dropped, a fresh one used
    _no_entries_left(kernel)


@pytest.mark.parametrize("before", [False, True], ids=["after_outblob", "before_outblob"])
def test_generation_conflict_every_time_is_a_clear_error(kernel: FakeTsm, before: bool) -> None:
    kernel.races = 99
    kernel.race_before_outblob = before
    with pytest.raises(UnavailableError, match="written concurrently") as e:
        _provider(kernel, attempts=3).collect(REPORT_DATA)
    assert e.value.code == "tsm-generation-conflict"
    assert "generation" in e.value.message and len(kernel.created) == 3
    _no_entries_left(kernel)


@pytest.mark.parametrize("name", ["arm_cca_guest", "sev_guest_v9", ""])
def test_unknown_provider_is_refused_before_any_request(
    root: Path, pki: FakeSnpPki, name: str
) -> None:
    kernel = FakeTsm.snp(root, pki, provider=name)
    with pytest.raises(UnavailableError, match="provider") as e:
        _provider(kernel).collect(REPORT_DATA)
    assert e.value.code == "tsm-provider-unsupported"
    assert kernel.reports_made == 0
    _no_entries_left(kernel)


def test_report_for_other_report_data_is_refused(root: Path, pki: FakeSnpPki) -> None:
    kernel = FakeTsm.snp(root, pki, tamper_report_data=True)
    with pytest.raises(AttestationError, match="REPORT_DATA") as e:
        _provider(kernel).collect(REPORT_DATA)
    assert e.value.code == "tee-report-data-mismatch"
    _no_entries_left(kernel)


@pytest.mark.parametrize(
    "auxblob", [b"\x01" * 10, b"\x11" * 24 + b"\x00" * 24], ids=["truncated", "entry_out_of_range"]
)
def test_malformed_cert_table_is_refused(root: Path, pki: FakeSnpPki, auxblob: bytes) -> None:
    kernel = FakeTsm.snp(root, pki, auxblob=auxblob)
    with pytest.raises(MalformedEvidenceError):
        _provider(kernel).collect(REPORT_DATA)
    _no_entries_left(kernel)


def test_empty_auxblob_gives_no_certtable(root: Path, pki: FakeSnpPki) -> None:
    kernel = FakeTsm.snp(root, pki, auxblob=b"")
    item = _provider(kernel).collect(REPORT_DATA)
    assert dict(item.attachments) == {}  # the verifier then needs the VCEK from elsewhere


def test_garbage_outblob_is_malformed(root: Path) -> None:
    kernel = FakeTsm(root, lambda inblob, values: (b"\x00" * 100, None), provider="sev_guest")
    with pytest.raises(MalformedEvidenceError):
        _provider(kernel).collect(REPORT_DATA)
    _no_entries_left(kernel)


def test_empty_outblob_is_unavailable(root: Path) -> None:
    kernel = FakeTsm(root, lambda inblob, values: (b"", None), provider="tdx_guest")
    with pytest.raises(UnavailableError, match="empty outblob"):
        _provider(kernel).collect(REPORT_DATA)
    _no_entries_left(kernel)


@pytest.mark.parametrize("code", [errno.EIO, errno.EBUSY, errno.EINVAL], ids=errno.errorcode.get)
def test_driver_error_on_outblob_removes_entry(kernel: FakeTsm, code: int) -> None:
    kernel.outblob_errno = code
    with pytest.raises(UnavailableError, match=errno.errorcode[code]) as e:
        _provider(kernel).collect(REPORT_DATA)
    assert e.value.code == "tsm-unavailable"
    _no_entries_left(kernel)


def test_privlevel_is_requested(pki: FakeSnpPki, kernel: FakeTsm) -> None:
    item = _provider(kernel, privlevel=2).collect(REPORT_DATA)
    assert parse_report(item.data).vmpl == 2
    assert _verify_snp(pki, item).report_data == REPORT_DATA


def test_privlevel_below_floor_is_invalid_input(kernel: FakeTsm) -> None:
    kernel.privlevel_floor = 2
    with pytest.raises(InvalidInputError, match="floor is 2") as e:
        _provider(kernel, privlevel=1).collect(REPORT_DATA)
    assert e.value.code == "tsm-option-invalid"
    _no_entries_left(kernel)


@pytest.mark.parametrize("level", [-1, 4])
def test_privlevel_out_of_range(kernel: FakeTsm, level: int) -> None:
    with pytest.raises(InvalidInputError):
        _provider(kernel, privlevel=level)


def test_service_provider_unsupported_by_kernel(kernel: FakeTsm) -> None:
    with pytest.raises(InvalidInputError, match="not supported") as e:
        _provider(kernel, service_provider="svsm").collect(REPORT_DATA)
    assert e.value.code == "tsm-option-unsupported"
    _no_entries_left(kernel)


def test_service_provider_binds_manifest(pki: FakeSnpPki, kernel: FakeTsm) -> None:
    kernel.with_service_provider = True
    item = _provider(kernel, service_provider="svsm").collect(REPORT_DATA)
    assert item.attachments["manifestblob"] == FAKE_MANIFEST
    claims = _verify_snp(pki, item)
    assert claims.report_data == hashlib.sha512(REPORT_DATA + FAKE_MANIFEST).digest()


@pytest.mark.parametrize("size", [0, 63, 65])
def test_report_data_must_be_64_bytes(kernel: FakeTsm, size: int) -> None:
    with pytest.raises(InvalidInputError, match="expected exactly 64"):
        _provider(kernel).collect(bytes(size))
    assert kernel.created == []


def test_raw_report_round(kernel: FakeTsm) -> None:
    report = _provider(kernel).report(REPORT_DATA)
    assert report.provider == "sev_guest" and report.attempts == 1 and report.generation == 1
    assert parse_report(report.outblob).report_data == REPORT_DATA
    with pytest.raises(InvalidInputError):
        _provider(kernel).report(bytes(65))
    # the ABI allows up to 64 bytes; the SNP and TDX drivers insist on exactly 64
    with pytest.raises(UnavailableError, match="EINVAL"):
        _provider(kernel).report(b"short")
    _no_entries_left(kernel)


def test_on_disk_tree_mirrors_the_entry_while_it_exists(kernel: FakeTsm) -> None:
    seen: dict[str, bytes] = {}
    original = kernel.read

    def spy(path: Path) -> bytes:
        data = original(path)
        if path.name == "outblob":
            seen.update({p.name: p.read_bytes() for p in path.parent.iterdir()})
        return data

    kernel.read = spy  # type: ignore[method-assign]
    _provider(kernel).collect(REPORT_DATA)
    assert seen["provider"] == b"sev_guest\n"
    assert seen["inblob"] == REPORT_DATA and seen["generation"] == b"1\n"
    assert parse_report(seen["outblob"]).report_data == REPORT_DATA
    _no_entries_left(kernel)


# ---- the production file access (OsTsmFs) on plain directories --------------------------


def test_os_fs_never_creates_attributes(tmp_path: Path) -> None:
    fs = OsTsmFs()
    with pytest.raises(FileNotFoundError):
        fs.write(tmp_path / "privlevel", b"1")
    assert not (tmp_path / "privlevel").exists()
    (tmp_path / "inblob").write_bytes(b"")
    fs.write(tmp_path / "inblob", b"abc")
    assert fs.read(tmp_path / "inblob") == b"abc"
    fs.mkdir(tmp_path / "entry")
    fs.rmdir(tmp_path / "entry")
    assert not (tmp_path / "entry").exists()


def test_os_fs_on_a_plain_directory_is_not_a_tsm(tmp_path: Path) -> None:
    # A plain directory has no kernel behind it: mkdir makes an empty entry, so the
    # provider finds no 'provider' attribute, says so, and removes the entry.
    root = tmp_path / "report"
    root.mkdir()
    with pytest.raises(UnavailableError, match="no 'provider' attribute"):
        ConfigfsTsmProvider(root).collect(REPORT_DATA)
    assert list(root.iterdir()) == []


def test_os_fs_permission_denied(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    root = tmp_path / "report"
    root.mkdir(mode=0o500)
    with pytest.raises(UnavailableError, match="permission denied") as e:
        ConfigfsTsmProvider(root).collect(REPORT_DATA)
    assert e.value.code == "tsm-permission-denied"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (PermissionError(errno.EACCES, "denied"), "tsm-permission-denied"),
        (FileNotFoundError(errno.ENOENT, "gone"), "tsm-unavailable"),
        (OSError(errno.ENOMEM, "no memory"), "tsm-unavailable"),
    ],
    ids=["mkdir_permission_denied", "root_vanished", "mkdir_enomem"],
)
def test_mkdir_failures(kernel: FakeTsm, exc: OSError, code: str) -> None:
    def refuse(path: Path) -> None:
        raise exc

    kernel.mkdir = refuse  # type: ignore[method-assign]
    with pytest.raises(UnavailableError) as e:
        _provider(kernel).collect(REPORT_DATA)
    assert e.value.code == code


def test_rmdir_failure_after_success_is_reported(kernel: FakeTsm) -> None:
    def refuse(path: Path) -> None:
        raise OSError(errno.EBUSY, "busy")

    kernel.rmdir = refuse  # type: ignore[method-assign]
    with pytest.raises(UnavailableError, match="cannot remove configfs-tsm entry"):
        _provider(kernel).collect(REPORT_DATA)
