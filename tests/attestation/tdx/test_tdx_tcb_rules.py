"""The TDX rules of issue 8 section 2 (ADR 0022), each with a test named after its defect.

Real vectors where a real quote shows the case (SEPT_VE_DISABLE clear, collateral for
another FMSPC); the fake Intel PKI (sealroom.testing.fake_intel) where no public quote or
signed collateral does (reserved attribute bits, module versions without identity, the
TD 1.5 relaunch advice, an unsupported tcbType): Intel-signed JSON cannot be edited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tdx.abi import TD_ATTR_DEFINED, TD_ATTR_SEPT_VE_DISABLE
from sealroom.attestation.tdx.claims import TdxClaims
from sealroom.attestation.tdx.policy import AcceptableStatus
from sealroom.attestation.tdx.tcb import TcbStatus
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import MalformedEvidenceError, UnavailableError
from sealroom.testing.fake_intel import FakeIntelPki

from ...cli.test_attest_cli import sealroom as run_sealroom
from ._helpers import PINNED

NOW = datetime(2026, 1, 15, tzinfo=UTC)
SEPT = TD_ATTR_SEPT_VE_DISABLE


@pytest.fixture(scope="module")
def pki() -> FakeIntelPki:
    return FakeIntelPki(NOW)


def _ctx(pki: FakeIntelPki) -> VerifyContext:
    return VerifyContext(now=NOW, extra_roots=(pki.root.cert,))


def _claims(pki: FakeIntelPki, quote: bytes, collateral: bytes | None = None) -> TdxClaims:
    item = EvidenceItem("tdx", quote, {"collateral": collateral or pki.collateral()})
    c = kinds.get("tdx").verify(item, _ctx(pki))
    assert isinstance(c, TdxClaims)
    return c


def _fails(
    pki: FakeIntelPki, quote: bytes, section: dict[str, Any], collateral: bytes | None = None
) -> list[str]:
    item = EvidenceItem("tdx", quote, {"collateral": collateral or pki.collateral()})
    policy = Policy.from_dict({"version": 1, "allow_simulated": True, "tdx": section})
    result = verify_and_appraise(EvidenceBundle.single(item), policy, _ctx(pki))
    return [r.field for r in result.failures()]


def _attrs(pki: FakeIntelPki, bits: int, **body: Any) -> bytes:
    return pki.quote(pki.td_body(td_attributes=bits.to_bytes(8, "little"), **body))


# every boolean knob of the tdx section turned to its permissive side
PERMISSIVE = {
    "allow_debug": True,
    "allow_migratable": True,
    "allow_service_td": True,
    "require_sept_ve_disable": False,
}


# --- TD_ATTRIBUTES --------------------------------------------------------------------------


@pytest.mark.parametrize("bit", [1, 3, 7, 8, 15, 17, 26, 32, 48, 61])
def test_reserved_td_attribute_bit_rejected(pki: FakeIntelPki, bit: int) -> None:
    """A bit the TDX module ABI reserves fails every policy, however permissive."""
    assert not (1 << bit) & TD_ATTR_DEFINED
    q = _attrs(pki, SEPT | (1 << bit))
    assert _fails(pki, q, {}) == ["TD_ATTRIBUTES.reserved"]
    assert _fails(pki, q, PERMISSIVE) == ["TD_ATTRIBUTES.reserved"]
    item = EvidenceItem("tdx", q, {"collateral": pki.collateral()})
    policy = Policy.from_dict({"version": 1, "allow_simulated": True, "tdx": {}})
    [rule] = verify_and_appraise(EvidenceBundle.single(item), policy, _ctx(pki)).failures()
    assert rule.got == f"{1 << bit:016x}"


@pytest.mark.parametrize(
    "bit", [16, 27, 30, 31, 62, 63]
)  # ICSSD, LASS, PKS, KL, TPA, PERFMON: defined, not reserved
def test_defined_td_attribute_bits_are_not_reserved(pki: FakeIntelPki, bit: int) -> None:
    assert _fails(pki, _attrs(pki, SEPT | (1 << bit)), {}) == []


def test_real_td_attributes_have_no_reserved_bits(intel: Path) -> None:
    for rel in (
        "tdx_v4_phala/quote.bin",
        "tdx_v5_phala_tcb_unmatched/quote.bin",
        "tdx_v4_gotdx_spr/quote_with_trailing_text.bin",
        "tdx_v5_gotdx/quote.bin",
        "trustee/tdx_v4_debug_td_quote.bin",
        "trustee/tdx_v5_quote.bin",
        "trustee/tdx_v4_quote_fmspc00a06d080000.bin",
    ):
        c = kinds.get("tdx").inspect(EvidenceItem("tdx", (intel / rel).read_bytes()))
        assert isinstance(c, TdxClaims)
        assert int.from_bytes(c.td_attributes, "little") & ~TD_ATTR_DEFINED == 0, rel


def test_sept_ve_disable_required_by_default(intel: Path, vtpm: Path) -> None:
    """Real quotes with SEPT_VE_DISABLE clear (Azure's paravisor TD, go-tdx-guest's SPR
    TD) fail the default tdx policy on that rule; the named knob relaxes it."""
    no_coll = {"require_collateral": False, "require_crl": False, "allow_service_td": True}
    for path, now in (
        (vtpm / "azure_tdx" / "td_quote.bin", PINNED["azure_tdx"]),
        (intel / "tdx_v4_gotdx_spr" / "quote_with_trailing_text.bin", PINNED["tdx_v4_gotdx_spr"]),
    ):
        item = EvidenceItem("tdx", path.read_bytes())
        for section, want in (
            (no_coll, ["TD_ATTRIBUTES.SEPT_VE_DISABLE"]),
            ({**no_coll, "require_sept_ve_disable": False}, []),
        ):
            policy = Policy.from_dict({"version": 1, "tdx": section})
            result = verify_and_appraise(
                EvidenceBundle.single(item), policy, VerifyContext(now=now)
            )
            got = [r.field for r in result.failures()]
            # go-tdx-guest's collateral is not attached here: its TCB is "unknown".
            assert got == want, path
    # ... and the starter policy says so.
    assert "require_sept_ve_disable: true" in kinds.get("tdx").starter_policy()


def test_sept_ve_disable_required_on_fake_evidence(pki: FakeIntelPki) -> None:
    q = _attrs(pki, 0)
    assert _fails(pki, q, {}) == ["TD_ATTRIBUTES.SEPT_VE_DISABLE"]
    assert _fails(pki, q, {"require_sept_ve_disable": False}) == []


def test_migratable_td_rejected_by_default(pki: FakeIntelPki) -> None:
    q = _attrs(pki, SEPT | (1 << 29))
    assert _fails(pki, q, {}) == ["TD_ATTRIBUTES.MIGRATABLE"]
    assert _fails(pki, q, {"allow_migratable": True}) == []


@pytest.mark.parametrize("bit", [4, 5, 6])  # HGS_PLUS_PROF, PERF_PROF, PMT_PROF
def test_tud_profiling_bit_rejected_unless_debug_allowed(pki: FakeIntelPki, bit: int) -> None:
    q = _attrs(pki, SEPT | (1 << bit))
    assert _fails(pki, q, {}) == ["TD_ATTRIBUTES.TUD"]
    assert _fails(pki, q, {"allow_debug": True}) == []


# --- TDX module identity --------------------------------------------------------------------


def _identity(id_: str, levels: list[tuple[int, str]]) -> dict[str, Any]:
    return {
        "id": id_,
        "mrsigner": "00" * 48,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [
            {"tcb": {"isvsvn": svn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": st}
            for svn, st in levels
        ],
    }


def _collateral(pki: FakeIntelPki, info: dict[str, Any], **kw: Any) -> bytes:
    return pki.collateral(tcb_info=info, **kw)


def test_module_version_without_identity_is_tdx_module_mismatch(pki: FakeIntelPki) -> None:
    """TEE_TCB_SVN[1] = 1 (module TDX_01). Before: TCB info without
    ``tdxModuleIdentities`` left the module to ``tdxModule`` alone, whose MRSIGNER matched,
    and the quote came out UpToDate. QVL: TDX_MODULE_MISMATCH."""
    quote = pki.quote()  # TEE_TCB_SVN 05 01 02
    no_list = pki.tcb_info()
    del no_list["tdxModuleIdentities"]
    other_only = pki.tcb_info(module_identities=[_identity("TDX_03", [(3, "UpToDate")])])
    for info in (no_list, other_only):
        c = _claims(pki, quote, _collateral(pki, info))
        assert c.tcb_status is TcbStatus.TDX_MODULE_MISMATCH, c.tcb_detail
        assert c.tdx_module_status is TcbStatus.TDX_MODULE_MISMATCH
        assert "TDX_01" in c.tcb_detail
        assert c.advisory_ids == ()
        # No policy can accept it.
        every = list(get_args(AcceptableStatus))
        assert _fails(pki, quote, {"accepted_tcb_statuses": every}, _collateral(pki, info)) == [
            "tcb_status"
        ]
    with pytest.raises(Exception, match="accepted_tcb_statuses"):
        Policy.from_dict({"version": 1, "tdx": {"accepted_tcb_statuses": ["TdxModuleMismatch"]}})


def test_module_version_zero_needs_no_identity(pki: FakeIntelPki) -> None:
    """TEE_TCB_SVN[1] = 0: the module is judged by ``tdxModule`` alone (as QVL does)."""
    info = pki.tcb_info(levels=[pki.tcb_level(tdx_components=(5, 0, 2) + (0,) * 13)])
    del info["tdxModuleIdentities"]
    body = pki.td_body(tee_tcb_svn=bytes([5, 0, 2]) + bytes(13))
    c = _claims(pki, pki.quote(body), _collateral(pki, info))
    assert c.tcb_status is TcbStatus.UP_TO_DATE
    assert c.tdx_module_status is None


def test_module_identity_mismatch_wins_over_no_matching_level(pki: FakeIntelPki) -> None:
    """QVL checks the module identity (4.1.2.4.11) before the TCB levels (4.1.2.4.17)."""
    higher = tuple(c + 1 for c in pki.platform.components)
    info = pki.tcb_info(
        levels=[pki.tcb_level(components=higher)],
        module_identities=[_identity("TDX_03", [(3, "UpToDate")])],
    )
    c = _claims(pki, pki.quote(), _collateral(pki, info))
    assert c.tcb_status is TcbStatus.TDX_MODULE_MISMATCH


# --- TD 1.5 relaunch advice -----------------------------------------------------------------

NEWEST_TDX = (9, 9, 3) + (0,) * 13  # components 0-1 are the module's (version > 0)
OLDER_TDX = (9, 9, 2) + (0,) * 13


def _relaunch_evidence(
    pki: FakeIntelPki,
    *,
    svn: tuple[int, int, int] = (2, 1, 2),
    svn2: tuple[int, int, int] | None = (6, 1, 3),
    newest: str = "UpToDate",
    older: str = "OutOfDate",
    qe: str = "UpToDate",
    version: int = 5,
) -> tuple[bytes, bytes]:
    """Platform at the newest SGX level but, with TEE_TCB_SVN[2] = 2, only at the older TDX
    level (OutOfDate); module TDX_01 at SVN 2 (OutOfDate, newest SVN 6); TEE_TCB_SVN2 is the
    module running now. Returns (quote, collateral)."""
    ext: dict[str, Any] = {}
    if svn2 is not None:
        ext = {"tee_tcb_svn2": bytes(svn2) + bytes(13), "mr_servicetd": bytes(48)}
    body = pki.td_body(tee_tcb_svn=bytes(svn) + bytes(13), **ext)
    info = pki.tcb_info(
        levels=[
            pki.tcb_level(newest, tdx_components=NEWEST_TDX),
            pki.tcb_level(older, tdx_components=OLDER_TDX, advisories=("INTEL-SA-00837",)),
        ],
        module_identities=[_identity("TDX_01", [(6, "UpToDate"), (2, "OutOfDate")])],
    )
    qe_id = pki.qe_identity(isvsvn_levels=[(9, "UpToDate"), (4, qe)])
    return pki.quote(body, version=version), pki.collateral(tcb_info=info, qe_identity=qe_id)


def _relaunch_case(pki: FakeIntelPki, **kw: Any) -> TdxClaims:
    return _claims(pki, *_relaunch_evidence(pki, **kw))


def test_td_relaunch_advised(pki: FakeIntelPki) -> None:
    """The TD was launched on module SVN 2 (OutOfDate); after a TD-preserving update the
    module now running (TEE_TCB_SVN2 06 01 03) is the newest: Intel advises a relaunch."""
    c = _relaunch_case(pki)
    assert c.platform_tcb_status is TcbStatus.OUT_OF_DATE
    assert c.tdx_module_status is TcbStatus.OUT_OF_DATE
    assert c.tcb_status is TcbStatus.TD_RELAUNCH_ADVISED, c.tcb_detail
    assert "relaunch" in c.tcb_detail
    assert c.advisory_ids == ("INTEL-SA-00837",)
    # Not acceptable by default; a policy can list it.
    quote, coll = _relaunch_evidence(pki)
    assert _fails(pki, quote, {}, coll) == ["tcb_status"]
    assert _fails(pki, quote, {"accepted_tcb_statuses": ["TDRelaunchAdvised"]}, coll) == []


def test_td_relaunch_advised_configuration_needed(pki: FakeIntelPki) -> None:
    c = _relaunch_case(pki, newest="ConfigurationNeeded", older="OutOfDateConfigurationNeeded")
    assert c.tcb_status is TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED


def test_td_relaunch_module_version_zero_compares_newest_level(pki: FakeIntelPki) -> None:
    """TEE_TCB_SVN2[1] = 0: TEE_TCB_SVN2[0] is compared with the newest TDX level's
    component 0 (9 here) instead of a module identity."""
    assert _relaunch_case(pki, svn2=(9, 0, 3)).tcb_status is TcbStatus.TD_RELAUNCH_ADVISED
    assert _relaunch_case(pki, svn2=(8, 0, 3)).tcb_status is TcbStatus.OUT_OF_DATE


@pytest.mark.parametrize(
    ("case", "kw", "want"),
    [
        ("running_module_not_newest", {"svn2": (5, 1, 3)}, TcbStatus.OUT_OF_DATE),
        ("tdx_component_2_not_newest", {"svn2": (6, 1, 2)}, TcbStatus.OUT_OF_DATE),
        ("qe_out_of_date", {"qe": "OutOfDate"}, TcbStatus.OUT_OF_DATE),
        ("qe_revoked", {"qe": "Revoked"}, TcbStatus.REVOKED),
        ("sgx_level_out_of_date", {"newest": "OutOfDate"}, TcbStatus.OUT_OF_DATE),
        ("module_up_to_date", {"svn": (6, 1, 2)}, TcbStatus.OUT_OF_DATE),
        ("td_1_0_body", {"svn2": None, "version": 4}, TcbStatus.OUT_OF_DATE),
        (
            "running_module_without_identity",
            {"svn2": (6, 3, 3)},
            TcbStatus.TDX_MODULE_MISMATCH,
        ),
        ("tdx_level_revoked", {"older": "Revoked"}, TcbStatus.REVOKED),
    ],
)
def test_td_relaunch_not_advised(
    pki: FakeIntelPki, case: str, kw: dict[str, Any], want: TcbStatus
) -> None:
    """Each of QVL's conditions, broken alone, leaves the status as it was."""
    c = _relaunch_case(pki, **kw)
    assert c.tcb_status is want, (case, c.tcb_detail)


