"""TCB evaluation: where a platform, its QE and its TDX module stand per Intel's collateral.

Follows Intel's "PCS API" documentation of TCB info v2/v3 and enclave identity v2 (the
sections "TCB level matching" of each), as implemented by Intel's QVL:

1. Platform: TCB levels ordered from the highest (SGX components, then PCESVN, then TDX
   components, each compared lexicographically, highest first). The first level whose
   16 SGX component SVNs are all <= the PCK certificate's, whose PCESVN is <= the PCK
   certificate's, and (TDX) whose TDX component SVNs are all <= TEE_TCB_SVN gives the
   platform status and advisory IDs. When TEE_TCB_SVN[1] (the TDX module major version)
   is non-zero, components 0 and 1 (module SVN and version) are left to step 3 and only
   components 2..15 are compared here.
2. QE: the QE report must match the QE identity (MRSIGNER, ISVPRODID, MISCSELECT and
   ATTRIBUTES under their masks; a mismatch means the quote was not made by Intel's QE
   and is an AttestationError). The first level (highest ISVSVN first) with ISVSVN <= the
   QE's gives the QE status.
3. TDX module (TCB info v3 "TDX"): MRSIGNERSEAM and SEAMATTRIBUTES (under the mask) must
   match ``tdxModule`` or, when TEE_TCB_SVN[1] > 0 and ``tdxModuleIdentities`` is given,
   the identity ``TDX_%02X`` of that version, whose levels (by TEE_TCB_SVN[0]) give the
   module status.
4. The statuses converge as Intel's QVL does: an OutOfDate QE or module turns an
   UpToDate/SWHardeningNeeded platform into OutOfDate and a Configuration* platform into
   OutOfDateConfigurationNeeded; Revoked anywhere is Revoked; advisory IDs are the union.

"No TCB level matches" (the platform is below every level Intel lists, or no level
exists for the QE ISVSVN / module SVN) is its own outcome, ``NO_MATCHING_LEVEL``: the
evidence is authentic, its TCB is simply not one Intel supports. No policy can accept
it (the policy lists only Intel's seven statuses).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sealroom.errors import AttestationError

if TYPE_CHECKING:
    from sealroom.attestation.tdx.abi import EnclaveReport, TdReportBody
    from sealroom.attestation.tdx.collateral import QeIdentity, TcbInfo
    from sealroom.attestation.tdx.pck import PckExtension


class TcbStatus(enum.StrEnum):
    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"
    # Not Intel statuses: outcomes of the evaluation itself.
    NO_MATCHING_LEVEL = "NoMatchingTcbLevel"
    UNKNOWN = "unknown"  # the collateral needed to evaluate is absent


INTEL_STATUSES = frozenset(
    s for s in TcbStatus if s not in (TcbStatus.NO_MATCHING_LEVEL, TcbStatus.UNKNOWN)
)
_CONFIG = (TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED)


@dataclass(frozen=True)
class StatusResult:
    status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    tcb_date: datetime | None = None
    detail: str = ""

    @staticmethod
    def unknown(detail: str) -> StatusResult:
        return StatusResult(TcbStatus.UNKNOWN, detail=detail)


def _union(*lists: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for ids in lists:
        for i in ids:
            if i not in out:
                out.append(i)
    return tuple(out)


def converge(platform: StatusResult, other: StatusResult | None) -> StatusResult:
    """Fold a QE or TDX module status into the platform status (step 4)."""
    if other is None or other.status is TcbStatus.UNKNOWN:
        return platform
    ids = _union(platform.advisory_ids, other.advisory_ids)
    p, o = platform.status, other.status
    if TcbStatus.NO_MATCHING_LEVEL in (p, o):
        # Advisory IDs belong to a matched level; with no match there are none to report.
        detail = platform.detail if p is TcbStatus.NO_MATCHING_LEVEL else other.detail
        return StatusResult(TcbStatus.NO_MATCHING_LEVEL, (), None, detail)
    if TcbStatus.REVOKED in (p, o):
        status = TcbStatus.REVOKED
    elif o is TcbStatus.OUT_OF_DATE and p in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
        status = TcbStatus.OUT_OF_DATE
    elif o is TcbStatus.OUT_OF_DATE and p in _CONFIG:
        status = TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    else:
        status = p
    return StatusResult(status, ids, platform.tcb_date, platform.detail)


def match_platform(tcb_info: TcbInfo, pck: PckExtension, td: TdReportBody | None) -> StatusResult:
    """Step 1. ``td`` is the TD quote body for TDX quotes, None for SGX."""
    tee_svn = td.tee_tcb_svn if td is not None else None
    first_tdx = 2 if tee_svn is not None and tee_svn[1] > 0 else 0
    for level in tcb_info.ordered_levels:
        if any(p < lv for p, lv in zip(pck.tcb_components, level.sgx_components, strict=True)):
            continue
        if pck.pce_svn < level.pce_svn:
            continue
        if tee_svn is not None and any(
            tee_svn[i] < level.tdx_components[i] for i in range(first_tdx, 16)
        ):
            continue
        return StatusResult(level.tcb_status, level.advisory_ids, level.tcb_date)
    tdx_part = f", TEE_TCB_SVN {tee_svn.hex()}" if tee_svn is not None else ""
    return StatusResult(
        TcbStatus.NO_MATCHING_LEVEL,
        detail=(
            f"no TCB level of FMSPC {tcb_info.fmspc.hex()} (evaluation data number "
            f"{tcb_info.tcb_evaluation_data_number}) is at or below the platform: PCK SGX "
            f"components {list(pck.tcb_components)}, PCESVN {pck.pce_svn}{tdx_part}"
        ),
    )


def _masked_eq(got: bytes, want: bytes, mask: bytes) -> bool:
    return all((g & m) == (w & m) for g, w, m in zip(got, want, mask, strict=True))


def match_qe(qe_identity: QeIdentity, qe_report: EnclaveReport) -> StatusResult:
    """Step 2. Raises AttestationError when the QE is not the one the identity describes."""

    def fail(field: str, got: str, want: str) -> AttestationError:
        return AttestationError(
            f"QE report {field} is {got}, QE identity {qe_identity.id} wants {want}: the "
            "quoting enclave is not Intel's",
            code="tdx-qe-identity-mismatch",
        )

    if qe_report.mr_signer != qe_identity.mrsigner:
        raise fail("MRSIGNER", qe_report.mr_signer.hex(), qe_identity.mrsigner.hex())
    if qe_report.isv_prod_id != qe_identity.isvprodid:
        raise fail("ISVPRODID", str(qe_report.isv_prod_id), str(qe_identity.isvprodid))
    mask = qe_identity.miscselect_mask
    if qe_report.misc_select & mask != qe_identity.miscselect & mask:
        raise fail(
            "MISCSELECT",
            f"{qe_report.misc_select:08x}",
            f"{qe_identity.miscselect:08x} under mask {mask:08x}",
        )
    if not _masked_eq(qe_report.attributes, qe_identity.attributes, qe_identity.attributes_mask):
        raise fail(
            "ATTRIBUTES",
            qe_report.attributes.hex(),
            f"{qe_identity.attributes.hex()} under mask {qe_identity.attributes_mask.hex()}",
        )
    for level in sorted(qe_identity.tcb_levels, key=lambda lv: lv.isvsvn, reverse=True):
        if qe_report.isv_svn >= level.isvsvn:
            return StatusResult(level.tcb_status, level.advisory_ids, level.tcb_date)
    return StatusResult(
        TcbStatus.NO_MATCHING_LEVEL,
        detail=f"QE ISVSVN {qe_report.isv_svn} is below every level of QE identity "
        f"{qe_identity.id}",
    )


def match_tdx_module(tcb_info: TcbInfo, td: TdReportBody) -> StatusResult | None:
    """Step 3. None when the TCB info carries no module identity levels for this module."""
    module = tcb_info.tdx_module
    if module is None:
        if tcb_info.is_tdx and tcb_info.version >= 3:
            raise AttestationError(
                "TDX TCB info v3 has no tdxModule entry", code="tdx-tcb-info-invalid"
            )
        return None
    svn, version = td.tee_tcb_svn[0], td.tee_tcb_svn[1]
    mrsigner, attributes, mask = module.mrsigner, module.attributes, module.attributes_mask
    levels = None
    name = "tdxModule"
    if version > 0 and tcb_info.tdx_module_identities:
        wanted = f"TDX_{version:02X}"
        found = [m for m in tcb_info.tdx_module_identities if m.id.upper() == wanted]
        if not found:
            return StatusResult(
                TcbStatus.NO_MATCHING_LEVEL,
                detail=f"TCB info lists no TDX module identity {wanted} (TEE_TCB_SVN[1] is "
                f"{version}); known: {[m.id for m in tcb_info.tdx_module_identities]}",
            )
        ident = found[0]
        mrsigner, attributes, mask = ident.mrsigner, ident.attributes, ident.attributes_mask
        levels = ident.tcb_levels
        name = f"tdxModuleIdentities[{wanted}]"
    if td.mr_signer_seam != mrsigner:
        raise AttestationError(
            f"MRSIGNERSEAM is {td.mr_signer_seam.hex()}, TCB info {name} wants "
            f"{mrsigner.hex()}: the TDX module is not Intel's",
            code="tdx-module-identity-mismatch",
        )
    if not _masked_eq(td.seam_attributes, attributes, mask) or any(
        a & ~m & 0xFF for a, m in zip(td.seam_attributes, mask, strict=True)
    ):
        raise AttestationError(
            f"SEAMATTRIBUTES is {td.seam_attributes.hex()}, TCB info {name} wants "
            f"{attributes.hex()} under mask {mask.hex()}",
            code="tdx-module-identity-mismatch",
        )
    if levels is None:
        return None
    for level in sorted(levels, key=lambda lv: lv.isvsvn, reverse=True):
        if svn >= level.isvsvn:
            return StatusResult(level.tcb_status, level.advisory_ids, level.tcb_date)
    return StatusResult(
        TcbStatus.NO_MATCHING_LEVEL,
        detail=f"TDX module SVN {svn} is below every level of {name}",
    )
