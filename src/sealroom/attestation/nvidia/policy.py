"""Policy section ``nvidia`` and its appraisal (pure).

Every evidence item (one GPU or one NVSwitch) is appraised against the common rules, then
against the sub-section for its device kind (``gpu`` or ``nvswitch``), because GPUs and
switches report different measurements and only GPUs report a driver version::

    nvidia:
      accepted_roots: null          # SHA-256 fingerprints; null = embedded NVIDIA root
      require_nonce: true
      device_kinds: [gpu, nvswitch]
      archs: [HOPPER, LS10]
      gpu:
        min_driver_version: "550.90.07"
        allowed_vbios_versions: ["96.00.9F.00.01"]
        measurements: {1: ["<hex>", "<hex>"]}
        opaque: {feature_flag: [PPCIE]}
      nvswitch:
        min_vbios_version: "96.10.73.00.01"
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from sealroom.attestation.appraise import RuleResult, Rules, Trust
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.nvidia import certs
from sealroom.attestation.nvidia.claims import NvidiaClaims
from sealroom.attestation.policy import HexBytes, Section
from sealroom.attestation.x509util import fingerprint


def driver_version_key(v: str) -> tuple[int, ...]:
    """ "550.90.07" -> (550, 90, 7). Decimal components."""
    parts = v.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"driver version {v!r} is not dotted decimal (e.g. 550.90.07)")
    return tuple(int(p) for p in parts)


def vbios_version_key(v: str) -> tuple[int, ...]:
    """ "96.00.9F.00.01" -> (0x96, 0, 0x9F, 0, 1). Hex components."""
    parts = v.strip().split(".")
    try:
        return tuple(int(p, 16) for p in parts if p) if all(parts) else ()
    except ValueError:
        return ()


def _driver(v: str) -> str:
    driver_version_key(v)
    return v.strip()


def _vbios(v: str) -> str:
    if not vbios_version_key(v):
        raise ValueError(f"VBIOS version {v!r} is not dotted hex (e.g. 96.00.9F.00.01)")
    return v.strip().upper()


def _fingerprint(v: Any) -> Any:
    if isinstance(v, str):
        return v.strip().lower().replace(":", "")
    return v


def _sha256_hex(v: str) -> str:
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError("must be a SHA-256 fingerprint (64 hex digits)")
    return v


Fingerprint = Annotated[str, BeforeValidator(_fingerprint), AfterValidator(_sha256_hex)]
DriverVersion = Annotated[str, AfterValidator(_driver)]
VbiosVersion = Annotated[str, AfterValidator(_vbios)]
DeviceKind = Literal["gpu", "nvswitch"]
Arch = Annotated[str, AfterValidator(lambda v: v.strip().upper())]


class _DevicePolicy(Section):
    min_vbios_version: VbiosVersion | None = None
    allowed_vbios_versions: list[VbiosVersion] | None = None
    #: Measurement index -> allowed values (hex). An index the evidence lacks fails.
    measurements: dict[Annotated[int, Field(ge=1, le=254)], list[HexBytes]] = Field(
        default_factory=dict
    )
    #: Opaque-data field (claims ``opaque`` name) -> allowed decoded values.
    opaque: dict[str, list[str]] = Field(default_factory=dict)


class GpuPolicy(_DevicePolicy):
    min_driver_version: DriverVersion | None = None
    allowed_driver_versions: list[DriverVersion] | None = None


class SwitchPolicy(_DevicePolicy):
    pass


class NvidiaPolicy(Section):
    #: SHA-256 fingerprints of accepted device roots; None = the embedded NVIDIA root(s).
    accepted_roots: list[Fingerprint] | None = None
    #: The verifier must pass a nonce and the evidence must carry it.
    require_nonce: bool = True
    device_kinds: list[DeviceKind] | None = None
    archs: list[Arch] | None = None
    gpu: GpuPolicy | None = None
    nvswitch: SwitchPolicy | None = None

    def roots(self) -> list[str]:
        if self.accepted_roots is not None:
            return list(self.accepted_roots)
        return [fingerprint(r) for r in certs.embedded_roots()]


def _nonce_rule(rules: Rules, claims: NvidiaClaims, pol: NvidiaPolicy, ctx: VerifyContext) -> None:
    got = claims.nonce
    if ctx.nonce is not None:
        ok = got is not None and hmac.compare_digest(got, ctx.nonce)
        rules.add(
            "nonce",
            got,
            f"{ctx.nonce.hex()} (the verifier's nonce)",
            ok,
            Trust.INSTANCE_IDENTITY,
            binds_nonce=True,
        )
    elif pol.require_nonce:
        rules.add(
            "nonce",
            got,
            "the verifier's nonce, but none was given (--nonce): a nonce is required for "
            "freshness (require_nonce: true)",
            False,
            Trust.INSTANCE_IDENTITY,
        )
    else:
        rules.add(
            "nonce",
            got,
            "not checked: no nonce given, freshness not checked (require_nonce: false)",
            True,
            Trust.INSTANCE_IDENTITY,
        )


def _version_rules(
    rules: Rules,
    field: str,
    got: str | None,
    minimum: str | None,
    allowed: list[str] | None,
    key: Any,
) -> None:
    if minimum is not None:
        ok = got is not None and bool(key(got)) and key(got) >= key(minimum)
        rules.add(field, got, f">= {minimum}", ok, Trust.EXECUTABLES)
    if allowed is not None:
        norm = None if got is None else (got.upper() if key is vbios_version_key else got)
        rules.one_of(field, norm, allowed, Trust.EXECUTABLES)


def _safe_driver_key(v: str) -> tuple[int, ...]:
    try:
        return driver_version_key(v)
    except ValueError:
        return ()


def _device_rules(rules: Rules, claims: NvidiaClaims, dev: _DevicePolicy) -> None:
    if isinstance(dev, GpuPolicy):
        _version_rules(
            rules,
            "driver_version",
            claims.driver_version,
            dev.min_driver_version,
            dev.allowed_driver_versions,
            _safe_driver_key,
        )
    _version_rules(
        rules,
        "vbios_version",
        claims.vbios_version,
        dev.min_vbios_version,
        dev.allowed_vbios_versions,
        vbios_version_key,
    )
    for index, allowed in sorted(dev.measurements.items()):
        got = claims.measurements.get(index)
        want = [a.hex() for a in allowed]
        rules.add(
            f"measurements[{index}]",
            got,
            f"one of [{', '.join(want)}]" if want else "one of [] (nothing accepted)",
            got is not None and got in want,
            Trust.EXECUTABLES,
        )
    for name, allowed_values in sorted(dev.opaque.items()):
        rules.one_of(f"opaque.{name}", claims.opaque.get(name), allowed_values, Trust.CONFIGURATION)


def appraise(claims: NvidiaClaims, pol: NvidiaPolicy, ctx: VerifyContext) -> list[RuleResult]:
    rules = Rules()
    roots = pol.roots()
    rules.add(
        "root",
        claims.root_fingerprint or None,
        f"one of [{', '.join(roots)}]" if roots else "one of [] (nothing accepted)",
        claims.root_fingerprint in roots,
        Trust.HARDWARE,
    )
    _nonce_rule(rules, claims, pol, ctx)
    rules.one_of("device_kind", claims.device_kind, pol.device_kinds, Trust.HARDWARE)
    rules.one_of("arch", claims.arch, pol.archs, Trust.HARDWARE)
    dev: _DevicePolicy | None = None
    if claims.device_kind == "gpu":
        dev = pol.gpu
    elif claims.device_kind == "nvswitch":
        dev = pol.nvswitch
    if dev is not None:
        _device_rules(rules, claims, dev)
    return rules.results


STARTER = """\
# SHA-256 fingerprints of the device roots accepted. null = the embedded NVIDIA Device
# Identity CA; list a root you pass with --device-root here to accept it.
accepted_roots: null
# The GET_MEASUREMENTS request must carry the verifier's nonce whenever you pass one
# (--nonce): freshness. Without --nonce the evidence is still verified (archived
# evidence) and the result says freshness was not checked; true refuses that.
require_nonce: false
# Device kinds and architectures accepted.
device_kinds: [gpu, nvswitch]
archs: [HOPPER, LS10]
# Rules for GPUs (driver/VBIOS versions, measurements by index, opaque-data fields).
gpu:
  min_driver_version: null        # e.g. "550.90.07"
  allowed_vbios_versions: null    # e.g. ["96.00.9F.00.01"]
  measurements: {}                # e.g. {1: ["<96 hex digits>"]}
  opaque: {}                      # e.g. {feature_flag: [PPCIE]}
# Rules for NVSwitches (no driver version).
nvswitch:
  min_vbios_version: null
  measurements: {}
"""