# --- tcbType --------------------------------------------------------------------------------


@pytest.mark.parametrize("tcb_type", [1, 42, None])
def test_tcb_type_unsupported_rejected(pki: FakeIntelPki, tcb_type: int | None) -> None:
    """Only tcbType 0 is defined; another value (or none: v2 and v3 always carry it) would
    change how components compare. Before: any value, or none, was read as 0."""
    info = pki.tcb_info()
    if tcb_type is None:
        del info["tcbType"]
    else:
        info["tcbType"] = tcb_type
    with pytest.raises(MalformedEvidenceError) as e:
        _claims(pki, pki.quote(), _collateral(pki, info))
    want = "tdx-tcb-type-unsupported" if tcb_type is not None else "tdx-collateral-malformed"
    assert e.value.code == want
    assert "tcbType" in str(e.value)


# --- collateral for another FMSPC -----------------------------------------------------------


def test_collateral_other_fmspc_is_unavailable(intel: Path, tmp_path: Path) -> None:
    """The Phala v4 quote (FMSPC b0c06f000000) with the Phala v5 collateral (FMSPC
    90c06f000000): authentic Intel collateral about another platform. Before: "not
    authentic" (AttestationError, exit 2); now collateral unavailable (exit 3)."""
    quote = intel / "tdx_v4_phala" / "quote.bin"
    other = intel / "tdx_v5_phala_tcb_unmatched" / "collateral.json"
    item = EvidenceItem("tdx", quote.read_bytes(), {"collateral": other.read_bytes()})
    with pytest.raises(UnavailableError) as e:
        kinds.get("tdx").verify(item, VerifyContext(now=PINNED["tdx_v4_phala"]))
    assert e.value.code == "tdx-fmspc-mismatch"
    assert "b0c06f000000" in str(e.value)
    policy = tmp_path / "tdx.yaml"
    r = run_sealroom(
        "attest", "policy", "init", "--kind", "tdx", "--out", str(policy), home=tmp_path / "h"
    )
    assert r.returncode == 0, r.stderr
    r = run_sealroom(
        "attest", "verify", str(quote), "--collateral", str(other), "--policy", str(policy),
        "--now", "2025-07-01T00:00:00Z", home=tmp_path / "h",
    )  # fmt: skip
    assert r.returncode == 3, r.stdout + r.stderr
    assert "FMSPC" in r.stderr


