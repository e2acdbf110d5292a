"""Claims of Intel DCAP quotes: TDX (TD quote body) and SGX (enclave report body).

``DcapClaims`` holds what every DCAP quote says about its platform and how far it was
checked; ``TdxClaims`` and ``SgxClaims`` add the body fields. Field names follow Intel's
tables (MRTD, RTMR0, MRCONFIGID, ...) in snake case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sealroom.attestation.claims import Claims
from sealroom.attestation.tdx.abi import EnclaveReport, Quote, TdReportBody
from sealroom.attestation.tdx.pck import PckExtension
from sealroom.attestation.tdx.tcb import TcbStatus


@dataclass(frozen=True, kw_only=True)
class DcapClaims(Claims):
    quote_version: int
    tee_type: str  # "TDX" or "SGX"
    qe_svn: int  # quote header
    pce_svn_header: int  # quote header
    qe_isv_svn: int  # QE report ISVSVN
    trailing_bytes: int  # unauthenticated bytes after the signature data (ignored)
    # From the PCK certificate (None only for inspect without a parsable PCK).
    fmspc: bytes | None
    pce_id: bytes | None
    pce_svn: int | None
    cpu_svn: bytes | None
    sgx_tcb_components: tuple[int, ...] | None
    pck_issuer: str | None  # "platform" or "processor"
    root_ca: str | None  # SHA-256 fingerprint of the anchoring root
    vendor_rooted: bool
    # TCB evaluation.
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_tcb_status: TcbStatus
    qe_identity_status: TcbStatus
    tdx_module_status: TcbStatus | None
    tcb_detail: str
    tcb_date: datetime | None
    tcb_evaluation_data_number: int | None
    # What was checked.
    collateral: tuple[str, ...]  # tcb_info, qe_identity, root_ca_crl, pck_crl
    crl_checked: bool
    collateral_expiry: datetime | None  # earliest nextUpdate of the collateral used

    @property
    def collateral_complete(self) -> bool:
        return "tcb_info" in self.collateral and "qe_identity" in self.collateral


@dataclass(frozen=True, kw_only=True)
class TdxClaims(DcapClaims):
    body_type: str  # "TD1.0" or "TD1.5"
    mr_td: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    debug: bool  # TD_ATTRIBUTES.DEBUG
    sept_ve_disable: bool
    migratable: bool
    pks: bool
    kl: bool
    perfmon: bool
    xfam: bytes
    tee_tcb_svn: bytes
    tee_tcb_svn2: bytes | None
    mr_servicetd: bytes | None
    report_data: bytes


@dataclass(frozen=True, kw_only=True)
class SgxClaims(DcapClaims):
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    isv_ext_prod_id: bytes
    isv_family_id: bytes
    config_id: bytes
    config_svn: int
    misc_select: int
    attributes: bytes
    debug: bool  # ATTRIBUTES.FLAGS.DEBUG
    provision_key: bool
    mode64bit: bool
    enclave_cpu_svn: bytes
    report_data: bytes


@dataclass(frozen=True)
class CheckState:
    """How far verification went; ``inspect`` uses :meth:`parsed_only`."""

    verified: bool
    simulated: bool
    vendor_rooted: bool
    root_ca: str | None
    pck: PckExtension | None
    pck_issuer: str | None
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_tcb_status: TcbStatus
    qe_identity_status: TcbStatus
    tdx_module_status: TcbStatus | None
    tcb_detail: str
    tcb_date: datetime | None
    tcb_evaluation_data_number: int | None
    collateral: tuple[str, ...]
    crl_checked: bool
    collateral_expiry: datetime | None

    @staticmethod
    def parsed_only(pck: PckExtension | None, pck_issuer: str | None) -> CheckState:
        u = TcbStatus.UNKNOWN
        return CheckState(
            verified=False,
            simulated=False,
            vendor_rooted=False,
            root_ca=None,
            pck=pck,
            pck_issuer=pck_issuer,
            tcb_status=u,
            advisory_ids=(),
            platform_tcb_status=u,
            qe_identity_status=u,
            tdx_module_status=None,
            tcb_detail="not verified (inspect)",
            tcb_date=None,
            tcb_evaluation_data_number=None,
            collateral=(),
            crl_checked=False,
            collateral_expiry=None,
        )


def _common(quote: Quote, st: CheckState) -> dict[str, object]:
    pck = st.pck
    return {
        "simulated": st.simulated,
        "verified": st.verified,
        "quote_version": quote.version,
        "tee_type": quote.tee_type.name,
        "qe_svn": quote.header.qe_svn,
        "pce_svn_header": quote.header.pce_svn,
        "qe_isv_svn": quote.signature_data.qe.qe_report.isv_svn,
        "trailing_bytes": len(quote.trailing),
        "fmspc": pck.fmspc if pck else None,
        "pce_id": pck.pce_id if pck else None,
        "pce_svn": pck.pce_svn if pck else None,
        "cpu_svn": pck.cpu_svn if pck else None,
        "sgx_tcb_components": pck.tcb_components if pck else None,
        "pck_issuer": st.pck_issuer,
        "root_ca": st.root_ca,
        "vendor_rooted": st.vendor_rooted,
        "tcb_status": st.tcb_status,
        "advisory_ids": st.advisory_ids,
        "platform_tcb_status": st.platform_tcb_status,
        "qe_identity_status": st.qe_identity_status,
        "tdx_module_status": st.tdx_module_status,
        "tcb_detail": st.tcb_detail,
        "tcb_date": st.tcb_date,
        "tcb_evaluation_data_number": st.tcb_evaluation_data_number,
        "collateral": st.collateral,
        "crl_checked": st.crl_checked,
        "collateral_expiry": st.collateral_expiry,
    }


def tdx_claims(quote: Quote, st: CheckState) -> TdxClaims:
    b = quote.body
    assert isinstance(b, TdReportBody)
    a = b.attributes
    return TdxClaims(
        kind="tdx",
        body_type="TD1.5" if b.is_td15 else "TD1.0",
        mr_td=b.mr_td,
        rtmr0=b.rtmr0,
        rtmr1=b.rtmr1,
        rtmr2=b.rtmr2,
        rtmr3=b.rtmr3,
        mr_config_id=b.mr_config_id,
        mr_owner=b.mr_owner,
        mr_owner_config=b.mr_owner_config,
        mr_seam=b.mr_seam,
        mr_signer_seam=b.mr_signer_seam,
        seam_attributes=b.seam_attributes,
        td_attributes=b.td_attributes,
        debug=a.debug,
        sept_ve_disable=a.sept_ve_disable,
        migratable=a.migratable,
        pks=a.pks,
        kl=a.kl,
        perfmon=a.perfmon,
        xfam=b.xfam,
        tee_tcb_svn=b.tee_tcb_svn,
        tee_tcb_svn2=b.tee_tcb_svn2,
        mr_servicetd=b.mr_servicetd,
        report_data=b.report_data,
        **_common(quote, st),  # type: ignore[arg-type]
    )


def sgx_claims(quote: Quote, st: CheckState) -> SgxClaims:
    b = quote.body
    assert isinstance(b, EnclaveReport)
    return SgxClaims(
        kind="sgx",
        mr_enclave=b.mr_enclave,
        mr_signer=b.mr_signer,
        isv_prod_id=b.isv_prod_id,
        isv_svn=b.isv_svn,
        isv_ext_prod_id=b.isv_ext_prod_id,
        isv_family_id=b.isv_family_id,
        config_id=b.config_id,
        config_svn=b.config_svn,
        misc_select=b.misc_select,
        attributes=b.attributes,
        debug=b.debug,
        provision_key=bool(b.flags & 0x10),
        mode64bit=bool(b.flags & 0x04),
        enclave_cpu_svn=b.cpu_svn,
        report_data=b.report_data,
        **_common(quote, st),  # type: ignore[arg-type]
    )
