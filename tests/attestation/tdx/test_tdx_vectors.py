"""Every real Intel DCAP vector gives the verdict its README states, at a pinned time.

Collateral reaches the verifier the two ways a user has: as an attachment (the CLI's
``--collateral FILE`` / ``--certs FILE``) and through ``ctx.collateral`` (``--collateral
DIR``: ``DirectoryCollateral``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.collateral import (
    ChainedCollateral,
    CollateralSource,
    DirectoryCollateral,
    NoCollateral,
)
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tdx.abi import Quote
from sealroom.attestation.tdx.claims import DcapClaims, SgxClaims, TdxClaims
from sealroom.attestation.tdx.tcb import TcbStatus
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.attestation.x509util import load_certificates
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError

from ._helpers import PINNED, at

UP = TcbStatus.UP_TO_DATE
NOMATCH = TcbStatus.NO_MATCHING_LEVEL
UNKNOWN = TcbStatus.UNKNOWN


@dataclass(frozen=True)
class Vec:
    quote: str  # under vectors/
    kind: str
    now: datetime
    status: TcbStatus
    advisories: tuple[str, ...] = ()
    collateral: tuple[str, ...] = ()
    crl_checked: bool = False
    attach: Mapping[str, str] = field(default_factory=dict)  # name -> path under vectors/
    dirs: tuple[str, ...] = ()  # DirectoryCollateral roots under vectors/, in order
    old_tcb_signing: bool = False  # attach the 2018 TCB Signing certificate (2023 vectors)


ALL4 = ("tcb_info", "qe_identity", "root_ca_crl", "pck_crl")

VECS: dict[str, Vec] = {
    # README: research TCB eval UpToDate, matching upstream's test assertion.
    "tdx_v4_phala": Vec(
        "intel/tdx_v4_phala/quote.bin",
        "tdx",
        PINNED["tdx_v4_phala"],
        UP,
        (),
        ALL4,
        True,
        {"collateral": "intel/tdx_v4_phala/collateral.json"},
    ),
    # README: ConfigurationAndSWHardeningNeeded + [INTEL-SA-00289, INTEL-SA-00615].
    "sgx_v3_phala": Vec(
        "intel/sgx_v3_phala/quote.bin",
        "sgx",
        PINNED["sgx_v3_phala"],
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        ("INTEL-SA-00289", "INTEL-SA-00615"),
        ALL4,
        True,
        {"collateral": "intel/sgx_v3_phala/collateral.json"},
    ),
    # README: every signature verifies; no TCB level matches.
    "tdx_v5_phala_tcb_unmatched": Vec(
        "intel/tdx_v5_phala_tcb_unmatched/quote.bin",
        "tdx",
        PINNED["tdx_v5_phala_tcb_unmatched"],
        NOMATCH,
        (),
        ALL4,
        True,
        {"collateral": "intel/tdx_v5_phala_tcb_unmatched/collateral.json"},
    ),
    # README: quote/QE/PCK verify; research TCB eval: no level matches. Collateral from
    # the directory (PCS responses, CRLs); 2023 needs the 2018 TCB Signing certificate.
    "tdx_v4_gotdx_spr": Vec(
        "intel/tdx_v4_gotdx_spr/quote_with_trailing_text.bin",
        "tdx",
        PINNED["tdx_v4_gotdx_spr"],
        NOMATCH,
        (),
        ALL4,
        True,
        dirs=("intel/tdx_v4_gotdx_spr", "intel"),
        old_tcb_signing=True,
    ),
    # README: research TCB eval UpToDate (TCB info only: no QE identity, no CRLs).
    "tdx_v5_gotdx": Vec(
        "intel/tdx_v5_gotdx/quote.bin",
        "tdx",
        PINNED["tdx_v5_gotdx"],
        UP,
        (),
        ("tcb_info",),
        dirs=("intel/tdx_v5_gotdx", "intel"),
    ),
    # README: research TCB eval OutOfDate (PCESVN 11 < 13).
    "trustee_fmspc00a06d080000": Vec(
        "intel/trustee/tdx_v4_quote_fmspc00a06d080000.bin",
        "tdx",
        PINNED["trustee_fmspc00a06d080000"],
        TcbStatus.OUT_OF_DATE,
        (),
        ("tcb_info", "qe_identity"),
        attach={
            "tcb_info": "intel/trustee/tcbinfo_fmspc00a06d080000_response.json",
            "qe_identity": "intel/trustee/td_qe_identity_response.json",
            "cert": "intel/Intel_SGX_TCB_Signing_chain.pem",
        },
    ),
    # README: quote/QE/PCK verify; no collateral: TCB unknown.
    "trustee_debug_td": Vec(
        "intel/trustee/tdx_v4_debug_td_quote.bin", "tdx", PINNED["trustee"], UNKNOWN
    ),
    "trustee_v5": Vec("intel/trustee/tdx_v5_quote.bin", "tdx", PINNED["trustee"], UNKNOWN),
    "trustee_sgx_debug": Vec(
        "intel/trustee/sgx_v3_debug_enclave_quote.bin", "sgx", PINNED["trustee"], UNKNOWN
    ),
    # The Azure TDX CVM's TD quote (vectors/vtpm): quote, QE and PCK only.
    "azure_tdx": Vec("vtpm/azure_tdx/td_quote.bin", "tdx", PINNED["azure_tdx"], UNKNOWN),
}


def build(vectors: Path, v: Vec, tcb_signing_2018: bytes) -> tuple[EvidenceItem, CollateralSource]:
    atts = {name: (vectors / rel).read_bytes() for name, rel in v.attach.items()}
    if v.old_tcb_signing:
        atts["cert"] = tcb_signing_2018
    item = EvidenceItem(kind=v.kind, data=(vectors / v.quote).read_bytes(), attachments=atts)
    source: CollateralSource = (
        ChainedCollateral([DirectoryCollateral(vectors / d) for d in v.dirs])
        if v.dirs
        else NoCollateral()
    )
    return item, source


def verify(
    intel: Path, name: str, tcb_signing_2018: bytes, now: datetime | None = None
) -> DcapClaims:
    v = VECS[name]
    item, source = build(intel.parent, v, tcb_signing_2018)
    claims = kinds.get(v.kind).verify(item, VerifyContext(now=now or v.now, collateral=source))
    assert isinstance(claims, DcapClaims)
    return claims


@pytest.mark.parametrize("name", list(VECS))
def test_vector_verifies_with_readme_tcb_status(
    intel: Path, tcb_signing_2018: bytes, name: str
) -> None:
    v = VECS[name]
    c = verify(intel, name, tcb_signing_2018)
    assert c.verified
    assert not c.simulated
    assert c.vendor_rooted
    assert c.kind == v.kind
    assert c.tcb_status is v.status, c.tcb_detail
    assert c.advisory_ids == v.advisories
    assert c.collateral == v.collateral
    assert c.crl_checked is v.crl_checked
    if v.collateral:
        assert c.collateral_expiry is not None
        assert c.collateral_expiry > v.now
    else:
        assert c.collateral_expiry is None
    assert c.fmspc is not None


def test_phala_v4_claims(intel: Path, tcb_signing_2018: bytes) -> None:
    c = verify(intel, "tdx_v4_phala", tcb_signing_2018)
    assert isinstance(c, TdxClaims)
    assert c.quote_version == 4
    assert c.tee_type == "TDX"
    assert c.body_type == "TD1.0"
    assert c.fmspc == bytes.fromhex("b0c06f000000")
    assert c.pck_issuer == "platform"
    assert c.pce_svn == 11
    assert c.mr_td.hex().startswith("91eb2b44d141d4ece09f0c75c2c53d24")
    assert c.rtmr3 == bytes(48)
    assert not c.debug
    assert c.sept_ve_disable
    assert c.xfam == bytes.fromhex("e702060000000000")
    assert c.tee_tcb_svn.hex() == "06010300000000000000000000000000"
    assert c.platform_tcb_status is UP
    assert c.qe_identity_status is UP
    assert c.tdx_module_status is UP
    assert c.trailing_bytes == 70
    assert c.collateral_expiry == at("2025-07-19T10:00:35")  # the PCK CRL's nextUpdate
    assert c.tcb_evaluation_data_number == 17


def test_sgx_claims(intel: Path, tcb_signing_2018: bytes) -> None:
    c = verify(intel, "sgx_v3_phala", tcb_signing_2018)
    assert isinstance(c, SgxClaims)
    assert c.pck_issuer == "processor"
    assert c.report_data.rstrip(b"\x00") == b"Hello, world!"
    assert c.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert not c.debug
    assert c.platform_tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    assert c.qe_identity_status is UP


def test_azure_tdx_quote_through_the_registry_without_collateral(vtpm: Path) -> None:
    """The call the TPM/vTPM path makes for the Azure TDX CVM's TD quote."""
    data = (vtpm / "azure_tdx" / "td_quote.bin").read_bytes()
    claims = kinds.get("tdx").verify(
        EvidenceItem(kind="tdx", data=data), VerifyContext(now=PINNED["azure_tdx"])
    )
    assert isinstance(claims, TdxClaims)
    assert claims.verified
    assert claims.tcb_status is UNKNOWN
    assert claims.collateral == ()
    assert not claims.crl_checked
    assert claims.fmspc == bytes.fromhex("00806f050000")
    assert len(claims.report_data) == 64


