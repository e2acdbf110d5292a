"""Collateral is the verifier's: its own wins item by item; what the presenter carries is
used only where the verifier has none, and never when older than what the verifier has
seen (ADR 0020). On the fake Intel PKI, which holds every key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.collateral import (
    DirectoryCollateral,
    FileCollateralHistory,
    MemoryCollateralHistory,
    SeenMark,
)
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tdx.claims import DcapClaims
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import AttestationError, InvalidInputError
from sealroom.testing.fake_intel import FakeIntelPki

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TDX = kinds.get("tdx")


@pytest.fixture(scope="module")
def pki() -> FakeIntelPki:
    return FakeIntelPki(NOW)


def _old_set(pki: FakeIntelPki) -> bytes:
    """Last month's collateral: still unexpired, eval number 16, and its PCK CRL predates
    the PCK's revocation."""
    tcb = pki.tcb_info()
    tcb["tcbEvaluationDataNumber"] = 16
    old_crl = pki.crl(pki.pck_ca, [], this_update=NOW - timedelta(days=20))
    return pki.collateral(tcb_info=tcb, pck_crl=old_crl)


def _current_set(pki: FakeIntelPki) -> bytes:
    """Today's: eval number 17 (the fake's default) and the PCK revoked."""
    return pki.collateral(pck_crl=pki.pck_crl([pki.pck.cert]))


def _ctx(pki: FakeIntelPki, **kw: object) -> VerifyContext:
    return VerifyContext(now=NOW, extra_roots=(pki.root.cert,), **kw)  # type: ignore[arg-type]


def _verify(item: EvidenceItem, ctx: VerifyContext) -> DcapClaims:
    claims = TDX.verify(item, ctx)
    assert isinstance(claims, DcapClaims)
    return claims


def test_presenter_collateral_rollback_hides_revoked_pck(pki: FakeIntelPki) -> None:
    presented = EvidenceItem("tdx", pki.quote(), {"collateral": _old_set(pki)})
    # Alone, the old set verifies: nothing in it says the PCK is revoked.
    assert _verify(presented, _ctx(pki)).crl_checked
    # The verifier has seen today's set once (an earlier verification) ...
    history = MemoryCollateralHistory()
    current = EvidenceItem("tdx", pki.quote(), {})
    with pytest.raises(AttestationError) as e:
        _verify(current, _ctx(pki, verifier_collateral={"collateral": _current_set(pki)},
                               collateral_history=history))  # fmt: skip
    assert e.value.code == "certificate-revoked"
    # ... so the presenter's older set is refused, even with no collateral of its own now.
    with pytest.raises(AttestationError) as e:
        _verify(presented, _ctx(pki, collateral_history=history))
    assert e.value.code == "collateral-rollback"
    assert "already seen" in e.value.message


def test_verifier_collateral_wins_over_the_presenters(pki: FakeIntelPki, tmp_path: Path) -> None:
    presented = EvidenceItem("tdx", pki.quote(), {"collateral": _old_set(pki)})
    # The verifier's collateral file wins over the envelope's: the PCK is revoked.
    with pytest.raises(AttestationError) as e:
        _verify(presented, _ctx(pki, verifier_collateral={"collateral": _current_set(pki)}))
    assert e.value.code == "certificate-revoked"
    # So does the verifier's collateral source (an offline directory holding today's set).
    d = tmp_path / "collateral"
    d.mkdir()
    (d / "collateral.json").write_bytes(_current_set(pki))
    (d / "pck_crl.der").write_bytes(pki.pck_crl([pki.pck.cert]))
    with pytest.raises(AttestationError) as e:
        _verify(presented, _ctx(pki, collateral=DirectoryCollateral(d)))
    assert e.value.code == "certificate-revoked"


def test_presenter_collateral_used_where_the_verifier_has_none(pki: FakeIntelPki) -> None:
    presented = EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral()})
    claims = _verify(presented, _ctx(pki, collateral_history=MemoryCollateralHistory()))
    assert claims.crl_checked and claims.tcb_evaluation_data_number == 17


def test_older_tcb_info_alone_is_a_rollback(pki: FakeIntelPki, tmp_path: Path) -> None:
    history = FileCollateralHistory(tmp_path / "seen.json")
    _verify(EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral()}),
            _ctx(pki, collateral_history=history))  # fmt: skip
    # A new process reads the same file: the marks survive.
    again = FileCollateralHistory(tmp_path / "seen.json")
    tcb = pki.tcb_info()
    tcb["tcbEvaluationDataNumber"] = 16  # a TCB recovery ago
    old = EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral(tcb_info=tcb)})
    with pytest.raises(AttestationError) as e:
        _verify(old, _ctx(pki, collateral_history=again))
    assert e.value.code == "collateral-rollback"
    assert "tcbEvaluationDataNumber 16 < 17" in e.value.message


