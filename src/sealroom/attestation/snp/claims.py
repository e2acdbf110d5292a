"""Typed claims of an SEV-SNP (or sim) attestation report."""

from __future__ import annotations

from dataclasses import dataclass

from sealroom.attestation.claims import Claims
from sealroom.attestation.snp.abi import Product, Report, TcbVersion


@dataclass(frozen=True, order=True)
class FirmwareVersion:
    major: int
    minor: int
    build: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"

    @staticmethod
    def parse(text: str) -> FirmwareVersion:
        parts = [int(p) for p in text.split(".")]
        if not 2 <= len(parts) <= 3 or any(p < 0 or p > 255 for p in parts):
            raise ValueError(f"firmware version must be MAJOR.MINOR[.BUILD], got {text!r}")
        return FirmwareVersion(parts[0], parts[1], parts[2] if len(parts) == 3 else 0)


@dataclass(frozen=True)
class Tcb:
    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None

    @staticmethod
    def of(t: TcbVersion) -> Tcb:
        b = t.raw.to_bytes(8, "little")  # layouts as in TcbVersion, decoded once
        if t.turin:
            return Tcb(t.raw, b[1], b[2], b[3], b[7], b[0])
        return Tcb(t.raw, b[0], b[1], b[6], b[7], None)

    def __str__(self) -> str:
        s = f"bl={self.bootloader} tee={self.tee} snp={self.snp} ucode={self.microcode}"
        return s + (f" fmc={self.fmc}" if self.fmc is not None else "")


@dataclass(frozen=True)
class GuestPolicyClaims:
    raw: int
    abi_major: int
    abi_minor: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allow: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding: bool
    page_swap_disable: bool


@dataclass(frozen=True)
class PlatformInfoClaims:
    raw: int
    smt_enabled: bool
    tsme_enabled: bool
    ecc_enabled: bool
    rapl_disabled: bool
    ciphertext_hiding_enabled: bool
    alias_check_complete: bool


@dataclass(frozen=True, kw_only=True)
class SnpClaims(Claims):
    product: str | None
    report_version: int
    measurement: bytes
    host_data: bytes
    report_data: bytes
    family_id: bytes
    image_id: bytes
    guest_svn: int
    vmpl: int
    policy: GuestPolicyClaims
    platform_info: PlatformInfoClaims
    current_tcb: Tcb
    reported_tcb: Tcb
    committed_tcb: Tcb
    launch_tcb: Tcb
    current_firmware: FirmwareVersion
    committed_firmware: FirmwareVersion
    chip_id: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    author_key_en: bool
    mask_chip_key: bool
    report_id: bytes
    report_id_ma: bytes
    signing_key: str
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    launch_mit_vector: int | None
    current_mit_vector: int | None
    trailing_bytes: int  # unauthenticated bytes after the report (ignored)
    # Filled by verification (None/False from inspect):
    vek_fingerprint: str | None = None
    csp_id: str | None = None
    root: str | None = None
    chip_id_checked: bool = False
    crl_checked: bool = False


def claims_from_report(
    report: Report,
    product: Product | None,
    *,
    verified: bool,
    simulated: bool,
    vek_fingerprint: str | None = None,
    csp_id: str | None = None,
    root: str | None = None,
    chip_id_checked: bool = False,
    crl_checked: bool = False,
) -> SnpClaims:
    p = report.policy
    pi = report.platform_info
    return SnpClaims(
        kind="snp",
        simulated=simulated,
        verified=verified,
        product=product.value if product else None,
        report_version=report.version,
        measurement=report.measurement,
        host_data=report.host_data,
        report_data=report.report_data,
        family_id=report.family_id,
        image_id=report.image_id,
        guest_svn=report.guest_svn,
        vmpl=report.vmpl,
        policy=GuestPolicyClaims(
            p.raw,
            p.abi_major,
            p.abi_minor,
            p.smt,
            p.migrate_ma,
            p.debug,
            p.single_socket,
            p.cxl_allow,
            p.mem_aes_256_xts,
            p.rapl_dis,
            p.ciphertext_hiding,
            p.page_swap_disable,
        ),
        platform_info=PlatformInfoClaims(
            pi.raw,
            pi.smt_enabled,
            pi.tsme_enabled,
            pi.ecc_enabled,
            pi.rapl_disabled,
            pi.ciphertext_hiding_enabled,
            pi.alias_check_complete,
        ),
        current_tcb=Tcb.of(report.tcb("current", product)),
        reported_tcb=Tcb.of(report.tcb("reported", product)),
        committed_tcb=Tcb.of(report.tcb("committed", product)),
        launch_tcb=Tcb.of(report.tcb("launch", product)),
        current_firmware=FirmwareVersion(
            report.current_major, report.current_minor, report.current_build
        ),
        committed_firmware=FirmwareVersion(
            report.committed_major, report.committed_minor, report.committed_build
        ),
        chip_id=report.chip_id,
        id_key_digest=report.id_key_digest,
        author_key_digest=report.author_key_digest,
        author_key_en=report.author_key_en,
        mask_chip_key=report.mask_chip_key,
        report_id=report.report_id,
        report_id_ma=report.report_id_ma,
        signing_key=report.signing_key.name.lower(),
        cpuid_fam_id=report.cpuid_fam_id,
        cpuid_mod_id=report.cpuid_mod_id,
        cpuid_step=report.cpuid_step,
        launch_mit_vector=report.launch_mit_vector,
        current_mit_vector=report.current_mit_vector,
        trailing_bytes=len(report.trailing),
        vek_fingerprint=vek_fingerprint,
        csp_id=csp_id,
        root=root,
        chip_id_checked=chip_id_checked,
        crl_checked=crl_checked,
    )
