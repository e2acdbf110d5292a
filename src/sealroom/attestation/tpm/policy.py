"""The ``tpm`` policy section and its (pure) appraisal; reused inside the Azure sections."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, SerializeAsAny, model_validator

from sealroom.attestation import kinds
from sealroom.attestation.appraise import RuleResult, Rules, Trust
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import HexBytes, ReportDataPolicy, Section, check_report_data
from sealroom.attestation.tpm.abi import HASH_BY_NAME, HASH_SIZES
from sealroom.attestation.tpm.claims import AzureVtpmClaims, TpmClaims

Bank = Literal["sha1", "sha256", "sha384", "sha512"]
AkTrustName = Literal["pinned", "certified", "none"]


def _default_ak_trust() -> list[AkTrustName]:
    return ["pinned", "certified"]


def _u64(value: Any) -> Any:
    """Firmware versions are 64-bit and usually written in hex: accept "0x..." too."""
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError as e:
            raise ValueError(f"is not an integer: {value!r}") from e
    return value


U64 = Annotated[int, BeforeValidator(_u64), Field(ge=0, lt=1 << 64)]
PcrIndex = Annotated[int, Field(ge=0, le=31)]


class TpmPolicy(Section):
    #: What must vouch for the AK. "none" accepts any AK that signed the quote: only for
    #: experiments (a software TPM anywhere can produce such evidence).
    ak_trust: list[AkTrustName] = Field(default_factory=_default_ak_trust, min_length=1)
    #: Allowed AKs by SHA-256 of their DER SubjectPublicKeyInfo (pinning in the policy).
    ak_fingerprints: list[str] | None = None
    #: The AK's TPMT_PUBLIC must be known and restricted (TPM-generated data only).
    require_restricted_ak: bool = False
    #: Expected PCR values: bank -> PCR index -> allowed values. A listed PCR that the
    #: evidence did not quote fails.
    pcrs: dict[Bank, dict[PcrIndex, list[HexBytes]]] | None = None
    #: The quote's extraData (qualifying data): "nonce" = exactly the verifier's nonce;
    #: "exact" = exactly ``value``; "sealroom-v1" = the 64-byte sealroom binding.
    extra_data: ReportDataPolicy = ReportDataPolicy()
    min_firmware_version: U64 | None = None
    #: A TCG event log must be present and replay to the quoted PCRs.
    require_event_log: bool = False

    @model_validator(mode="after")
    def _sizes(self) -> TpmPolicy:
        for bank, indices in (self.pcrs or {}).items():
            size = HASH_SIZES[HASH_BY_NAME[bank]]
            for idx, values in indices.items():
                for v in values:
                    if len(v) != size:
                        raise ValueError(
                            f"pcrs.{bank}[{idx}]: {v.hex()} is {len(v)} bytes, a {bank} PCR is "
                            f"{size}"
                        )
        if self.ak_fingerprints is not None:
            for fp in self.ak_fingerprints:
                if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp.lower()):
                    raise ValueError(f"ak_fingerprints: {fp!r} is not a SHA-256 hex digest")
        return self


def appraise_tpm(
    claims: TpmClaims, pol: TpmPolicy, ctx: VerifyContext, prefix: str = ""
) -> list[RuleResult]:
    r = Rules()
    p = prefix
    # The policy's own pin list is the verifier's pin: an AK it names counts as pinned.
    policy_pinned = pol.ak_fingerprints is not None and claims.ak_fingerprint.lower() in [
        f.lower() for f in pol.ak_fingerprints
    ]
    trust: str = claims.ak_trust
    shown = trust
    if policy_pinned and trust != "pinned":
        trust, shown = "pinned", f"pinned (policy ak_fingerprints; evidence alone: {trust})"
    r.add(
        f"{p}ak_trust",
        shown,
        f"one of {list(pol.ak_trust)}",
        # "none" asks for no vouching at all, so a vouched-for AK satisfies it too.
        trust in pol.ak_trust or "none" in pol.ak_trust,
        Trust.HARDWARE,
    )
    if pol.ak_fingerprints is not None:
        r.one_of(
            f"{p}ak_fingerprint",
            claims.ak_fingerprint,
            [f.lower() for f in pol.ak_fingerprints],
            Trust.INSTANCE_IDENTITY,
        )
    if pol.require_restricted_ak:
        r.add(
            f"{p}ak_restricted",
            claims.ak_restricted,
            "true (a restricted signing key, TPMT_PUBLIC known)",
            claims.ak_restricted is True,
            Trust.HARDWARE,
        )
    check_report_data(
        r,
        f"{p}extra_data",
        claims.extra_data,
        pol.extra_data,
        ctx.nonce,
        ctx.report_data_inputs,
        pad=False,
    )
    if pol.min_firmware_version is not None:
        r.add(
            f"{p}firmware_version",
            f"{claims.firmware_version:#x}",
            f">= {pol.min_firmware_version:#x}",
            claims.firmware_version >= pol.min_firmware_version,
            Trust.HARDWARE,
        )
    for bank, indices in (pol.pcrs or {}).items():
        quoted = claims.pcrs.get(bank, {})
        for idx, allowed in sorted(indices.items()):
            got = quoted.get(idx)
            want = f"one of [{', '.join(v.hex() for v in allowed)}]"
            if got is None:
                want += " (PCR not quoted)"
            r.add(f"{p}pcrs.{bank}[{idx}]", got, want, got in allowed, Trust.EXECUTABLES)
    if pol.require_event_log:
        log = claims.event_log
        replayed = sorted(b for b, idx in log.replayed.items() if idx) if log else []
        r.add(
            f"{p}event_log.replayed",
            ", ".join(replayed) or ("no quoted bank" if log else "no event log"),
            "an event log replayed against a quoted bank",
            bool(replayed),
            Trust.EXECUTABLES,
        )
    return r.results


STARTER = """\
# What vouches for the attestation key (AK): "pinned" (you pass --ak, or list it under
# ak_fingerprints), "certified" (an AK certificate chains to a root you pass with --root),
# "none" (nothing: any software TPM). An AK that comes with the evidence is never a pin.
ak_trust: [pinned, certified]
# ak_fingerprints: [<sha256 of the AK's DER SubjectPublicKeyInfo>]
# The AK must be a restricted signing key (TPMT_PUBLIC known): it signs only data the
# TPM itself generated, so a quote cannot be forged with it.
require_restricted_ak: true
# The quote's extraData must be your nonce (--nonce HEX): freshness. Without --nonce the
# quote is still verified and the result says freshness was NOT checked (require_nonce:
# true refuses that instead).
extra_data: {mode: nonce, require_nonce: false}
# Expected PCR values per bank; each PCR lists the values accepted.
pcrs:
  sha256:
    # 7: [<64 hex digits>]    # Secure Boot state
    {}