def test_history_shared_by_two_verifiers_keeps_both_marks(tmp_path: Path) -> None:
    """Two verifiers (processes) holding the same history file: the later writer must not
    drop the mark the other one recorded meanwhile (the online cache and the CLI share the
    one implementation)."""
    a = FileCollateralHistory(tmp_path / "seen.json")
    b = FileCollateralHistory(tmp_path / "seen.json")
    a.observe("tcbinfo:TDX:00806f050000", SeenMark(17, None))
    b.observe("crl:CN=Intel SGX PCK Platform CA", SeenMark(None, datetime(2025, 6, 1, tzinfo=UTC)))
    b.observe("tcbinfo:TDX:00806f050000", SeenMark(16, None))  # older: never moves back
    again = FileCollateralHistory(tmp_path / "seen.json")
    assert again.seen("tcbinfo:TDX:00806f050000") == SeenMark(17, None)
    assert again.seen("crl:CN=Intel SGX PCK Platform CA") == SeenMark(
        None, datetime(2025, 6, 1, tzinfo=UTC)
    )


def test_corrupt_history_fails_closed(tmp_path: Path) -> None:
    p = tmp_path / "seen.json"
    p.write_text("{not json")
    with pytest.raises(Exception, match="unreadable"):
        FileCollateralHistory(p)


def test_min_tcb_evaluation_data_number(pki: FakeIntelPki) -> None:
    item = EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral()})
    base = {"version": 1, "allow_simulated": True}
    for minimum, failed in ((17, []), (18, ["tcb_evaluation_data_number"])):
        pol = Policy.from_dict({**base, "tdx": {"min_tcb_evaluation_data_number": minimum}})
        result = verify_and_appraise(EvidenceBundle.single(item), pol, _ctx(pki))
        assert [r.field for r in result.failures()] == failed
    bare = EvidenceItem("tdx", pki.quote(), {})  # no TCB info: the number is unknown
    pol = Policy.from_dict(
        {
            **base,
            "tdx": {
                "min_tcb_evaluation_data_number": 1,
                "require_collateral": False,
                "require_crl": False,
            },
        }
    )
    result = verify_and_appraise(EvidenceBundle.single(bare), pol, _ctx(pki))
    assert "tcb_evaluation_data_number" in [r.field for r in result.failures()]
    with pytest.raises(InvalidInputError):
        Policy.from_dict({**base, "tdx": {"min_tcb_evaluation_data_number": -1}})


# ---- SNP: the AMD CRL follows the same rule -------------------------------------------


def test_presenter_snp_crl_rollback_hides_revoked_ask() -> None:
    from sealroom.testing.fake_snp import FakeSnpPki

    snp = kinds.get("snp")
    pki = FakeSnpPki(NOW)
    report = pki.authority.evidence(pki.authority.report(measurement=bytes(48)))
    old = pki.crl([], this_update=NOW - timedelta(days=20))  # before the ASK's revocation
    current = pki.crl([pki.ask])
    base = VerifyContext(now=NOW, extra_roots=(pki.ark,))
    presented = report.with_attachments({"crl": old})
    assert snp.verify(presented, base).verified  # alone, the old CRL hides the revocation
    # The verifier's own CRL wins over the presenter's.
    with pytest.raises(AttestationError) as e:
        snp.verify(presented, VerifyContext(now=NOW, extra_roots=(pki.ark,),
                                            verifier_collateral={"crl": current}))  # fmt: skip
    assert e.value.code == "certificate-revoked"
    # Once the verifier has seen the current CRL, the older one is refused on its own.
    history = MemoryCollateralHistory()
    with pytest.raises(AttestationError):
        snp.verify(report, VerifyContext(now=NOW, extra_roots=(pki.ark,),
                                         verifier_collateral={"crl": current},
                                         collateral_history=history))  # fmt: skip
    with pytest.raises(AttestationError) as e:
        snp.verify(
            presented, VerifyContext(now=NOW, extra_roots=(pki.ark,), collateral_history=history)
        )
    assert e.value.code == "collateral-rollback"
