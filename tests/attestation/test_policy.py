"""Policy loading (clear errors, nothing half-applied) and appraisal rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.snp.abi import GuestPolicy
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import InvalidInputError

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
M = bytes(range(48))


@pytest.fixture(scope="module")
def sim() -> SimAuthority:
    return SimAuthority.ephemeral(NOW)


def _run(
    sim: SimAuthority,
    pol: dict[str, object],
    *,
    nonce: bytes | None = None,
    inputs: ReportDataInputs | None = None,
    **report: Any,
) -> AppraisalResult:
    item = sim.evidence(
        sim.report(measurement=M, **report),
        collected_at=NOW - timedelta(seconds=30),
    )
    ctx = VerifyContext(now=NOW, nonce=nonce, extra_roots=(sim.root,), report_data_inputs=inputs)
    return verify_and_appraise(EvidenceBundle.single(item), Policy.from_dict(pol), ctx)


def _failed(result: AppraisalResult) -> list[str]:
    return [r.field for r in result.failures()]


BASE = {"version": 1, "allow_simulated": True}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"snp": {}}, "'version' is required"),
        ({"version": 2, "snp": {}}, "version"),
        ({"version": 1}, "accepts no evidence kind"),
        ({"version": 1, "snp": {}, "sgx_magic": {}}, "unknown key 'sgx_magic'"),
        ({"version": 1, "snp": {"measurement": []}}, "snp.measurement"),
        ({"version": 1, "snp": {"measurements": ["abcd"]}}, "must be 48 bytes"),
        ({"version": 1, "snp": {"measurements": ["zz" * 48]}}, "is not hex"),
        (
            {"version": 1, "snp": {"min_tcb": {"reported": {"snp": 256}}}},
            "snp.min_tcb.reported.snp",
        ),
        ({"version": 1, "snp": {"vmpl": [4]}}, "snp.vmpl.0"),
        ({"version": 1, "snp": {"min_firmware": {"current": "1.x"}}}, "min_firmware.current"),
        ({"version": 1, "require": ["tdx"], "snp": {}}, "require lists 'tdx'"),
        ({"version": 1, "max_evidence_age": 0, "snp": {}}, "max_evidence_age"),
        ({"version": 1, "snp": {"report_data": {"mode": "magic"}}}, "snp.report_data.mode"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_policies_are_named(doc: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Policy.from_dict(doc)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        Policy.loads("version: [1\n")
    with pytest.raises(InvalidInputError, match="cannot read policy"):
        Policy.load(tmp_path / "absent.yaml")


def test_starter_policy_is_valid_and_strict() -> None:
    p = Policy.loads(starter_policy())
    assert p.allow_simulated is False and p.require == ("snp",)
    snp = p.sections["snp"]
    assert snp.allow_debug is False  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_policy_loader_fuzz(text: str) -> None:
    try:
        Policy.loads(text)
    except InvalidInputError:
        pass


def test_simulated_rejected_unless_allowed(sim: SimAuthority) -> None:
    assert _failed(_run(sim, {"version": 1, "snp": {}})) == ["simulated"]
    assert _run(sim, {**BASE, "snp": {}}).ok


def test_measurement_allow_list(sim: SimAuthority) -> None:
    assert _run(sim, {**BASE, "snp": {"measurements": [M.hex()]}}).ok
    other = bytes(48).hex()
    assert _failed(_run(sim, {**BASE, "snp": {"measurements": [other]}})) == ["MEASUREMENT"]
    # An explicit empty allow-list accepts nothing.
    assert _failed(_run(sim, {**BASE, "snp": {"measurements": []}})) == ["MEASUREMENT"]


def test_minimum_tcb_per_component(sim: SimAuthority) -> None:
    ok = {**BASE, "snp": {"min_tcb": {"reported": {"snp": 1}, "launch": {"microcode": 1}}}}
    assert _run(sim, ok).ok
    bad = {**BASE, "snp": {"min_tcb": {"committed": {"snp": 14}, "current": {"fmc": 1}}}}
    result = _run(sim, bad)
    assert _failed(result) == ["CURRENT_TCB.fmc", "COMMITTED_TCB.snp"]
    msg = next(r for r in result.failures() if r.field == "COMMITTED_TCB.snp").describe()
    assert msg == "cpu0: COMMITTED_TCB.snp is 1, policy wants >= 14 [FAIL]"


def test_debug_smt_migration_vmpl_svn(sim: SimAuthority) -> None:
    pol = {**BASE, "snp": {"allow_smt": False, "vmpl": [0], "min_guest_svn": 2}}
    result = _run(
        sim,
        pol,
        policy=GuestPolicy.build(debug=True, smt=True, migrate_ma=True),
        vmpl=1,
        guest_svn=1,
    )
    assert _failed(result) == [
        "GUEST_SVN",
        "VMPL",
        "POLICY.DEBUG",
        "POLICY.SMT",
        "POLICY.MIGRATE_MA",
    ]
    relaxed = {**BASE, "snp": {"allow_debug": True, "allow_migrate_ma": True}}
    assert _run(sim, relaxed, policy=GuestPolicy.build(debug=True, migrate_ma=True)).ok


def test_firmware_and_abi_minimums(sim: SimAuthority) -> None:
    assert _run(sim, {**BASE, "snp": {"min_firmware": {"current": "1.55"}, "min_abi": "1.51"}}).ok
    result = _run(
        sim, {**BASE, "snp": {"min_firmware": {"committed": "1.57.1"}, "min_abi": "1.56"}}
    )
    assert _failed(result) == ["COMMITTED_FIRMWARE", "POLICY.ABI"]


def test_host_data_and_key_digests(sim: SimAuthority) -> None:
    hd = bytes([7]) * 32
    assert _run(sim, {**BASE, "snp": {"host_data": hd.hex()}}, host_data=hd).ok
    assert _failed(_run(sim, {**BASE, "snp": {"host_data": hd.hex()}})) == ["HOST_DATA"]
    digests = {**BASE, "snp": {"id_key_digests": ["11" * 48], "author_key_digests": ["22" * 48]}}
    assert _failed(_run(sim, digests)) == ["ID_KEY_DIGEST", "AUTHOR_KEY_DIGEST"]


def test_report_data_modes(sim: SimAuthority) -> None:
    nonce = bytes(range(32))
    padded = nonce + bytes(32)
    nonce_pol = {**BASE, "snp": {"report_data": {"mode": "nonce"}}}
    assert _run(sim, nonce_pol, nonce=nonce, report_data=padded).ok
    assert _failed(_run(sim, nonce_pol, nonce=bytes(32), report_data=padded)) == ["REPORT_DATA"]
    missing = _run(sim, nonce_pol, report_data=padded)
    assert "the verifier was given none" in missing.failures()[0].want
    exact = {**BASE, "snp": {"report_data": {"mode": "exact", "value": nonce.hex()}}}
    assert _run(sim, exact, report_data=padded).ok
    inputs = ReportDataInputs(bytes([1]) * 32, bytes([2]) * 32)
    bound = sealroom_report_data(inputs, nonce)
    v1 = {**BASE, "snp": {"report_data": {"mode": "sealroom-v1"}}}
    assert _run(sim, v1, nonce=nonce, inputs=inputs, report_data=bound).ok
    other = ReportDataInputs(bytes([9]) * 32, bytes([2]) * 32)
    assert not _run(sim, v1, nonce=nonce, inputs=other, report_data=bound).ok


def test_max_evidence_age(sim: SimAuthority) -> None:
    assert _run(sim, {**BASE, "max_evidence_age": 60, "snp": {}}).ok
    assert _failed(_run(sim, {**BASE, "max_evidence_age": 10, "snp": {}})) == ["evidence_age"]


def test_require_names_missing_kind(sim: SimAuthority) -> None:
    result = _run(sim, {**BASE, "require": ["snp"], "snp": {}})
    assert result.ok
    assert [r.field for r in result.bundle_rules] == ["require.snp"]


def test_unsafe_accept_all_is_spelled_and_logged(
    sim: SimAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    policy = Policy.unsafe_accept_all(allow_simulated=True)
    assert "unsafe_accept_all" in caplog.text
    item = sim.evidence(sim.report(measurement=M))
    ctx = VerifyContext(now=NOW, extra_roots=(sim.root,))
    assert verify_and_appraise(EvidenceBundle.single(item), policy, ctx).ok
    strict = Policy.unsafe_accept_all()
    assert not verify_and_appraise(EvidenceBundle.single(item), strict, ctx).ok