def test_phala_directory_collateral_bundle(intel: Path) -> None:
    """``--collateral DIR`` on a directory holding dcap-qvl's collateral.json."""
    data = (intel / "tdx_v4_phala" / "quote.bin").read_bytes()
    ctx = VerifyContext(
        now=PINNED["tdx_v4_phala"], collateral=DirectoryCollateral(intel / "tdx_v4_phala")
    )
    c = kinds.get("tdx").verify(EvidenceItem(kind="tdx", data=data), ctx)
    assert isinstance(c, TdxClaims)
    assert c.tcb_status is UP
    assert c.crl_checked


def test_trailing_bytes_change_nothing(intel: Path, tcb_signing_2018: bytes) -> None:
    """Trailing bytes are outside every signature: replacing them keeps the verdict."""
    v = VECS["tdx_v4_phala"]
    item, _ = build(intel.parent, v, tcb_signing_2018)
    want = kinds.get("tdx").verify(item, VerifyContext(now=v.now))
    for tail in (b"", b"\xff" * 70, b"anything at all"):
        data = item.data[:-70] + tail
        got = kinds.get("tdx").verify(
            EvidenceItem("tdx", data, item.attachments), VerifyContext(now=v.now)
        )
        assert isinstance(got, TdxClaims)
        assert got.trailing_bytes == len(tail)
        assert got.tcb_status is want.tcb_status  # type: ignore[attr-defined]
        assert got.mr_td == want.mr_td  # type: ignore[attr-defined]


