"""Cross-check with Phala's dcap-qvl (PyPI ``dcap-qvl``) on the same quote, the same
collateral bytes and the same time.

Both verifiers get one collateral document (dcap-qvl's ``QuoteCollateralV3`` JSON; ours
reads it as the ``collateral`` attachment). Where dcap-qvl reports a status, ours reports
the same status and advisory IDs. Where dcap-qvl raises, the test says why and asserts
that ours rejects too (an AttestationError, or a policy failure for the same reason), or
states the difference.

Vectors dcap-qvl cannot verify at all, because no collateral for their FMSPC exists in
the vectors (dcap-qvl requires TCB info, QE identity and both CRLs): the Trustee SGX
debug enclave (FMSPC 00606a000000) and the Azure TDX quote (FMSPC 00806f050000). Ours
verifies their signatures and chains and reports the TCB as "unknown" (see
test_tdx_vectors.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tdx.claims import DcapClaims
from sealroom.attestation.tdx.collateral import top_level_members
from sealroom.attestation.tdx.tcb import TcbStatus
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import AttestationError

from ._helpers import PINNED, at

dcap_qvl: Any = pytest.importorskip("dcap_qvl")


def _pcs(path: Path, key: str) -> tuple[str, bytes]:
    """(exact signed JSON text, signature) of a PCS response file."""
    text = path.read_text()
    spans = top_level_members(text, str(path))
    s, e = spans[key]
    return text[s:e], bytes.fromhex(json.loads(text[slice(*spans["signature"])]))


@dataclass(frozen=True)
class Case:
    quote: str  # under vectors/intel
    kind: str
    now: datetime
    collateral: str  # QuoteCollateralV3 JSON, given to both verifiers


def _phala(intel: Path, name: str) -> dict[str, str]:
    obj: dict[str, str] = json.loads((intel / name / "collateral.json").read_text())
    return obj


def _assemble(
    tcb: tuple[str, bytes],
    qe: tuple[str, bytes],
    signing_chain: str,
    pck_crl: bytes,
    root_crl: bytes,
    pck_crl_chain: str,
) -> str:
    c = dcap_qvl.QuoteCollateralV3(
        pck_crl_chain,
        root_crl,
        pck_crl,
        signing_chain,
        tcb[0],
        tcb[1],
        signing_chain,
        qe[0],
        qe[1],
    )
    text: str = c.to_json()
    return text


def cases(intel: Path, tcb_signing_2018: bytes) -> dict[str, Case]:
    root_pem = (intel / "Intel_SGX_TCB_Signing_chain.pem").read_text()
    root_only = root_pem[root_pem.index("-----END CERTIFICATE-----") + 26 :]
    signing_2025 = (intel / "Intel_SGX_TCB_Signing_chain.pem").read_text()
    signing_2018 = tcb_signing_2018.decode() + root_only
    ph4 = _phala(intel, "tdx_v4_phala")
    ph5 = _phala(intel, "tdx_v5_phala_tcb_unmatched")
    spr = intel / "tdx_v4_gotdx_spr"
    spr_coll = _assemble(
        _pcs(spr / "tcbinfo_response.json", "tcbInfo"),
        _pcs(spr / "qe_identity_response.json", "enclaveIdentity"),
        signing_2018,
        (spr / "pck_platform_crl.der").read_bytes(),
        (spr / "root_ca_crl.der").read_bytes(),
        ph4["pck_crl_issuer_chain"],
    )
    # go-tdx-guest's v5 vector comes with TCB info only; the QE identity and CRLs of the
    # Phala v5 vector (same FMSPC 90c06f000000, Platform CA) are current at the same time.
    v5_coll = _assemble(
        _pcs(intel / "tdx_v5_gotdx" / "tcbinfo_response.json", "tcbInfo"),
        (ph5["qe_identity"], bytes.fromhex(ph5["qe_identity_signature"])),
        signing_2025,
        bytes.fromhex(ph5["pck_crl"]),
        bytes.fromhex(ph5["root_ca_crl"]),
        ph5["pck_crl_issuer_chain"],
    )
    t = intel / "trustee"

    def trustee(crls: dict[str, str]) -> str:
        return _assemble(
            _pcs(t / "tcbinfo_fmspc00a06d080000_response.json", "tcbInfo"),
            _pcs(t / "td_qe_identity_response.json", "enclaveIdentity"),
            signing_2025,
            bytes.fromhex(crls["pck_crl"]),
            bytes.fromhex(crls["root_ca_crl"]),
            crls["pck_crl_issuer_chain"],
        )

    def own(name: str) -> str:
        return (intel / name / "collateral.json").read_text()

    return {
        "tdx_v4_phala": Case(
            "tdx_v4_phala/quote.bin", "tdx", PINNED["tdx_v4_phala"], own("tdx_v4_phala")
        ),
        "sgx_v3_phala": Case(
            "sgx_v3_phala/quote.bin", "sgx", PINNED["sgx_v3_phala"], own("sgx_v3_phala")
        ),
        "tdx_v5_phala_tcb_unmatched": Case(
            "tdx_v5_phala_tcb_unmatched/quote.bin",
            "tdx",
            PINNED["tdx_v5_phala_tcb_unmatched"],
            own("tdx_v5_phala_tcb_unmatched"),
        ),
        "tdx_v4_gotdx_spr": Case(
            "tdx_v4_gotdx_spr/quote_with_trailing_text.bin",
            "tdx",
            PINNED["tdx_v4_gotdx_spr"],
            spr_coll,
        ),
        "tdx_v5_gotdx": Case("tdx_v5_gotdx/quote.bin", "tdx", at("2026-02-20T00:00:00"), v5_coll),
        "trustee_v5": Case("trustee/tdx_v5_quote.bin", "tdx", at("2026-02-20T00:00:00"), v5_coll),
        # Same FMSPC (50806f000000) as the go-tdx-guest SPR collateral.
        "trustee_debug_td": Case(
            "trustee/tdx_v4_debug_td_quote.bin", "tdx", PINNED["tdx_v4_gotdx_spr"], spr_coll
        ),
        # The only PCK CRLs in the vectors for this time are stale (Phala v4, nextUpdate
        # 2025-07-19) or issued later (Phala v5, thisUpdate 2026-02-18).
        "trustee_fmspc_stale_crl": Case(
            "trustee/tdx_v4_quote_fmspc00a06d080000.bin",
            "tdx",
            PINNED["trustee_fmspc00a06d080000"],
            trustee(ph4),
        ),
        "trustee_fmspc_future_crl": Case(
            "trustee/tdx_v4_quote_fmspc00a06d080000.bin",
            "tdx",
            PINNED["trustee_fmspc00a06d080000"],
            trustee(ph5),
        ),
        "tdx_v4_phala_expired": Case(
            "tdx_v4_phala/quote.bin", "tdx", at("2025-08-01T00:00:00"), own("tdx_v4_phala")
        ),
        "tdx_v4_phala_crl_expired": Case(
            "tdx_v4_phala/quote.bin", "tdx", at("2025-07-19T10:05:00"), own("tdx_v4_phala")
        ),
    }


def peer(intel: Path, c: Case, quote: bytes | None = None) -> Any:
    raw = quote if quote is not None else (intel / c.quote).read_bytes()
    coll = dcap_qvl.QuoteCollateralV3.from_json(c.collateral)
    return dcap_qvl.verify(raw, coll, int(c.now.timestamp()))


def ours(intel: Path, c: Case, quote: bytes | None = None) -> DcapClaims:
    raw = quote if quote is not None else (intel / c.quote).read_bytes()
    item = EvidenceItem(c.kind, raw, {"collateral": c.collateral.encode()})
    claims = kinds.get(c.kind).verify(item, VerifyContext(now=c.now))
    assert isinstance(claims, DcapClaims)
    return claims


AGREE = ["tdx_v4_phala", "sgx_v3_phala", "tdx_v5_gotdx"]


@pytest.mark.parametrize("name", AGREE)
def test_same_status_and_advisories(intel: Path, tcb_signing_2018: bytes, name: str) -> None:
    c = cases(intel, tcb_signing_2018)[name]
    theirs = peer(intel, c)
    mine = ours(intel, c)
    assert mine.tcb_status.value == theirs.status
    assert list(mine.advisory_ids) == list(theirs.advisory_ids)
    report = json.loads(theirs.to_json())
    assert mine.qe_identity_status.value == report["qe_status"]["status"]
    # dcap-qvl folds the TDX module status into its platform status; ours keeps the two
    # apart (both UpToDate on these vectors).
    assert mine.platform_tcb_status.value == report["platform_status"]["status"]
    assert mine.tdx_module_status in (None, TcbStatus.UP_TO_DATE)
    body = next(iter(report["report"].values()))
    body = body.get("base", body)  # TD 1.5 nests the TD 1.0 fields
    rd = bytes.fromhex(body["report_data"])
    assert rd == mine.report_data  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "their_error"),
    [
        ("tdx_v5_phala_tcb_unmatched", "No matching TCB level"),
        ("tdx_v4_gotdx_spr", "No matching TCB level"),
        ("trustee_v5", "No matching TCB level"),
    ],
)
def test_no_matching_level_both_reject(
    intel: Path, tcb_signing_2018: bytes, name: str, their_error: str
) -> None:
    """dcap-qvl raises; ours verifies the signatures and reports no matching level, which
    no policy can accept."""
    c = cases(intel, tcb_signing_2018)[name]
    with pytest.raises(ValueError, match=their_error):
        peer(intel, c)
    mine = ours(intel, c)
    assert mine.tcb_status is TcbStatus.NO_MATCHING_LEVEL
    all_six = [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ]
    policy = Policy.from_dict(
        {"version": 1, "tdx": {"accepted_tcb_statuses": all_six, "allow_service_td": True}}
    )
    item = EvidenceItem(
        c.kind, (intel / c.quote).read_bytes(), {"collateral": c.collateral.encode()}
    )
    result = verify_and_appraise(EvidenceBundle.single(item), policy, VerifyContext(now=c.now))
    failed = [r.field for r in result.failures()]
    # The go-tdx-guest SPR TD has SEPT_VE_DISABLE clear, which dcap-qvl also refuses.
    sept = ["TD_ATTRIBUTES.SEPT_VE_DISABLE"] if name == "tdx_v4_gotdx_spr" else []
    assert failed == ["tcb_status", *sept]


def test_debug_td_both_reject(intel: Path, tcb_signing_2018: bytes) -> None:
    """dcap-qvl refuses debug TDs inside verify; ours verifies (the TCB matches UpToDate)
    and the default policy rejects TD_ATTRIBUTES.DEBUG."""
    c = cases(intel, tcb_signing_2018)["trustee_debug_td"]
    with pytest.raises(ValueError, match="Debug mode is enabled"):
        peer(intel, c)
    mine = ours(intel, c)
    assert mine.tcb_status is TcbStatus.UP_TO_DATE
    item = EvidenceItem(
        c.kind, (intel / c.quote).read_bytes(), {"collateral": c.collateral.encode()}
    )
    policy = Policy.from_dict({"version": 1, "tdx": {}})
    result = verify_and_appraise(EvidenceBundle.single(item), policy, VerifyContext(now=c.now))
    assert [r.field for r in result.failures()] == ["TD_ATTRIBUTES.DEBUG"]


@pytest.mark.parametrize(
    ("name", "their_error", "our_code"),
    [
        ("tdx_v4_phala_expired", "TCBInfo expired", "tdx-collateral-expired"),
        ("tdx_v4_phala_crl_expired", "CrlExpired", "tdx-collateral-expired"),
        ("trustee_fmspc_stale_crl", "CrlExpired", "tdx-collateral-expired"),
    ],
)
def test_stale_collateral_both_reject(
    intel: Path, tcb_signing_2018: bytes, name: str, their_error: str, our_code: str
) -> None:
    c = cases(intel, tcb_signing_2018)[name]
    with pytest.raises(ValueError, match=their_error):
        peer(intel, c)
    with pytest.raises(AttestationError) as e:
        ours(intel, c)
    assert e.value.code == our_code


def test_crl_issued_after_now_is_a_difference(intel: Path, tcb_signing_2018: bytes) -> None:
    """A difference, stated: dcap-qvl accepts a PCK CRL whose thisUpdate (2026-02-18) is
    after ``now`` (2025-11-01) and reports OutOfDate; ours refuses collateral from the
    future of ``now`` (tdx-collateral-not-yet-valid). Without CRLs, ours reports the same
    OutOfDate from the same TCB info and QE identity."""
    c = cases(intel, tcb_signing_2018)["trustee_fmspc_future_crl"]
    assert peer(intel, c).status == "OutOfDate"
    with pytest.raises(AttestationError) as e:
        ours(intel, c)
    assert e.value.code == "tdx-collateral-not-yet-valid"
    coll = json.loads(c.collateral)
    del coll["pck_crl"], coll["root_ca_crl"]
    mine = ours(intel, Case(c.quote, c.kind, c.now, json.dumps(coll)))
    assert mine.tcb_status.value == "OutOfDate"
    assert not mine.crl_checked


FLIPS = {
    "td_body_mrtd": 48 + 0x088,
    "td_body_report_data": 48 + 0x208,
    "quote_signature": 0x27C + 20,
    "qe_report": 0x27C + 134 + 0x40,
    "qe_report_signature": 0x27C + 134 + 384 + 7,
    "qe_auth_data": 0x27C + 134 + 384 + 64 + 2 + 1,
}


@pytest.mark.parametrize("where", list(FLIPS))
def test_flipped_bytes_both_reject(intel: Path, tcb_signing_2018: bytes, where: str) -> None:
    c = cases(intel, tcb_signing_2018)["tdx_v4_phala"]
    raw = bytearray((intel / c.quote).read_bytes())
    raw[FLIPS[where]] ^= 0x01
    with pytest.raises(ValueError, match="Verification failed"):
        peer(intel, c, bytes(raw))
    with pytest.raises(AttestationError):
        ours(intel, c, bytes(raw))


# --- the fake PKI's quotes are real enough for dcap-qvl -------------------------------------

FAKE_NOW = at("2026-01-15T00:00:00")


def _fake_cases() -> tuple[bytes, dict[str, tuple[bytes, bytes, str | None]]]:
    """The fake root (DER), and name -> (quote, collateral, the status both report, or None
    when both reject)."""
    from sealroom.testing.fake_intel import FakeIntelPki, other_key

    p = FakeIntelPki(FAKE_NOW)
    higher = tuple(c + 1 for c in p.platform.components)
    return p.root.der, {
        "valid": (p.quote(), p.collateral(), "UpToDate"),
        "sw_hardening": (
            p.quote(),
            p.collateral(
                tcb_info=p.tcb_info(
                    levels=[
                        p.tcb_level("UpToDate", components=higher),
                        p.tcb_level("SWHardeningNeeded", advisories=("INTEL-SA-00615",)),
                    ]
                )
            ),
            "SWHardeningNeeded",
        ),
        "pck_revoked": (p.quote(), p.collateral(pck_crl=p.pck_crl([p.pck.cert])), None),
        "qe_report_signed_by_another_key": (
            p.quote(qe_report_signer=other_key()),
            p.collateral(),
            None,
        ),
        "quote_signed_by_another_key": (p.quote(quote_signer=other_key()), p.collateral(), None),
        "no_matching_level": (
            p.quote(),
            p.collateral(tcb_info=p.tcb_info(levels=[p.tcb_level(components=higher)])),
            None,
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "valid",
        "sw_hardening",
        "pck_revoked",
        "qe_report_signed_by_another_key",
        "quote_signed_by_another_key",
        "no_matching_level",
    ],
)
def test_fake_pki_quotes_agree_with_dcap_qvl(name: str) -> None:
    from sealroom.attestation.x509util import load_certificate

    root, fakes = _fake_cases()
    quote, collateral, status = fakes[name]
    coll = dcap_qvl.QuoteCollateralV3.from_json(collateral.decode())
    ctx = VerifyContext(now=FAKE_NOW, extra_roots=(load_certificate(root),))
    item = EvidenceItem("tdx", quote, {"collateral": collateral})
    now_secs = int(FAKE_NOW.timestamp())
    if status is None:
        with pytest.raises(ValueError, match="Verification failed"):
            dcap_qvl.verify_with_root_ca(quote, coll, root, now_secs)
        try:
            claims = kinds.get("tdx").verify(item, ctx)
        except AttestationError:
            return
        assert isinstance(claims, DcapClaims)
        assert claims.tcb_status is TcbStatus.NO_MATCHING_LEVEL
        return
    theirs = dcap_qvl.verify_with_root_ca(quote, coll, root, now_secs)
    mine = kinds.get("tdx").verify(item, ctx)
    assert isinstance(mine, DcapClaims)
    assert theirs.status == status == mine.tcb_status.value
    assert list(theirs.advisory_ids) == list(mine.advisory_ids)
