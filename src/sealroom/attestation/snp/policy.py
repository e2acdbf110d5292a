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
# REPORT_DATA: any | exact (value) | nonce (--nonce) | sealroom-v1 (manifest+keys+nonce)
report_data: {mode: any}
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
# min_firmware: {current: "1.55", committed: "1.55"}
# id_key_digests: ["<96 hex digits>"]
# author_key_digests: ["<96 hex digits>"]
signing_keys: [vcek, vlek]
# Require an AMD CRL (from --collateral or a collateral source): set true in production.
require_crl: false
"""