# --- time: collateral and CRLs have a window ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "when", "code"),
    [
        ("tdx_v4_phala", at("2025-08-01T00:00:00"), "tdx-collateral-expired"),
        ("tdx_v4_phala", at("2025-07-19T10:05:00"), "tdx-collateral-expired"),  # PCK CRL
        ("tdx_v4_phala", at("2025-06-01T00:00:00"), "tdx-collateral-not-yet-valid"),
        ("sgx_v3_phala", at("2026-01-01T00:00:00"), "tdx-collateral-expired"),
        ("tdx_v4_gotdx_spr", at("2023-07-09T00:00:00"), "tdx-collateral-expired"),
        ("tdx_v5_gotdx", at("2026-03-04T00:00:00"), "tdx-collateral-expired"),
        ("trustee_fmspc00a06d080000", at("2025-12-01T00:00:00"), "tdx-collateral-expired"),
    ],
)
def test_stale_collateral_is_rejected(
    intel: Path, tcb_signing_2018: bytes, name: str, when: datetime, code: str
) -> None:
    with pytest.raises(AttestationError) as e:
        verify(intel, name, tcb_signing_2018, now=when)
    assert e.value.code == code


def test_2023_collateral_needs_the_2023_tcb_signing_certificate(intel: Path) -> None:
    """With only the 2025 re-issue of the TCB Signing certificate, 2023 collateral cannot
    be checked at a 2023 time: the certificate is not yet valid then."""
    v = VECS["tdx_v4_gotdx_spr"]
    item, source = build(intel.parent, v, b"")
    item = EvidenceItem(item.kind, item.data)  # no 2018 certificate attached
    with pytest.raises(AttestationError) as e:
        kinds.get("tdx").verify(item, VerifyContext(now=v.now, collateral=source))
    assert e.value.code == "certificate-not-yet-valid"