# min_firmware_version: 0x2016051100162800
require_event_log: false
"""


# ----------------------------------------------------------------------------- Azure


def _hardware_section(kind_name: str, defaults: dict[str, Any] | None = None) -> Any:
    """Validate a nested section with the hardware kind's own policy model (lazily: the
    SNP/TDX kinds are imported only when an Azure section is loaded). ``defaults`` are
    the Azure-specific defaults of that section; the policy's own keys override them."""

    def validate(value: Any) -> Any:
        model = kinds.get(kind_name).policy_model
        if isinstance(value, model):
            return value
        given = {} if value is None else value
        if not isinstance(given, dict):
            return model.model_validate(given)  # pydantic names the type error
        return model.model_validate({**(defaults or {}), **given})

    return BeforeValidator(validate)


#: The TD of an Azure TDX CVM is Azure's paravisor (HCL): it runs with SEPT_VE_DISABLE
#: clear and handles #VE for the guest itself (every Azure TD quote shows TD_ATTRIBUTES 0),
#: so the embedded tdx section does not require the bit unless the policy says so.
AZURE_TDX_DEFAULTS: dict[str, Any] = {"require_sept_ve_disable": False}


class _AzurePolicy(Section):
    #: Rules for the TPM quote (AK trust defaults to pinned or certified: Azure's AK is
    #: "certified" by the hardware report binding it).
    tpm: TpmPolicy = Field(default_factory=TpmPolicy)
    #: The runtime JSON's ``user-data`` (64 bytes); e.g. {mode: nonce}.
    user_data: ReportDataPolicy = ReportDataPolicy()
    #: Exact values required in the runtime JSON's ``vm-configuration``
    #: (e.g. {"secure-boot": true, "console-enabled": false}).
    vm_configuration: dict[str, bool | str] | None = None


