"""TCB evaluation: where a platform, its QE and its TDX module stand per Intel's collateral.

Follows Intel's "PCS API" documentation of TCB info v2/v3 and enclave identity v2 (the
sections "TCB level matching" of each), as implemented by Intel's QVL (steps 4.1.2.4.x of
its QuoteVerifier / TcbLevelCheck / TdxModuleCheck / TDRelaunchCheck); ADR 0022 has the
status mapping table.

1. Platform: TCB levels ordered from the highest (SGX components, then PCESVN, then TDX
   components, each compared lexicographically, highest first). The *SGX level* is the
   first level whose 16 SGX component SVNs are all <= the PCK certificate's and whose
   PCESVN is <= the PCK certificate's; for TDX, the *TDX level* is the first of those whose
   TDX component SVNs are also all <= TEE_TCB_SVN (when TEE_TCB_SVN[1], the TDX module
   major version, is non-zero, components 0 and 1 are left to step 3). The TDX level (SGX
   level for SGX quotes) gives the platform status and advisory IDs; either missing is
   ``NoMatchingTcbLevel`` (QVL: TCB_NOT_SUPPORTED).
2. QE: the QE report must match the QE identity (MRSIGNER, ISVPRODID, MISCSELECT and
   ATTRIBUTES under their masks; a mismatch means the quote was not made by Intel's QE
   and is an AttestationError). The first level (highest ISVSVN first) with ISVSVN <= the
   QE's gives the QE status.
3. TDX module (TCB info v3 "TDX"): MRSIGNERSEAM and SEAMATTRIBUTES (under the mask) must
   match ``tdxModule`` (an AttestationError otherwise). When TEE_TCB_SVN[1] > 0 the module
   is the ``tdxModuleIdentities`` entry ``TDX_%02X`` of that version: no such entry (or no
   list at all) is ``TdxModuleMismatch`` (QVL: TDX_MODULE_MISMATCH), never UpToDate; its
   levels (highest ISVSVN first, by TEE_TCB_SVN[0]) give the module status, none matching
   is ``NoMatchingTcbLevel``.
4. The statuses converge as Intel's QVL does: an OutOfDate module turns an
   UpToDate/SWHardeningNeeded platform into OutOfDate and a Configuration* platform into
   OutOfDateConfigurationNeeded; a Revoked module is Revoked.
5. TD 1.5 quotes (body type 3) with TDX TCB info: the *TD relaunch advice*. When the QE
   is not OutOfDate/Revoked/unmatched, the SGX level is UpToDate, SWHardeningNeeded or
   Configuration(AndSWHardening)Needed, the converged TDX status is OutOfDate(Configuration
   Needed) and the module status is OutOfDate, but TEE_TCB_SVN2 (the module running now,
   after a TD-preserving update) reaches the newest level (TEE_TCB_SVN2[0] >= the newest
   TDX level's component 0 when TEE_TCB_SVN2[1] is 0, else >= the highest ISVSVN of the
   ``TDX_%02X`` identity of TEE_TCB_SVN2[1]; and TEE_TCB_SVN2[2] >= the newest TDX
   level's component 2), the status is ``TDRelaunchAdvised`` (or
   ``TDRelaunchAdvisedConfigurationNeeded`` when the SGX or TDX status needs
   configuration): the platform is current, the TD was launched on an old module.
   No identity for TEE_TCB_SVN2[1] is ``TdxModuleMismatch``.
6. The QE status converges last: OutOfDate QE as in step 4; Revoked QE is Revoked; a QE
   below every level is ``NoMatchingTcbLevel``. Advisory IDs are the union.

"No TCB level matches" (the platform is below every level Intel lists, or no level
exists for the QE ISVSVN / module SVN) is its own outcome, ``NO_MATCHING_LEVEL``: the
evidence is authentic, its TCB is simply not one Intel supports. No policy can accept
it, nor ``TdxModuleMismatch`` (the policy lists only Intel's statuses).
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
    from sealroom.attestation.tdx.collateral import (
        QeIdentity,
        TcbInfo,
        TcbLevel,
        TdxModuleIdentity,
    )
    from sealroom.attestation.tdx.pck import PckExtension


class TcbStatus(enum.StrEnum):
    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"
    # Intel QVL results that no collateral level carries (step 5).
    TD_RELAUNCH_ADVISED = "TDRelaunchAdvised"
    TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"
    # Not acceptable outcomes of the evaluation itself.
    NO_MATCHING_LEVEL = "NoMatchingTcbLevel"
    TDX_MODULE_MISMATCH = "TdxModuleMismatch"
    UNKNOWN = "unknown"  # the collateral needed to evaluate is absent


#: The statuses a TCB level of TCB info / QE identity / module identity may carry.
INTEL_STATUSES = frozenset(
    {
        TcbStatus.UP_TO_DATE,
        TcbStatus.SW_HARDENING_NEEDED,
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        TcbStatus.OUT_OF_DATE,
        TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
        TcbStatus.REVOKED,
    }
)
#: Outcomes that end the evaluation: nothing converges into them.
_TERMINAL = (TcbStatus.NO_MATCHING_LEVEL, TcbStatus.TDX_MODULE_MISMATCH)
_CONFIG = (TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED)
# QVL isConfigurationNeeded (TDRelaunchCheck).
_NEEDS_CONFIGURATION = (
    TcbStatus.CONFIGURATION_NEEDED,
    TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
    TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
)


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
    """Fold a QE or TDX module status into the platform status (steps 4 and 6)."""
    if other is None or other.status is TcbStatus.UNKNOWN:
        return platform
    ids = _union(platform.advisory_ids, other.advisory_ids)
    p, o = platform.status, other.status
    for terminal in _TERMINAL:
        if terminal in (p, o):
            # Advisory IDs belong to a matched level; with no match there are none to report.
            detail = platform.detail if p is terminal else other.detail
            return StatusResult(terminal, (), None, detail)
    if TcbStatus.REVOKED in (p, o):
        status = TcbStatus.REVOKED
    elif o is TcbStatus.OUT_OF_DATE and p in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
        status = TcbStatus.OUT_OF_DATE
    elif o is TcbStatus.OUT_OF_DATE and p in _CONFIG:
        status = TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    else:
        status = p
    return StatusResult(status, ids, platform.tcb_date, platform.detail)


def match_levels(
    tcb_info: TcbInfo, pck: PckExtension, td: TdReportBody | None
) -> tuple[TcbLevel | None, TcbLevel | None]:
    """Step 1: (SGX level, TDX level). The TDX level is None for SGX quotes."""
    tee_svn = td.tee_tcb_svn if td is not None and tcb_info.is_tdx else None
    first_tdx = 2 if tee_svn is not None and tee_svn[1] > 0 else 0
    sgx_level: TcbLevel | None = None
    for level in tcb_info.ordered_levels:
        if any(p < lv for p, lv in zip(pck.tcb_components, level.sgx_components, strict=True)):
            continue
        if pck.pce_svn < level.pce_svn:
            continue
        if sgx_level is None:
            sgx_level = level
        if tee_svn is None:
            return sgx_level, None
        if all(tee_svn[i] >= level.tdx_components[i] for i in range(first_tdx, 16)):
            return sgx_level, level
    return sgx_level, None


def match_platform(tcb_info: TcbInfo, pck: PckExtension, td: TdReportBody | None) -> StatusResult:
    """Step 1. ``td`` is the TD quote body for TDX quotes, None for SGX."""
    sgx_level, tdx_level = match_levels(tcb_info, pck, td)
    level = sgx_level if td is None or not tcb_info.is_tdx else tdx_level
    if level is not None:
        return StatusResult(level.tcb_status, level.advisory_ids, level.tcb_date)
    tee_svn = td.tee_tcb_svn if td is not None else None
    tdx_part = f", TEE_TCB_SVN {tee_svn.hex()}" if tee_svn is not None else ""
    which = "SGX " if sgx_level is None else "TDX "
    return StatusResult(
        TcbStatus.NO_MATCHING_LEVEL,
        detail=(
            f"no TCB level of FMSPC {tcb_info.fmspc.hex()} (evaluation data number "
            f"{tcb_info.tcb_evaluation_data_number}) is at or below the platform "
            f"({which}part): PCK SGX components {list(pck.tcb_components)}, "
            f"PCESVN {pck.pce_svn}{tdx_part}"
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


def find_module_identity(tcb_info: TcbInfo, version: int) -> TdxModuleIdentity | None:
    """The ``tdxModuleIdentities`` entry ``TDX_%02X`` of a module major version (the id
    compared case-insensitively, as QVL does)."""
    wanted = f"TDX_{version:02X}"
    for ident in tcb_info.tdx_module_identities:
        if ident.id.upper() == wanted:
            return ident
    return None


def _module_mismatch(tcb_info: TcbInfo, version: int, field: str) -> StatusResult:
    known = [m.id for m in tcb_info.tdx_module_identities]
    return StatusResult(
        TcbStatus.TDX_MODULE_MISMATCH,
        detail=f"{field} is {version} (module identity TDX_{version:02X}) but the TCB info "
        f"(evaluation data number {tcb_info.tcb_evaluation_data_number}) lists "
        + (f"only module identities {known}" if known else "no tdxModuleIdentities"),
    )


def match_tdx_module(tcb_info: TcbInfo, td: TdReportBody) -> StatusResult | None:
    """Step 3. None when the module is judged by ``tdxModule`` alone (major version 0, or
    TCB info without TDX module data): then it has no status of its own."""
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
    if version > 0:
        ident = find_module_identity(tcb_info, version)
        if ident is None:
            return _module_mismatch(tcb_info, version, "TEE_TCB_SVN[1]")
        mrsigner, attributes, mask = ident.mrsigner, ident.attributes, ident.attributes_mask
        levels = ident.tcb_levels
        name = f"tdxModuleIdentities[{ident.id}]"
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


def check_relaunch(
    tcb_info: TcbInfo,
    td: TdReportBody,
    sgx_status: TcbStatus,
    tdx: StatusResult,
    module: StatusResult | None,
    qe: StatusResult,
) -> StatusResult:
    """Step 5 (QVL ``checkForRelaunch``), for TD 1.5 bodies: ``tdx`` is the TDX status
    after the module converged into it; returns it unchanged when no relaunch is advised."""
    svn2 = td.tee_tcb_svn2
    if svn2 is None or module is None or module.status is not TcbStatus.OUT_OF_DATE:
        return tdx
    if qe.status in (TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED, TcbStatus.NO_MATCHING_LEVEL):
        return tdx
    if sgx_status not in (
        TcbStatus.UP_TO_DATE,
        TcbStatus.SW_HARDENING_NEEDED,
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
    ):
        return tdx
    if tdx.status not in (TcbStatus.OUT_OF_DATE, TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED):
        return tdx
    newest = tcb_info.ordered_levels[0]
    if svn2[1] == 0:
        module_current = svn2[0] >= newest.tdx_components[0]
        reference = f"newest TDX level component 0 ({newest.tdx_components[0]})"
    else:
        ident = find_module_identity(tcb_info, svn2[1])
        if ident is None:
            return _module_mismatch(tcb_info, svn2[1], "TEE_TCB_SVN2[1]")
        top = max(lv.isvsvn for lv in ident.tcb_levels)
        module_current = svn2[0] >= top
        reference = f"the highest ISVSVN of {ident.id} ({top})"
    if not (module_current and svn2[2] >= newest.tdx_components[2]):
        return tdx
    needs_config = sgx_status in _NEEDS_CONFIGURATION or tdx.status in _NEEDS_CONFIGURATION
    status = (
        TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED
        if needs_config
        else TcbStatus.TD_RELAUNCH_ADVISED
    )
    return StatusResult(
        status,
        tdx.advisory_ids,
        tdx.tcb_date,
        f"the TD was launched on TDX module SVN {td.tee_tcb_svn[0]} (OutOfDate); the module "
        f"now running (TEE_TCB_SVN2 {svn2.hex()}) reaches {reference}: relaunch the TD",
    )


@dataclass(frozen=True)
class Evaluation:
    """Steps 1-6: the converged status and its parts."""

    status: StatusResult
    platform: StatusResult
    module: StatusResult | None


def evaluate(
    tcb_info: TcbInfo, qe: StatusResult, pck: PckExtension, td: TdReportBody | None
) -> Evaluation:
    """Steps 1-6, in QVL's order (``checkTcbLevel``)."""
    platform = match_platform(tcb_info, pck, td)
    if td is None or not tcb_info.is_tdx:
        return Evaluation(converge(platform, qe), platform, None)
    # QVL checks the module identity (4.1.2.4.11) before matching levels (4.1.2.4.17).
    module = match_tdx_module(tcb_info, td)
    if module is not None and module.status is TcbStatus.TDX_MODULE_MISMATCH:
        return Evaluation(module, platform, module)
    if platform.status is TcbStatus.NO_MATCHING_LEVEL:
        return Evaluation(platform, platform, module)
    if module is not None and module.status is TcbStatus.NO_MATCHING_LEVEL:
        return Evaluation(module, platform, module)
    tdx = converge(platform, module)
    if tdx.status is not TcbStatus.REVOKED and td.is_td15:
        sgx_level, _ = match_levels(tcb_info, pck, td)
        assert sgx_level is not None  # the TDX level is also an SGX level
        tdx = check_relaunch(tcb_info, td, sgx_level.tcb_status, tdx, module, qe)
    return Evaluation(converge(tdx, qe), platform, module)
