"""Negative cases through the production verifier, with quotes and collateral made by a
fake Intel PKI (sealroom.testing.fake_intel) that holds every key.

Each case is named after the defect. The fake root is trusted only via
``VerifyContext.extra_roots``; claims then say ``simulated`` (not vendor-rooted).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tdx.claims import DcapClaims, TdxClaims
from sealroom.attestation.tdx.tcb import TcbStatus
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.attestation.x509util import load_certificate, public_key
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError
from sealroom.testing.fake_intel import FakeIntelPki, Platform, other_key

NOW = datetime(2026, 1, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> FakeIntelPki:
    return FakeIntelPki(NOW)


def ctx(pki: FakeIntelPki, now: datetime = NOW) -> VerifyContext:
    return VerifyContext(now=now, extra_roots=(pki.root.cert,))


def verify(
    pki: FakeIntelPki,
    quote: bytes,
    collateral: bytes | None = None,
    kind: str = "tdx",
    now: datetime = NOW,
    **atts: bytes,
) -> DcapClaims:
    attachments = dict(atts)
    if collateral is not None:
        attachments["collateral"] = collateral
    claims = kinds.get(kind).verify(EvidenceItem(kind, quote, attachments), ctx(pki, now))
    assert isinstance(claims, DcapClaims)
    return claims


def test_fake_quote_verifies_and_is_not_vendor_rooted(pki: FakeIntelPki) -> None:
    c = verify(pki, pki.quote(), pki.collateral())
    assert c.verified
    assert c.simulated
    assert not c.vendor_rooted
    assert c.tcb_status is TcbStatus.UP_TO_DATE
    assert c.crl_checked
    # ... and a real policy rejects it unless it allows simulated evidence.
    item = EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral()})
    for allow, failed in ((False, ["simulated"]), (True, [])):
        policy = Policy.from_dict({"version": 1, "allow_simulated": allow, "tdx": {}})
        result = verify_and_appraise(EvidenceBundle.single(item), policy, ctx(pki))
        assert [r.field for r in result.failures()] == failed


# --- authenticity: each defect is an AttestationError with its code ------------------------


def _impostor_root() -> FakeIntelPki:
    return FakeIntelPki(NOW)  # same subject names, other keys


DEFECTS: dict[str, tuple[Callable[[FakeIntelPki], tuple[bytes, bytes]], str]] = {
    "quote_signed_by_another_key": (
        lambda p: (p.quote(quote_signer=other_key()), p.collateral()),
        "tdx-quote-signature-invalid",
    ),
    "qe_report_signed_by_another_key": (
        lambda p: (p.quote(qe_report_signer=other_key()), p.collateral()),
        "tdx-qe-report-signature-invalid",
    ),
    "qe_report_data_not_binding_the_key": (
        lambda p: (p.quote(qe_report_data=bytes(64)), p.collateral()),
        "tdx-qe-binding-invalid",
    ),
    "qe_report_data_upper_half_nonzero": (
        lambda p: (p.quote(qe_report_data=b"\x00" * 63 + b"\x01"), p.collateral()),
        "tdx-qe-binding-invalid",
    ),
    "pck_revoked_in_pck_crl": (
        lambda p: (p.quote(), p.collateral(pck_crl=p.pck_crl([p.pck.cert]))),
        "certificate-revoked",
    ),
    "pck_ca_revoked_in_root_crl": (
        lambda p: (p.quote(), p.collateral(root_crl=p.root_crl([p.pck_ca.cert]))),
        "certificate-revoked",
    ),
    "tcb_signing_revoked_in_root_crl": (
        lambda p: (p.quote(), p.collateral(root_crl=p.root_crl([p.tcb_signing.cert]))),
        "certificate-revoked",
    ),
    "pck_crl_signed_by_another_key": (
        lambda p: (p.quote(), p.collateral(pck_crl=p.crl(p.pck_ca, signer=other_key()))),
        "crl-invalid",
    ),
    "pck_crl_stale": (
        lambda p: (
            p.quote(),
            p.collateral(pck_crl=p.crl(p.pck_ca, next_update=NOW - timedelta(minutes=1))),
        ),
        "tdx-collateral-expired",
    ),
    "tcb_info_signed_by_another_key": (
        lambda p: (p.quote(), p.collateral(signer=other_key())),
        "tdx-collateral-signature-invalid",
    ),
    "tcb_info_expired": (
        lambda p: (
            p.quote(),
            p.collateral(tcb_info=p.tcb_info(next_update=NOW - timedelta(seconds=1))),
        ),
        "tdx-collateral-expired",
    ),
    "tcb_info_issued_in_the_future": (
        lambda p: (p.quote(), p.collateral(tcb_info=p.tcb_info(issue=NOW + timedelta(hours=1)))),
        "tdx-collateral-not-yet-valid",
    ),
    "qe_identity_expired": (
        lambda p: (
            p.quote(),
            p.collateral(qe_identity=p.qe_identity(next_update=NOW - timedelta(seconds=1))),
        ),
        "tdx-collateral-expired",
    ),
    "qe_not_intels_qe": (
        lambda p: (p.quote(qe_mrsigner=b"\x66" * 32), p.collateral()),
        "tdx-qe-identity-mismatch",
    ),
    "tdx_module_not_intels": (
        lambda p: (p.quote(p.td_body(mr_signer_seam=b"\x01" * 48)), p.collateral()),
        "tdx-module-identity-mismatch",
    ),
    "pck_chain_from_another_pki": (
        lambda p: (p.quote(pck_chain=_impostor_root().pck_chain_pem), p.collateral()),
        "certificate-chain-invalid",
    ),
    "collateral_signed_under_another_root": (
        lambda p: (p.quote(), _impostor_root().collateral()),
        "certificate-chain-invalid",
    ),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_defect_is_rejected(pki: FakeIntelPki, defect: str) -> None:
    make, code = DEFECTS[defect]
    quote, collateral = make(pki)
    with pytest.raises(AttestationError) as e:
        verify(pki, quote, collateral)
    assert e.value.code == code, e.value


def test_wrong_root_impersonating_intel(pki: FakeIntelPki) -> None:
    """A chain whose root is named "Intel SGX Root CA" but is not Intel's: without the
    fake root among the trusted roots, the real embedded root refuses it."""
    with pytest.raises(AttestationError) as e:
        kinds.get("tdx").verify(
            EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral()}),
            VerifyContext(now=NOW),
        )
    assert e.value.code == "certificate-chain-invalid"
    assert "Intel SGX Root CA" in str(e.value)


def test_pck_expired(pki: FakeIntelPki) -> None:
    short = FakeIntelPki(NOW, pck_not_after=NOW + timedelta(days=1))
    with pytest.raises(AttestationError) as e:
        verify(short, short.quote(), short.collateral(), now=NOW + timedelta(days=2))
    assert e.value.code in ("certificate-expired", "tdx-collateral-expired")


def test_tcb_signing_certificate_missing_is_unavailable(pki: FakeIntelPki) -> None:
    coll = pki.collateral(
        omit=("tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain")
    )
    with pytest.raises(UnavailableError) as e:
        verify(pki, pki.quote(), coll)
    assert e.value.code == "tdx-collateral-unavailable"
    # ... and supplied separately (the CLI's --certs) it verifies.
    c = verify(pki, pki.quote(), coll, cert=pki.signing_chain_pem)
    assert c.tcb_status is TcbStatus.UP_TO_DATE


def test_without_crls_revocation_is_not_checked(pki: FakeIntelPki) -> None:
    c = verify(pki, pki.quote(), pki.collateral(omit=("pck_crl", "root_ca_crl")))
    assert c.collateral == ("tcb_info", "qe_identity")
    assert not c.crl_checked


def test_without_any_collateral(pki: FakeIntelPki) -> None:
    c = verify(pki, pki.quote())
    assert c.tcb_status is TcbStatus.UNKNOWN
    assert c.collateral == ()
    assert c.collateral_expiry is None


# --- TCB levels -----------------------------------------------------------------------------


def _status(pki: FakeIntelPki, quote: bytes, **tcb: Any) -> DcapClaims:
    qe = tcb.pop("qe_identity", None)
    info = pki.tcb_info(**tcb)
    return verify(pki, quote, pki.collateral(tcb_info=info, qe_identity=qe))


def test_tcb_level_matches_nothing(pki: FakeIntelPki) -> None:
    higher = tuple(c + 1 for c in pki.platform.components)
    c = _status(
        pki,
        pki.quote(),
        levels=[
            pki.tcb_level("UpToDate", components=higher),
            pki.tcb_level("OutOfDate", components=higher, pce_svn=1),
        ],
    )
    assert c.tcb_status is TcbStatus.NO_MATCHING_LEVEL
    assert "no TCB level" in c.tcb_detail
    assert c.advisory_ids == ()


def test_levels_are_matched_highest_first_whatever_the_json_order(pki: FakeIntelPki) -> None:
    higher = tuple(c + 1 for c in pki.platform.components)
    c = _status(
        pki,
        pki.quote(),
        levels=[
            pki.tcb_level("OutOfDate", pce_svn=1, advisories=("INTEL-SA-00001",)),
            pki.tcb_level("UpToDate", components=higher),
            pki.tcb_level("SWHardeningNeeded", advisories=("INTEL-SA-00615",)),
        ],
    )
    assert c.tcb_status is TcbStatus.SW_HARDENING_NEEDED
    assert c.advisory_ids == ("INTEL-SA-00615",)


def test_pcesvn_below_level(pki: FakeIntelPki) -> None:
    c = _status(
        pki,
        pki.quote(),
        levels=[
            pki.tcb_level("UpToDate", pce_svn=pki.platform.pce_svn + 1),
            pki.tcb_level("OutOfDate", pce_svn=1, advisories=("INTEL-SA-00828",)),
        ],
    )
    assert c.tcb_status is TcbStatus.OUT_OF_DATE
    assert c.advisory_ids == ("INTEL-SA-00828",)


def test_tdx_components_below_level(pki: FakeIntelPki) -> None:
    # TEE_TCB_SVN[1] (module version) = 1: components 0-1 are the module's, so only
    # components 2.. are compared with the level (here component 2: 2 < 3).
    c = _status(
        pki,
        pki.quote(),
        levels=[
            pki.tcb_level("UpToDate", tdx_components=(9, 9, 3) + (0,) * 13),
            pki.tcb_level("OutOfDate", tdx_components=(9, 9, 2) + (0,) * 13),
        ],
    )
    assert c.tcb_status is TcbStatus.OUT_OF_DATE


def test_tdx_module_identity_levels(pki: FakeIntelPki) -> None:
    ident = {
        "id": "TDX_01",
        "mrsigner": "00" * 48,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [
            {"tcb": {"isvsvn": 6}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
            {
                "tcb": {"isvsvn": 2},
                "tcbDate": "2023-08-09T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": ["INTEL-SA-01036"],
            },
        ],
    }
    # TEE_TCB_SVN = 05 01 ...: module SVN 5 < 6 -> the module level is OutOfDate.
    c = _status(pki, pki.quote(), module_identities=[ident])
    assert c.platform_tcb_status is TcbStatus.UP_TO_DATE
    assert c.tdx_module_status is TcbStatus.OUT_OF_DATE
    assert c.tcb_status is TcbStatus.OUT_OF_DATE
    assert c.advisory_ids == ("INTEL-SA-01036",)
    # No identity for this module version: the module does not match (QVL's
    # TDX_MODULE_MISMATCH), see test_tdx_tcb_rules.py.
    other = dict(ident, id="TDX_03")
    c = _status(pki, pki.quote(), module_identities=[other])
    assert c.tcb_status is TcbStatus.TDX_MODULE_MISMATCH


@pytest.mark.parametrize(
    ("platform", "qe", "want"),
    [
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationNeeded", "UpToDate", "ConfigurationNeeded"),
        ("UpToDate", "Revoked", "Revoked"),
        ("Revoked", "UpToDate", "Revoked"),
    ],
)
def test_qe_status_converges_with_platform_status(
    pki: FakeIntelPki, platform: str, qe: str, want: str
) -> None:
    c = _status(
        pki,
        pki.quote(),
        levels=[pki.tcb_level(platform)],
        qe_identity=pki.qe_identity(isvsvn_levels=[(9, "UpToDate"), (4, qe)]),
    )
    assert c.platform_tcb_status.value == platform
    assert c.qe_identity_status.value == qe
    assert c.tcb_status.value == want


def test_qe_below_every_level(pki: FakeIntelPki) -> None:
    c = _status(pki, pki.quote(qe_isv_svn=1), qe_identity=pki.qe_identity())
    assert c.qe_identity_status is TcbStatus.NO_MATCHING_LEVEL
    assert c.tcb_status is TcbStatus.NO_MATCHING_LEVEL


def test_revoked_tcb_level_is_never_acceptable(pki: FakeIntelPki) -> None:
    """ "Revoked" is not among the statuses a policy can list."""
    with pytest.raises(Exception, match="accepted_tcb_statuses"):
        Policy.from_dict({"version": 1, "tdx": {"accepted_tcb_statuses": ["Revoked"]}})
    c = _status(pki, pki.quote(), levels=[pki.tcb_level("Revoked")])
    assert c.tcb_status is TcbStatus.REVOKED


# --- policy on fake evidence ---------------------------------------------------------------


def _fails(
    pki: FakeIntelPki,
    quote: bytes,
    section: dict[str, Any],
    kind: str = "tdx",
    collateral: bytes | None = None,
    nonce: bytes | None = None,
) -> list[str]:
    item = EvidenceItem(kind, quote, {"collateral": collateral or pki.collateral()})
    policy = Policy.from_dict({"version": 1, "allow_simulated": True, kind: section})
    c = VerifyContext(now=NOW, extra_roots=(pki.root.cert,), nonce=nonce)
    return [r.field for r in verify_and_appraise(EvidenceBundle.single(item), policy, c).failures()]


def test_policy_rules(pki: FakeIntelPki) -> None:
    body = pki.td_body(
        mr_config_id=b"\xab" * 32 + bytes(16),
        report_data=b"nonce-123" + bytes(55),
        td_attributes=((1 << 28) | 1).to_bytes(8, "little"),
    )
    q = pki.quote(body)
    assert _fails(pki, q, {}) == ["TD_ATTRIBUTES.DEBUG"]
    ok = {
        "allow_debug": True,
        "mrtd": ["11" * 48],
        "rtmr0": ["20" * 48],
        "rtmr1": ["21" * 48],
        "rtmr2": ["22" * 48],
        "rtmr3": ["00" * 48],
        "mrconfigid": ["ab" * 32],  # zero-padded to 48 bytes
        "mrowner": ["00" * 48],
        "mrseam": ["5e" * 48],
        "xfam": "e702060000000000",
        "td_attributes": "0100001000000000",
        "require_sept_ve_disable": True,
        "min_tee_tcb_svn": "05010200000000000000000000000000",
        "report_data": {"mode": "nonce"},
    }
    assert _fails(pki, q, ok, nonce=b"nonce-123") == []
    assert _fails(pki, q, ok, nonce=b"nonce-124") == ["REPORTDATA"]
    bad = dict(
        ok,
        mrtd=["12" * 48],
        rtmr2=["00" * 48],
        min_tee_tcb_svn="06" + "00" * 15,
        xfam="e718060000000000",
        mrconfigid=["ac" * 32],
    )
    assert _fails(pki, q, bad, nonce=b"nonce-123") == [
        "MRTD",
        "RTMR2",
        "MRCONFIGID",
        "XFAM",
        "TEE_TCB_SVN",
    ]


def test_policy_rules_record_field_got_want(pki: FakeIntelPki) -> None:
    item = EvidenceItem("tdx", pki.quote(), {"collateral": pki.collateral()})
    policy = Policy.from_dict({"version": 1, "allow_simulated": True, "tdx": {"mrtd": ["12" * 48]}})
    result = verify_and_appraise(EvidenceBundle.single(item), policy, ctx(pki))
    [rule] = result.failures()
    assert rule.field == "MRTD"
    assert rule.got == "11" * 48
    assert rule.want == f"one of [{'12' * 48}]"
    ok = {r.field: r for r in result.all_rules()}
    assert ok["tcb_status"].got == "UpToDate"
    assert ok["crl_checked"].passed


def test_sgx_debug_enclave_rejected_by_default() -> None:
    pki = FakeIntelPki(NOW, processor=True)
    debug = pki.enclave_body(attributes=(0x07).to_bytes(8, "little") + bytes(8))
    q = pki.quote(debug, version=3)
    coll = pki.collateral(tdx=False)
    assert _fails(pki, q, {}, kind="sgx", collateral=coll) == ["ATTRIBUTES.DEBUG"]
    assert _fails(pki, q, {"allow_debug": True}, kind="sgx", collateral=coll) == []
    good = pki.quote(version=3)
    section = {
        "mrenclave": ["e1" * 32],
        "mrsigner": ["51" * 32],
        "isv_prod_id": 0,
        "min_isv_svn": 0,
    }
    assert _fails(pki, good, section, kind="sgx", collateral=coll) == []
    assert _fails(pki, good, {"mrsigner": ["52" * 32]}, kind="sgx", collateral=coll) == ["MRSIGNER"]


def test_td15_quote_with_service_td(pki: FakeIntelPki) -> None:
    body = pki.td_body(tee_tcb_svn2=bytes([5, 1, 2]) + bytes(13), mr_servicetd=b"\x33" * 48)
    q = pki.quote(body, version=5)
    c = verify(pki, q, pki.collateral())
    assert isinstance(c, TdxClaims)
    assert c.quote_version == 5
    assert c.body_type == "TD1.5"
    assert _fails(pki, q, {}) == ["MRSERVICETD"]
    assert _fails(pki, q, {"allow_service_td": True}) == []


def test_processor_ca_platform_fmspc() -> None:
    pki = FakeIntelPki(NOW, platform=Platform(fmspc=bytes.fromhex("00606a000000")), processor=True)
    c = verify(pki, pki.quote(version=3), pki.collateral(tdx=False), kind="sgx")
    assert c.pck_issuer == "processor"
    assert c.fmspc == bytes.fromhex("00606a000000")


P256_OID = bytes.fromhex("06082a8648ce3d030107")  # id-ecPublicKey's namedCurve prime256v1


def test_pck_with_unknown_curve_oid_is_malformed_not_unsupported_algorithm(
    pki: FakeIntelPki,
) -> None:
    """CI's fuzz run found it: a PCK certificate whose curve OID had one byte changed
    (1.2.840... -> 0.38.840...) made cryptography raise UnsupportedAlgorithm out of the
    verifier instead of a typed malformed-evidence error."""
    der = pki.pck.cert.public_bytes(serialization.Encoding.DER)
    assert der.count(P256_OID) == 1
    bad = der.replace(P256_OID, P256_OID[:2] + b"\x26" + P256_OID[3:])
    bad_pem = x509.load_der_x509_certificate(bad).public_bytes(serialization.Encoding.PEM)
    chain = bad_pem + pki.pck_ca.pem + pki.root.pem
    with pytest.raises(MalformedEvidenceError, match="public key does not decode") as e:
        verify(pki, pki.quote(pck_chain=chain + b"\x00"), pki.collateral())
    assert e.value.code == "certificate-key-malformed"


def test_unknown_curve_oid_in_any_certificate_is_malformed() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "t")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    bad = load_certificate(der.replace(P256_OID, P256_OID[:2] + b"\x26" + P256_OID[3:]))
    with pytest.raises(MalformedEvidenceError, match="leaf public key does not decode"):
        public_key(bad, "leaf")