class AzSnpVtpmPolicy(_AzurePolicy):
    #: The ``snp`` kind's policy section, applied to the embedded SNP report. Its
    #: report_data rule should stay "any": REPORT_DATA holds the runtime-data hash, which
    #: verification already checks.
    snp: Annotated[SerializeAsAny[BaseModel], _hardware_section("snp")] = Field(
        default_factory=lambda: kinds.get("snp").policy_model.model_validate({}),
        validate_default=True,
    )


class AzTdxVtpmPolicy(_AzurePolicy):
    #: The ``tdx`` kind's policy section, applied to the TD quote (report_data: "any").
    tdx: Annotated[SerializeAsAny[BaseModel], _hardware_section("tdx", AZURE_TDX_DEFAULTS)] = Field(
        default_factory=lambda: kinds.get("tdx").policy_model.model_validate(AZURE_TDX_DEFAULTS),
        validate_default=True,
    )


def _prefixed(results: list[RuleResult], prefix: str) -> list[RuleResult]:
    return [dataclasses.replace(r, field=f"{prefix}{r.field}") for r in results]


def appraise_azure(
    claims: AzureVtpmClaims, pol: AzSnpVtpmPolicy | AzTdxVtpmPolicy, ctx: VerifyContext
) -> list[RuleResult]:
    out: list[RuleResult] = []
    hw_name = "snp" if isinstance(pol, AzSnpVtpmPolicy) else "tdx"
    hw_section = pol.snp if isinstance(pol, AzSnpVtpmPolicy) else pol.tdx
    out.extend(
        _prefixed(kinds.get(hw_name).appraise(claims.hardware, hw_section, ctx), f"{hw_name}.")
    )
    out.extend(appraise_tpm(claims.tpm, pol.tpm, ctx, prefix="tpm."))
    r = Rules()
    if pol.user_data.mode != "any":
        if claims.user_data is None or len(claims.user_data) != 64:
            r.add(
                "user_data",
                claims.user_data,
                f"64 bytes checked as {pol.user_data.mode}",
                False,
                Trust.INSTANCE_IDENTITY,
            )
        else:
            check_report_data(
                r, "user_data", claims.user_data, pol.user_data, ctx.nonce, ctx.report_data_inputs
            )
    for key, want in (pol.vm_configuration or {}).items():
        got = claims.vm_configuration.get(key)
        r.add(f"vm_configuration.{key}", got, _fmt_json(want), got == want, Trust.CONFIGURATION)
    out.extend(r.results)
    return out


def _fmt_json(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


AZURE_STARTER = """\
# The TPM quote: Azure's AK is certified by the hardware report (ak_trust "certified").
tpm:
  ak_trust: [pinned, certified]
  require_restricted_ak: false   # the HCL's AK comes as a JWK: no TPMT_PUBLIC to check
  # The quote's qualifying data is your nonce (--nonce HEX); without one: freshness NOT
  # checked, and said so.
  extra_data: {mode: nonce, require_nonce: false}
  # pcrs: {sha256: {7: [<64 hex digits>]}}
# user_data: {mode: nonce}       # the runtime JSON's user-data (64 bytes)
vm_configuration:
  secure-boot: true
  console-enabled: false
"""