def test_collateral_other_fmspc_on_fake_pki_is_unavailable(pki: FakeIntelPki) -> None:
    with pytest.raises(UnavailableError) as e:
        _claims(pki, pki.quote(), _collateral(pki, pki.tcb_info(fmspc=bytes(6))))
    assert e.value.code == "tdx-fmspc-mismatch"
    with pytest.raises(UnavailableError) as e:
        _claims(pki, pki.quote(), _collateral(pki, pki.tcb_info(tdx=False)))
    assert e.value.code == "tdx-collateral-mismatch"


@pytest.mark.parametrize(
    ("levels", "needle"),
    [
        ([], "is empty"),
        ([(6, "ConfigurationNeeded")], "not a TDX module status"),
        ([(6, "SWHardeningNeeded")], "not a TDX module status"),
    ],
)
def test_module_identity_levels_malformed_rejected(
    pki: FakeIntelPki, levels: list[tuple[int, str]], needle: str
) -> None:
    """QVL's parser: a module identity lists at least one level, each UpToDate, OutOfDate
    or Revoked. Before: another status was folded in as if it were a platform status, and
    an empty list leaves the relaunch rule no newest module level."""
    info = pki.tcb_info(module_identities=[_identity("TDX_01", levels)])
    with pytest.raises(MalformedEvidenceError, match=needle):
        _claims(pki, pki.quote(), _collateral(pki, info))