def test_pck_expired_long_after(intel: Path, tcb_signing_2018: bytes) -> None:
    with pytest.raises(AttestationError) as e:
        verify(intel, "azure_tdx", tcb_signing_2018, now=at("2031-01-01T00:00:00"))
    assert e.value.code == "certificate-expired"


# --- collateral that does not belong to the quote ------------------------------------------


@pytest.mark.parametrize(
    ("quote", "collateral", "code"),
    [
        (
            "tdx_v4_phala/quote.bin",
            "tdx_v5_phala_tcb_unmatched/collateral.json",
            "tdx-fmspc-mismatch",
        ),
        ("tdx_v4_phala/quote.bin", "sgx_v3_phala/collateral.json", "tdx-collateral-mismatch"),
        ("sgx_v3_phala/quote.bin", "tdx_v4_phala/collateral.json", "tdx-collateral-mismatch"),
    ],
)
def test_collateral_for_another_platform(
    intel: Path, quote: str, collateral: str, code: str
) -> None:
    """Collateral for another FMSPC or TEE is "collateral unavailable", not "not
    authentic" (the quote is fine; the verifier lacks its collateral)."""
    data = (intel / quote).read_bytes()
    kind = "sgx" if quote.startswith("sgx") else "tdx"
    item = EvidenceItem(kind, data, {"collateral": (intel / collateral).read_bytes()})
    when = at("2025-07-01T00:00:00") if "v5" not in collateral else at("2026-03-01T00:00:00")
    with pytest.raises(UnavailableError) as e:
        kinds.get(kind).verify(item, VerifyContext(now=when))
    assert e.value.code == code


def test_pck_crl_of_the_other_ca_is_rejected(intel: Path) -> None:
    """An SGX quote (Processor CA) given the Platform CA's CRL."""
    import json

    coll = json.loads((intel / "sgx_v3_phala" / "collateral.json").read_text())
    other = json.loads((intel / "tdx_v4_phala" / "collateral.json").read_text())
    coll["pck_crl"] = other["pck_crl"]
    item = EvidenceItem(
        "sgx",
        (intel / "sgx_v3_phala" / "quote.bin").read_bytes(),
        {"collateral": json.dumps(coll).encode()},
    )
    with pytest.raises(AttestationError) as e:
        kinds.get("sgx").verify(item, VerifyContext(now=PINNED["sgx_v3_phala"]))
    assert e.value.code == "tdx-crl-mismatch"


# --- flipped bytes in a real quote ----------------------------------------------------------


def _flip(data: bytes, off: int) -> bytes:
    return data[:off] + bytes([data[off] ^ 0x01]) + data[off + 1 :]


