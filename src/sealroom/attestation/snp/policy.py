"""The ``snp`` policy section and its (pure) appraisal."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from sealroom.attestation.appraise import RuleResult, Rules, Trust
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import HexBytes, ReportDataPolicy, Section, check_report_data
from sealroom.attestation.snp.claims import FirmwareVersion, SnpClaims, Tcb


def _size(n: int) -> AfterValidator:
    def check(v: bytes) -> bytes:
        if len(v) != n:
            raise ValueError(f"must be {n} bytes ({2 * n} hex digits), got {len(v)}")
        return v

    return AfterValidator(check)


Hex48 = Annotated[HexBytes, _size(48)]
Hex32 = Annotated[HexBytes, _size(32)]
Hex16 = Annotated[HexBytes, _size(16)]


class TcbMinimum(Section):
    bootloader: int | None = Field(default=None, ge=0, le=255)
    tee: int | None = Field(default=None, ge=0, le=255)
    snp: int | None = Field(default=None, ge=0, le=255)
    microcode: int | None = Field(default=None, ge=0, le=255)
    fmc: int | None = Field(default=None, ge=0, le=255)


class TcbMinimums(Section):
    current: TcbMinimum | None = None
    reported: TcbMinimum | None = None
    committed: TcbMinimum | None = None
    launch: TcbMinimum | None = None


class FirmwareMinimums(Section):
    current: str | None = None
    committed: str | None = None

    @field_validator("current", "committed")
    @classmethod
    def _parse(cls, v: str | None) -> str | None:
        if v is not None:
            FirmwareVersion.parse(v)
        return v


class PlatformInfoPolicy(Section):
    """PLATFORM_INFO (report 0x40) bits, as go-sev-guest's ``validate`` reads them: the
    ``allow_*`` knobs forbid a feature being on, the ``require_*`` knobs demand it."""

    allow_smt: bool = True  # bit 0 SMT_EN
    allow_tsme: bool = True  # bit 1 TSME_EN
    require_ecc: bool = False  # bit 2 ECC_EN
    require_rapl_disabled: bool = False  # bit 3 RAPL_DIS
    require_ciphertext_hiding: bool = False  # bit 4 CIPHERTEXT_HIDING_DRAM_EN
    require_alias_check_complete: bool = False  # bit 5 ALIAS_CHECK_COMPLETE (BadRAM)


class MitigationMinimums(Section):
    """Bits that must all be set in LAUNCH_MIT_VECTOR (0x1F8) / CURRENT_MIT_VECTOR (0x200),
    report version 5 and later; an older report has no vector and fails a set minimum."""

    launch: int | None = Field(default=None, ge=0, lt=2**64)
    current: int | None = Field(default=None, ge=0, lt=2**64)


class SnpPolicy(Section):
    products: list[Literal["Milan", "Genoa", "Turin"]] | None = None
    measurements: list[Hex48] | None = None
    host_data: Hex32 | None = None
    report_data: ReportDataPolicy = ReportDataPolicy()
    family_id: Hex16 | None = None
    image_id: Hex16 | None = None
    min_tcb: TcbMinimums = TcbMinimums()
    min_guest_svn: int | None = Field(default=None, ge=0)
    vmpl: list[Annotated[int, Field(ge=0, le=3)]] | None = None
    allow_debug: bool = False
    allow_smt: bool = True
    allow_migrate_ma: bool = False
    require_single_socket: bool = False
    # Guest POLICY bits 21-25 (AMD #56860 "Guest Policy Structure").
    allow_cxl: bool = False  # CXL_ALLOW: guest memory may live on CXL devices
    require_mem_aes_256_xts: bool = False  # MEM_AES_256_XTS
    require_rapl_dis: bool = False  # RAPL_DIS
    require_ciphertext_hiding: bool = False  # CIPHERTEXT_HIDING (DRAM)
    require_page_swap_disable: bool = False  # PAGE_SWAP_DISABLE
    # Firmware updated but not committed (COMMITTED_TCB/version below CURRENT): the host
    # can still roll back to the committed firmware. Allowed by default because the TCB
    # the VEK certifies (REPORTED_TCB, which min_tcb.reported bounds) is at most COMMITTED,
    # and real Azure and AWS reports run provisional firmware; false demands equality.
    # Committed above current is refused always.
    allow_provisional_firmware: bool = True
    platform_info: PlatformInfoPolicy = PlatformInfoPolicy()
    min_mitigations: MitigationMinimums = MitigationMinimums()
    min_firmware: FirmwareMinimums = FirmwareMinimums()
    min_abi: str | None = None
    id_key_digests: list[Hex48] | None = None
    author_key_digests: list[Hex48] | None = None
    signing_keys: tuple[Literal["vcek", "vlek"], ...] = ("vcek", "vlek")
    require_crl: bool = False

    @field_validator("min_abi")
    @classmethod
    def _abi(cls, v: str | None) -> str | None:
        if v is not None:
            FirmwareVersion.parse(v)
        return v


def _tcb_rules(rules: Rules, which: str, got: Tcb, minimum: TcbMinimum | None) -> None:
    if minimum is None:
        return
    for comp in ("bootloader", "tee", "snp", "microcode", "fmc"):
        want = getattr(minimum, comp)
        if want is None:
            continue
        value = getattr(got, comp)
        if value is None:  # fmc on a pre-Turin part: the component does not exist
            rules.add(f"{which.upper()}_TCB.{comp}", None, f">= {want}", False, Trust.HARDWARE)
        else:
            rules.at_least(f"{which.upper()}_TCB.{comp}", value, want, Trust.HARDWARE)


def _required_bits(
    r: Rules, prefix: str, rows: tuple[tuple[str, bool, bool], ...], trust: Trust
) -> None:
    """(name, bit set, policy requires it): a rule only where the policy requires it."""
    for name, got, required in rows:
        if required:
            r.add(f"{prefix}.{name}", got, "true", got, trust)


def _guest_policy_bits(r: Rules, claims: SnpClaims, pol: SnpPolicy) -> None:
    p = claims.policy
    r.flag("POLICY.CXL_ALLOW", p.cxl_allow, pol.allow_cxl)
    rows = (
        ("MEM_AES_256_XTS", p.mem_aes_256_xts, pol.require_mem_aes_256_xts),
        ("RAPL_DIS", p.rapl_dis, pol.require_rapl_dis),
        ("CIPHERTEXT_HIDING", p.ciphertext_hiding, pol.require_ciphertext_hiding),
        ("PAGE_SWAP_DISABLE", p.page_swap_disable, pol.require_page_swap_disable),
    )
    _required_bits(r, "POLICY", rows, Trust.RUNTIME_OPAQUE)


def _platform_info(r: Rules, claims: SnpClaims, pol: PlatformInfoPolicy) -> None:
    pi = claims.platform_info
    r.flag("PLATFORM_INFO.SMT_EN", pi.smt_enabled, pol.allow_smt, Trust.HARDWARE)
    r.flag("PLATFORM_INFO.TSME_EN", pi.tsme_enabled, pol.allow_tsme, Trust.HARDWARE)
    rows = (
        ("ECC_EN", pi.ecc_enabled, pol.require_ecc),
        ("RAPL_DIS", pi.rapl_disabled, pol.require_rapl_disabled),
        ("CIPHERTEXT_HIDING_DRAM_EN", pi.ciphertext_hiding_enabled, pol.require_ciphertext_hiding),
        ("ALIAS_CHECK_COMPLETE", pi.alias_check_complete, pol.require_alias_check_complete),
    )
    _required_bits(r, "PLATFORM_INFO", rows, Trust.HARDWARE)


_TCB_PARTS = ("bootloader", "tee", "snp", "microcode", "fmc")


def _provisional_firmware(r: Rules, claims: SnpClaims, allowed: bool) -> None:
    """COMMITTED vs CURRENT (TCB and firmware version), as go-sev-guest's
    PermitProvisionalFirmware: equal unless allowed, and never committed above current."""
    com, cur = claims.committed_tcb, claims.current_tcb
    pairs = [(getattr(com, n), getattr(cur, n)) for n in _TCB_PARTS]
    tcb_le = all(a is None or b is None or a <= b for a, b in pairs)
    fw_com, fw_cur = claims.committed_firmware, claims.current_firmware
    fw_le = (fw_com.major, fw_com.minor) <= (fw_cur.major, fw_cur.minor) and (
        fw_com.build <= fw_cur.build
    )
    if allowed:
        r.add("COMMITTED_TCB", com, f"<= CURRENT_TCB ({cur})", tcb_le, Trust.HARDWARE)
        r.add("COMMITTED_FIRMWARE", fw_com, f"<= CURRENT ({fw_cur})", fw_le, Trust.HARDWARE)
        return
    hint = " (firmware not committed; allow_provisional_firmware: true accepts it)"
    r.add(
        "COMMITTED_TCB",
        com,
        f"== CURRENT_TCB ({cur})" + ("" if com == cur else hint),
        com == cur,
        Trust.HARDWARE,
    )
    r.add(
        "COMMITTED_FIRMWARE",
        fw_com,
        f"== CURRENT ({fw_cur})" + ("" if fw_com == fw_cur else hint),
        fw_com == fw_cur,
        Trust.HARDWARE,
    )


def _mitigations(r: Rules, claims: SnpClaims, pol: MitigationMinimums) -> None:
    for which, got, want in (
        ("LAUNCH", claims.launch_mit_vector, pol.launch),
        ("CURRENT", claims.current_mit_vector, pol.current),
    ):
        if want is None:
            continue
        shown = f"{got:#x}" if got is not None else f"(none: report v{claims.report_version})"
        r.add(
            f"{which}_MIT_VECTOR",
            shown,
            f"all bits of {want:#x} set",
            got is not None and got & want == want,
            Trust.HARDWARE,
        )


def appraise_snp(claims: SnpClaims, pol: SnpPolicy, ctx: VerifyContext) -> list[RuleResult]:
    r = Rules()
    if pol.products is not None:
        if claims.simulated:
            # The sim product is governed by allow_simulated (a separate, always-run rule).
            r.add(
                "product", claims.product, "(simulated: see allow_simulated)", True, Trust.HARDWARE
            )
        else:
            r.one_of("product", claims.product, list(pol.products), Trust.HARDWARE)
    r.one_of("MEASUREMENT", claims.measurement, pol.measurements, Trust.EXECUTABLES)
    r.equal("HOST_DATA", claims.host_data, pol.host_data)
    r.equal("FAMILY_ID", claims.family_id, pol.family_id)
    r.equal("IMAGE_ID", claims.image_id, pol.image_id)
    check_report_data(
        r, "REPORT_DATA", claims.report_data, pol.report_data, ctx.nonce, ctx.report_data_inputs
    )
    for which in ("current", "reported", "committed", "launch"):
        _tcb_rules(r, which, getattr(claims, f"{which}_tcb"), getattr(pol.min_tcb, which))
    r.at_least("GUEST_SVN", claims.guest_svn, pol.min_guest_svn, Trust.EXECUTABLES)
    r.one_of("VMPL", claims.vmpl, pol.vmpl)
    r.flag("POLICY.DEBUG", claims.policy.debug, pol.allow_debug, Trust.RUNTIME_OPAQUE)
    r.flag("POLICY.SMT", claims.policy.smt, pol.allow_smt)
    r.flag("POLICY.MIGRATE_MA", claims.policy.migrate_ma, pol.allow_migrate_ma)
    if pol.require_single_socket:
        r.add(
            "POLICY.SINGLE_SOCKET", claims.policy.single_socket, "true", claims.policy.single_socket
        )
    _guest_policy_bits(r, claims, pol)
    _platform_info(r, claims, pol.platform_info)
    _provisional_firmware(r, claims, pol.allow_provisional_firmware)
    _mitigations(r, claims, pol.min_mitigations)
    for which, minimum in (
        ("current", pol.min_firmware.current),
        ("committed", pol.min_firmware.committed),
    ):
        if minimum is not None:
            got: FirmwareVersion = getattr(claims, f"{which}_firmware")
            want = FirmwareVersion.parse(minimum)
            r.add(f"{which.upper()}_FIRMWARE", got, f">= {want}", got >= want, Trust.HARDWARE)
    if pol.min_abi is not None:
        want = FirmwareVersion.parse(pol.min_abi)
        got_abi = FirmwareVersion(claims.policy.abi_major, claims.policy.abi_minor, 0)
        r.add(
            "POLICY.ABI",
            f"{got_abi.major}.{got_abi.minor}",
            f">= {want.major}.{want.minor}",
            got_abi >= FirmwareVersion(want.major, want.minor, 0),
        )
    r.one_of("ID_KEY_DIGEST", claims.id_key_digest, pol.id_key_digests, Trust.EXECUTABLES)
    if pol.author_key_digests is not None:
        # AUTHOR_KEY_DIGEST is meaningful only when AUTHOR_KEY_EN says the ID block had one.
        got_author = claims.author_key_digest if claims.author_key_en else None
        r.add(
            "AUTHOR_KEY_DIGEST",
            got_author,
            f"one of {[d.hex() for d in pol.author_key_digests]}",
            got_author in pol.author_key_digests,
            Trust.EXECUTABLES,
        )
    r.one_of("SIGNING_KEY", claims.signing_key, list(pol.signing_keys), Trust.HARDWARE)
    if pol.require_crl:
        r.add(
            "revocation_checked",
            claims.crl_checked,
            "true (an AMD CRL must be available)",
            claims.crl_checked,
            Trust.HARDWARE,
        )
    return r.results


STARTER = """\
# Accepted AMD product lines (Milan, Genoa, Turin).
products: [Milan, Genoa, Turin]
# Launch measurements you accept (48-byte hex). Compute yours with sev-snp-measure.
# measurements: ["<96 hex digits>"]
# HOST_DATA set by the host at launch (sealroom puts the manifest hash here).
# host_data: "<64 hex digits>"
# REPORT_DATA: any | exact (value) | nonce (--nonce) | sealroom-v1 (manifest+keys+nonce).
# "nonce": REPORT_DATA must be your --nonce (zero-padded): freshness. Without --nonce the
# evidence is still verified (archived evidence) and the result says freshness was NOT
# checked; require_nonce: true refuses that instead.
report_data: {mode: nonce, require_nonce: false}
# Minimum TCB component versions (SPLs); a component left out is not checked.
min_tcb:
  reported: {bootloader: 0, tee: 0, snp: 0, microcode: 0}
