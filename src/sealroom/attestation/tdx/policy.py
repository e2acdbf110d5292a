"""The ``tdx`` and ``sgx`` policy sections and their (pure) appraisal.

Defaults are the safe choice: debug TDs/enclaves are rejected, so are TDs without
SEPT_VE_DISABLE and migratable TDs; reserved TD_ATTRIBUTES bits are rejected by every
policy; only ``UpToDate`` TCB is accepted, collateral (TCB info and QE identity) and both
CRLs are required. Evidence verified without collateral (``tcb_status`` "unknown")
passes only a policy that says ``require_collateral: false`` (and ``require_crl: false``)
on purpose.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from sealroom.attestation.appraise import RuleResult, Rules, Trust
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import HexBytes, ReportDataPolicy, Section, check_report_data
from sealroom.attestation.tdx.abi import TdAttributes
from sealroom.attestation.tdx.claims import DcapClaims, SgxClaims, TdxClaims
from sealroom.attestation.tdx.tcb import TcbStatus


def _size(n: int, pad: bool = False) -> AfterValidator:
    def check(v: bytes) -> bytes:
        if pad and len(v) <= n:
            return v + bytes(n - len(v))
        if len(v) != n:
            raise ValueError(f"must be {n} bytes ({2 * n} hex digits), got {len(v)}")
        return v

    return AfterValidator(check)


Hex48 = Annotated[HexBytes, _size(48)]
# MRCONFIGID/MROWNER/MROWNERCONFIG: a shorter value (a 32-byte manifest hash) is
# zero-padded to 48 bytes, as the launcher pads it.
Hex48Padded = Annotated[HexBytes, _size(48, pad=True)]
Hex32 = Annotated[HexBytes, _size(32)]
Hex16 = Annotated[HexBytes, _size(16)]
Hex8 = Annotated[HexBytes, _size(8)]

AcceptableStatus = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    # TD 1.5: the platform is current, the TD was launched on an OutOfDate TDX module.
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
]


def _up_to_date_only() -> list[AcceptableStatus]:
    return ["UpToDate"]


class _DcapCommon(Section):
    # Intel TCB statuses accepted. "Revoked" and "no TCB level matches" are never
    # acceptable; "unknown" (no collateral) is governed by require_collateral.
    accepted_tcb_statuses: list[AcceptableStatus] = Field(default_factory=_up_to_date_only)
    # null: advisory IDs are reported but not checked; a list: every advisory of the
    # matched TCB level must be in it ([] accepts none).
    allowed_advisory_ids: list[str] | None = None
    require_collateral: bool = True
    require_crl: bool = True
    # Oldest TCB info accepted, by Intel's tcbEvaluationDataNumber (it rises with each TCB
    # recovery): collateral from before a recovery rates a now-vulnerable TCB "UpToDate".
    min_tcb_evaluation_data_number: int | None = Field(default=None, ge=0)
    report_data: ReportDataPolicy = ReportDataPolicy()


class TdxPolicy(_DcapCommon):
    mrtd: list[Hex48] | None = None
    rtmr0: list[Hex48] | None = None
    rtmr1: list[Hex48] | None = None
    rtmr2: list[Hex48] | None = None
    rtmr3: list[Hex48] | None = None
    mrconfigid: list[Hex48Padded] | None = None
    mrowner: list[Hex48Padded] | None = None
    mrownerconfig: list[Hex48Padded] | None = None
    mrseam: list[Hex48] | None = None
    # TD_ATTRIBUTES.DEBUG and the TUD profiling bits (HGS+/PERF/PMT): the host can read
    # or observe the TD.
    allow_debug: bool = False
    # SEPT_VE_DISABLE clear lets the host inject #VE on pending pages (a TD whose guest
    # does not handle that safely can be attacked through it). Relax only for TDs whose
    # code is known to handle it, e.g. Azure's paravisor.
    require_sept_ve_disable: bool = True
    # A migratable TD's state can be exported to another platform by a migration TD.
    allow_migratable: bool = False
    td_attributes: Hex8 | None = None
    xfam: Hex8 | None = None
    # Component-wise minimum of TEE_TCB_SVN (16 bytes, hex).
    min_tee_tcb_svn: Hex16 | None = None
    # TD 1.5: a bound service TD (non-zero MRSERVICETD) can read the TD's state.
    allow_service_td: bool = False


class SgxPolicy(_DcapCommon):
    mrenclave: list[Hex32] | None = None
    mrsigner: list[Hex32] | None = None
    isv_prod_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    min_isv_svn: int | None = Field(default=None, ge=0, le=0xFFFF)
    allow_debug: bool = False
    allow_provision_key: bool = True


def _tcb_rules(r: Rules, c: DcapClaims, pol: _DcapCommon) -> None:
    status = c.tcb_status
    accepted = list(pol.accepted_tcb_statuses)
    if status is TcbStatus.UNKNOWN:
        r.add(
            "tcb_status",
            f"unknown ({c.tcb_detail})",
            f"one of {accepted}, or unknown with require_collateral: false",
            not pol.require_collateral,
            Trust.HARDWARE,
        )
    elif status is TcbStatus.TDX_MODULE_MISMATCH:
        r.add(
            "tcb_status",
            f"TDX module mismatch ({c.tcb_detail})",
            f"one of {accepted} (a TDX module Intel's TCB info lists)",
            False,
            Trust.HARDWARE,
        )
    elif status is TcbStatus.NO_MATCHING_LEVEL:
        r.add(
            "tcb_status",
            f"no TCB level matches ({c.tcb_detail})",
            f"one of {accepted} (a matching TCB level)",
            False,
            Trust.HARDWARE,
        )
    else:
        r.add(
            "tcb_status",
            status.value,
            f"one of {accepted}",
            status.value in accepted,
            Trust.HARDWARE,
        )
    if pol.allowed_advisory_ids is not None:
        extra = [a for a in c.advisory_ids if a not in pol.allowed_advisory_ids]
        r.add(
            "advisory_ids",
            ", ".join(c.advisory_ids) or "none",
            f"a subset of {sorted(pol.allowed_advisory_ids)}",
            not extra,
            Trust.HARDWARE,
        )
    if pol.require_collateral:
        missing = [i for i in ("tcb_info", "qe_identity") if i not in c.collateral]
        r.add(
            "collateral",
            ", ".join(c.collateral) or "none",
            "TCB info and QE identity (require_collateral)",
            not missing,
            Trust.HARDWARE,
        )
    if pol.min_tcb_evaluation_data_number is not None:
        got = c.tcb_evaluation_data_number
        r.add(
            "tcb_evaluation_data_number",
            got if got is not None else "unknown (no TCB info)",
            f">= {pol.min_tcb_evaluation_data_number}",
            got is not None and got >= pol.min_tcb_evaluation_data_number,
            Trust.HARDWARE,
        )
    if pol.require_crl:
        r.add(
            "crl_checked",
            c.crl_checked,
            "true: root CA CRL and PCK CRL applied (require_crl)",
            c.crl_checked,
            Trust.HARDWARE,
        )


def appraise_tdx(c: TdxClaims, pol: TdxPolicy, ctx: VerifyContext) -> list[RuleResult]:
    r = Rules()
    _tcb_rules(r, c, pol)
    r.one_of("MRTD", c.mr_td, pol.mrtd, Trust.EXECUTABLES)
    for i, allowed in enumerate((pol.rtmr0, pol.rtmr1, pol.rtmr2, pol.rtmr3)):
        r.one_of(f"RTMR{i}", getattr(c, f"rtmr{i}"), allowed, Trust.EXECUTABLES)
    r.one_of("MRCONFIGID", c.mr_config_id, pol.mrconfigid)
    r.one_of("MROWNER", c.mr_owner, pol.mrowner)
    r.one_of("MROWNERCONFIG", c.mr_owner_config, pol.mrownerconfig)
    r.one_of("MRSEAM", c.mr_seam, pol.mrseam, Trust.HARDWARE)
    attrs = TdAttributes(int.from_bytes(c.td_attributes, "little"))
    # Bits the TDX module ABI reserves: no policy accepts them (a genuine module never
    # sets them; a future one that does gives them a meaning this verifier cannot judge).
    r.add(
        "TD_ATTRIBUTES.reserved",
        f"{attrs.reserved:016x}",
        "0000000000000000 (reserved bits clear)",
        attrs.reserved == 0,
        Trust.RUNTIME_OPAQUE,
    )
    r.flag("TD_ATTRIBUTES.DEBUG", c.debug, pol.allow_debug, Trust.RUNTIME_OPAQUE)
    if attrs.profiling:
        r.add(
            "TD_ATTRIBUTES.TUD",
            f"{attrs.profiling:016x} (profiling)",
            "no TUD bit set (or allow_debug)",
            pol.allow_debug,
            Trust.RUNTIME_OPAQUE,
        )
    r.add(
        "TD_ATTRIBUTES.SEPT_VE_DISABLE",
        c.sept_ve_disable,
        "true" if pol.require_sept_ve_disable else "true or false (require_sept_ve_disable)",
        c.sept_ve_disable or not pol.require_sept_ve_disable,
        Trust.RUNTIME_OPAQUE,
    )
    r.flag("TD_ATTRIBUTES.MIGRATABLE", c.migratable, pol.allow_migratable, Trust.RUNTIME_OPAQUE)
    r.equal("TD_ATTRIBUTES", c.td_attributes, pol.td_attributes)
    r.equal("XFAM", c.xfam, pol.xfam)
    if pol.min_tee_tcb_svn is not None:
        want = pol.min_tee_tcb_svn
        r.add(
            "TEE_TCB_SVN",
            c.tee_tcb_svn,
            f">= {want.hex()} (each byte)",
            all(g >= w for g, w in zip(c.tee_tcb_svn, want, strict=True)),
            Trust.HARDWARE,
        )
    if c.mr_servicetd is not None:
        bound = any(c.mr_servicetd)
        r.add(
            "MRSERVICETD",
            c.mr_servicetd,
            "any (allow_service_td)" if pol.allow_service_td else "zero (no service TD bound)",
            pol.allow_service_td or not bound,
            Trust.RUNTIME_OPAQUE,
        )
    check_report_data(
        r, "REPORTDATA", c.report_data, pol.report_data, ctx.nonce, ctx.report_data_inputs
    )
    return r.results


def appraise_sgx(c: SgxClaims, pol: SgxPolicy, ctx: VerifyContext) -> list[RuleResult]:
    r = Rules()
    _tcb_rules(r, c, pol)
    r.one_of("MRENCLAVE", c.mr_enclave, pol.mrenclave, Trust.EXECUTABLES)
    r.one_of("MRSIGNER", c.mr_signer, pol.mrsigner, Trust.EXECUTABLES)
    r.equal("ISVPRODID", c.isv_prod_id, pol.isv_prod_id, Trust.EXECUTABLES)
    r.at_least("ISVSVN", c.isv_svn, pol.min_isv_svn, Trust.EXECUTABLES)
    r.flag("ATTRIBUTES.DEBUG", c.debug, pol.allow_debug, Trust.RUNTIME_OPAQUE)
    r.flag("ATTRIBUTES.PROVISIONKEY", c.provision_key, pol.allow_provision_key)
    check_report_data(
        r, "REPORTDATA", c.report_data, pol.report_data, ctx.nonce, ctx.report_data_inputs
    )
    return r.results


TDX_STARTER = """\
# Intel TDX. Measurements are hex (96 digits for 48 bytes); null = not checked.
mrtd: null                 # [<MRTD>, ...] allowed TD images (firmware + initial memory)
rtmr0: null                # [<RTMR0>, ...] firmware configuration
rtmr1: null                # kernel
rtmr2: null                # kernel command line / initrd
rtmr3: null                # runtime extensions
mrconfigid: null           # [<hex>] shorter values are zero-padded (sealroom: manifest hash)
mrowner: null
mrownerconfig: null
mrseam: null               # allowed TDX modules
allow_debug: false         # a debug (or profiled) TD's memory is readable by the host
require_sept_ve_disable: true  # false only for a TD that handles #VE itself (Azure paravisor)
allow_migratable: false    # a migratable TD can be moved off this platform
td_attributes: null        # exact TD_ATTRIBUTES, 16 hex digits
xfam: null                 # exact XFAM, 16 hex digits
min_tee_tcb_svn: null      # 32 hex digits, compared byte by byte
allow_service_td: false    # TD 1.5: reject a bound service TD (non-zero MRSERVICETD)
# Intel's verdict on the platform (TCB info, QE identity, TDX module); TD 1.5 adds
# TDRelaunchAdvised(ConfigurationNeeded): current platform, TD launched on an old module.
accepted_tcb_statuses: [UpToDate]
allowed_advisory_ids: null # null: not checked; [INTEL-SA-...]: only these
require_collateral: true   # false accepts evidence whose TCB was not evaluated
require_crl: true          # false accepts evidence whose PCK chain was not checked for revocation
min_tcb_evaluation_data_number: null  # e.g. 17: refuse TCB info from before a TCB recovery
report_data:               # REPORTDATA: any | exact | nonce | sealroom-v1
  mode: nonce              # your --nonce, zero-padded: freshness
  require_nonce: false     # without --nonce: verified, but freshness NOT checked (said so)
"""

SGX_STARTER = """\
# Intel SGX enclaves (DCAP quote v3). Hex: 64 digits for 32 bytes; null = not checked.
mrenclave: null            # [<MRENCLAVE>, ...]
mrsigner: null             # [<MRSIGNER>, ...]
isv_prod_id: null
min_isv_svn: null
allow_debug: false         # a debug enclave's memory is readable by the host
allow_provision_key: true
accepted_tcb_statuses: [UpToDate]
allowed_advisory_ids: null
require_collateral: true
require_crl: true
min_tcb_evaluation_data_number: null
report_data:               # REPORTDATA: any | exact | nonce | sealroom-v1
  mode: nonce              # your --nonce, zero-padded: freshness
  require_nonce: false     # without --nonce: verified, but freshness NOT checked (said so)
"""