# offsets in tdx_v4_phala/quote.bin (v4: header 48, body 584, sig len 4 at 0x278)
_SIG = 0x278 + 4  # signature data
_QE = _SIG + 64 + 64 + 6  # QE report inside the type-6 certification data
FLIPS = {
    "header_user_data": (0x1C, "tdx-quote-signature-invalid"),
    "body_tee_tcb_svn": (48 + 0x000, "tdx-quote-signature-invalid"),
    "body_mrtd": (48 + 0x088, "tdx-quote-signature-invalid"),
    "body_td_attributes_debug": (48 + 0x078, "tdx-quote-signature-invalid"),
    "body_rtmr2": (48 + 0x1A8 + 7, "tdx-quote-signature-invalid"),
    "body_report_data_last": (48 + 0x247, "tdx-quote-signature-invalid"),
    "quote_signature_r": (_SIG + 3, "tdx-quote-signature-invalid"),
    "quote_signature_s": (_SIG + 63, "tdx-quote-signature-invalid"),
    "attestation_key": (_SIG + 64 + 10, "tdx-qe-binding-invalid"),
    "qe_report_cpusvn": (_QE + 0x00, "tdx-qe-report-signature-invalid"),
    "qe_report_mrenclave": (_QE + 0x40, "tdx-qe-report-signature-invalid"),
    "qe_report_isvsvn": (_QE + 0x102, "tdx-qe-report-signature-invalid"),
    "qe_report_report_data": (_QE + 0x140, "tdx-qe-report-signature-invalid"),
    "qe_report_signature": (_QE + 384 + 5, "tdx-qe-report-signature-invalid"),
    "qe_auth_data": (_QE + 384 + 64 + 2 + 4, "tdx-qe-binding-invalid"),
}


@pytest.mark.parametrize("where", list(FLIPS))
def test_flipped_byte_is_rejected(intel: Path, where: str) -> None:
    raw = (intel / "tdx_v4_phala" / "quote.bin").read_bytes()
    off, code = FLIPS[where]
    item = EvidenceItem(
        "tdx",
        _flip(raw, off),
        {"collateral": (intel / "tdx_v4_phala" / "collateral.json").read_bytes()},
    )
    with pytest.raises(AttestationError) as e:
        kinds.get("tdx").verify(item, VerifyContext(now=PINNED["tdx_v4_phala"]))
    assert e.value.code == code


@pytest.mark.parametrize("step", [101, 997])
def test_flipped_bytes_across_the_signed_quote(intel: Path, step: int) -> None:
    """Sampled positions over header, body and signature data all fail verification.

    The one exception is whitespace inside the PEM text of the PCK chain: no signature
    covers the PEM encoding, only the certificates it encodes; a newline flipped into
    another whitespace character decodes to the same certificates, so the verdict stands.
    """
    raw = (intel / "tdx_v4_phala" / "quote.bin").read_bytes()[:-70]
    pem_chain = Quote.from_bytes(raw).signature_data.qe.pck_cert_data.data
    for off in range(0, len(raw), step):
        flipped = _flip(raw, off)
        try:
            kinds.get("tdx").verify(
                EvidenceItem("tdx", flipped), VerifyContext(now=PINNED["tdx_v4_phala"])
            )
        except (AttestationError, MalformedEvidenceError):
            continue
        assert raw[off : off + 1].isspace(), f"flip at {off:#x} was accepted"
        after = Quote.from_bytes(flipped).signature_data.qe.pck_cert_data.data
        assert load_certificates(after) == load_certificates(pem_chain)


def test_flipped_byte_in_collateral_signature(intel: Path) -> None:
    import json

    coll = json.loads((intel / "tdx_v4_phala" / "collateral.json").read_text())
    sig = bytearray(bytes.fromhex(coll["tcb_info_signature"]))
    sig[10] ^= 1
    coll["tcb_info_signature"] = sig.hex()
    item = EvidenceItem(
        "tdx",
        (intel / "tdx_v4_phala" / "quote.bin").read_bytes(),
        {"collateral": json.dumps(coll).encode()},
    )
    with pytest.raises(AttestationError) as e:
        kinds.get("tdx").verify(item, VerifyContext(now=PINNED["tdx_v4_phala"]))
    assert e.value.code == "tdx-collateral-signature-invalid"