#  committed: {snp: 8}
#  current: {}
#  launch: {}
min_guest_svn: 0
# Accepted VMPLs of the requesting guest code (0 is the most privileged).
vmpl: [0, 1, 2, 3]
allow_debug: false       # a debug guest's memory is readable by the host
allow_smt: true
allow_migrate_ma: false
# allow_cxl: false                  # guest POLICY bits 21-25
# require_mem_aes_256_xts: false
# require_rapl_dis: false
# require_ciphertext_hiding: false
# require_page_swap_disable: false
# Firmware updated live but not committed (COMMITTED below CURRENT) can be rolled back by
# the host down to COMMITTED (still >= REPORTED_TCB, which min_tcb bounds). Azure and AWS
# hosts run it; false demands COMMITTED == CURRENT (go-sev-guest's default).
allow_provisional_firmware: true
# PLATFORM_INFO: host features (go-sev-guest semantics).
# platform_info: {allow_smt: true, allow_tsme: true, require_ecc: false,
#   require_rapl_disabled: false, require_ciphertext_hiding: false,
#   require_alias_check_complete: true}   # BadRAM mitigation (AMD-SB-3015)
# Report v5 mitigation vectors: bits that must be set.
# min_mitigations: {launch: 0x1, current: 0x1}
# min_firmware: {current: "1.55", committed: "1.55"}
# id_key_digests: ["<96 hex digits>"]
# author_key_digests: ["<96 hex digits>"]
signing_keys: [vcek, vlek]
# Require an AMD CRL (from --collateral or a collateral source): set true in production.
require_crl: false
"""