def test_edited_tcb_info_breaks_its_signature(intel: Path) -> None:
    """The signature covers the exact JSON text: re-serialising or editing it fails."""
    import json

    coll = json.loads((intel / "tdx_v4_phala" / "collateral.json").read_text())
    coll["tcb_info"] = coll["tcb_info"].replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"')
    item = EvidenceItem(
        "tdx",
        (intel / "tdx_v4_phala" / "quote.bin").read_bytes(),
        {"collateral": json.dumps(coll).encode()},
    )
    with pytest.raises(AttestationError) as e:
        kinds.get("tdx").verify(item, VerifyContext(now=PINNED["tdx_v4_phala"]))
    assert e.value.code == "tdx-collateral-signature-invalid"


# --- the default policy and README verdicts ------------------------------------------------


def _appraise(
    intel: Path, tcb_signing_2018: bytes, name: str, section: dict[str, object]
) -> list[str]:
    v = VECS[name]
    item, source = build(intel.parent, v, tcb_signing_2018)
    policy = Policy.from_dict({"version": 1, v.kind: section})
    result = verify_and_appraise(
        EvidenceBundle.single(item), policy, VerifyContext(now=v.now, collateral=source)
    )
    return [r.field for r in result.failures()]


NO_COLLATERAL = {"require_collateral": False, "require_crl": False}


@pytest.mark.parametrize(
    ("name", "section", "failed"),
    [
        ("tdx_v4_phala", {}, []),
        ("sgx_v3_phala", {}, ["tcb_status"]),
        (
            "sgx_v3_phala",
            {
                "accepted_tcb_statuses": ["UpToDate", "ConfigurationAndSWHardeningNeeded"],
                "allowed_advisory_ids": ["INTEL-SA-00289", "INTEL-SA-00615"],
            },
            [],
        ),
        (
            "sgx_v3_phala",
            {
                "accepted_tcb_statuses": ["ConfigurationAndSWHardeningNeeded"],
                "allowed_advisory_ids": ["INTEL-SA-00615"],
            },
            ["advisory_ids"],
        ),
        # No TCB level matches: no accepted-status list can accept it.
        (
            "tdx_v5_phala_tcb_unmatched",
            {
                "accepted_tcb_statuses": [
                    "UpToDate",
                    "SWHardeningNeeded",
                    "ConfigurationNeeded",
                    "ConfigurationAndSWHardeningNeeded",
                    "OutOfDate",
                    "OutOfDateConfigurationNeeded",
                ]
            },
            ["tcb_status"],
        ),
        # TD_ATTRIBUTES 0x40000000 (PKS only): SEPT_VE_DISABLE is required by default.
        ("tdx_v4_gotdx_spr", {}, ["tcb_status", "TD_ATTRIBUTES.SEPT_VE_DISABLE"]),
        ("tdx_v4_gotdx_spr", {"require_sept_ve_disable": False}, ["tcb_status"]),
        ("tdx_v5_gotdx", {}, ["collateral", "crl_checked"]),
        ("trustee_fmspc00a06d080000", {}, ["tcb_status", "crl_checked"]),
        (
            "trustee_fmspc00a06d080000",
            {"accepted_tcb_statuses": ["OutOfDate"], "require_crl": False},
            [],
        ),
        # Debug TD: rejected by the default policy, accepted only with allow_debug.
        (
            "trustee_debug_td",
            {},
            ["tcb_status", "collateral", "crl_checked", "TD_ATTRIBUTES.DEBUG"],
        ),
        ("trustee_debug_td", NO_COLLATERAL, ["TD_ATTRIBUTES.DEBUG"]),
        ("trustee_debug_td", {**NO_COLLATERAL, "allow_debug": True}, []),
        # TD 1.5 quote with a bound service TD.
        ("trustee_v5", NO_COLLATERAL, ["MRSERVICETD"]),
        ("trustee_v5", {**NO_COLLATERAL, "allow_service_td": True}, []),
        ("trustee_sgx_debug", NO_COLLATERAL, ["ATTRIBUTES.DEBUG"]),
        ("trustee_sgx_debug", {**NO_COLLATERAL, "allow_debug": True}, []),
        # Azure: only the quote and its PCK chain; the policy decides. Azure's paravisor
        # TD runs with SEPT_VE_DISABLE clear: a plain tdx policy must relax it by name
        # (the az-tdx-vtpm section does so by default, see test_azure.py).
        (
            "azure_tdx",
            {},
            ["tcb_status", "collateral", "crl_checked", "TD_ATTRIBUTES.SEPT_VE_DISABLE"],
        ),
        ("azure_tdx", NO_COLLATERAL, ["TD_ATTRIBUTES.SEPT_VE_DISABLE"]),
        ("azure_tdx", {**NO_COLLATERAL, "require_sept_ve_disable": False}, []),
    ],
)
def test_policy_verdicts(
    intel: Path,
    tcb_signing_2018: bytes,
    name: str,
    section: dict[str, object],
    failed: list[str],
) -> None:
    assert _appraise(intel, tcb_signing_2018, name, section) == failed


def test_measurement_rules_name_field_got_want(intel: Path, tcb_signing_2018: bytes) -> None:
    v = VECS["tdx_v4_phala"]
    item, _ = build(intel.parent, v, tcb_signing_2018)
    policy = Policy.from_dict(
        {"version": 1, "tdx": {"mrtd": ["00" * 48], "xfam": "e702060000000000"}}
    )
    result = verify_and_appraise(EvidenceBundle.single(item), policy, VerifyContext(now=v.now))
    fails = result.failures()
    assert [r.field for r in fails] == ["MRTD"]
    assert fails[0].got.startswith("91eb2b44")
    assert "0000" in fails[0].want


# --- kinds: sniff, load, inspect ------------------------------------------------------------


def test_sniff_and_load_raw_and_hex(intel: Path) -> None:
    raw = (intel / "tdx_v4_phala" / "quote.bin").read_bytes()
    for data in (raw, raw.hex().encode(), raw.hex().upper().encode() + b"\n"):
        k = kinds.sniff(data)
        assert k.name == "tdx"
        assert k.load(data).items[0].data == raw
    sgx = (intel / "sgx_v3_phala" / "quote.bin").read_bytes()
    assert kinds.sniff(sgx).name == "sgx"
    assert not kinds.get("tdx").sniff(sgx)
    assert not kinds.get("sgx").sniff(raw)
    assert not kinds.get("tdx").sniff((intel / "tdx_v4_phala" / "collateral.json").read_bytes())


def test_kind_mismatch_is_malformed(intel: Path) -> None:
    sgx = (intel / "sgx_v3_phala" / "quote.bin").read_bytes()
    with pytest.raises(MalformedEvidenceError):
        kinds.get("tdx").verify(EvidenceItem("tdx", sgx), VerifyContext(now=PINNED["trustee"]))
    with pytest.raises(MalformedEvidenceError):
        kinds.get("tdx").load(sgx)


def test_inspect_parses_without_judging(intel: Path) -> None:
    raw = (intel / "tdx_v4_phala" / "quote.bin").read_bytes()
    c = kinds.get("tdx").inspect(EvidenceItem("tdx", _flip(raw, 48 + 0x088)))
    assert isinstance(c, TdxClaims)
    assert not c.verified
    assert c.tcb_status is UNKNOWN
    assert c.fmspc == bytes.fromhex("b0c06f000000")
    assert c.to_dict()["mr_td"].startswith("90eb2b44")  # the flipped byte, unjudged


def test_claims_are_json_ready(intel: Path, tcb_signing_2018: bytes) -> None:
    d = verify(intel, "sgx_v3_phala", tcb_signing_2018).to_dict()
    assert d["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert d["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert d["fmspc"] == "00a067110000"
    assert isinstance(d["collateral_expiry"], str)


def test_starter_policies_load() -> None:
    import yaml

    for name in ("tdx", "sgx"):
        section = yaml.safe_load(kinds.get(name).starter_policy())
        Policy.from_dict({"version": 1, name: section})


def test_pinned_times_are_inside_windows() -> None:
    # Guards the table above: a day later than the pin still verifies for the long windows.
    assert PINNED["tdx_v4_phala"] + timedelta(days=1) < at("2025-07-19T10:00:35")
