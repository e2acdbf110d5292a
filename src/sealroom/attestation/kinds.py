"""Evidence kinds: the plug-in seam. Adding a TEE is adding a folder plus one line below.

An evidence kind provides parse (``inspect``), verify and appraise for its evidence, a
policy section model, and recognition of the file formats it accepts. Kinds are loaded
lazily so a missing optional dependency of one kind cannot break another.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import ClassVar, Protocol

from cryptography import x509
from pydantic import BaseModel

from sealroom.attestation.appraise import RuleResult
from sealroom.attestation.binding import ReportDataInputs
from sealroom.attestation.claims import Claims
from sealroom.attestation.collateral import CollateralHistory, CollateralSource, NoCollateral
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.errors import InvalidInputError, MalformedEvidenceError


@dataclass(frozen=True)
class VerifyContext:
    """Everything verification and appraisal depend on besides the evidence and policy.

    ``now`` is captured once per call by the caller; nothing reads the clock below.
    ``extra_roots`` are roots the caller chose to trust in addition to the embedded
    vendor roots (a sim authority's root, an NVIDIA device root); evidence anchored in
    one of them is never reported as vendor-rooted.

    Every field here is the verifier's own trust input, never the presenter's (ADR 0020):
    ``ak_pins`` are TPM attestation keys the verifier pins (``--ak``; PEM/DER SPKI,
    TPMT_PUBLIC or TPM2B_PUBLIC); ``collateral`` is the verifier's collateral source and
    ``verifier_collateral`` collateral files the verifier names (``--collateral FILE``, by
    attachment name: ``collateral``, ``tcb_info``, ``pck_crl``, ...): both win over
    collateral carried with the evidence; ``collateral_history`` remembers the
    newest collateral this verifier has seen, so older presenter collateral is refused.
    """

    now: datetime
    collateral: CollateralSource = field(default_factory=NoCollateral)
    nonce: bytes | None = None
    extra_roots: tuple[x509.Certificate, ...] = ()
    report_data_inputs: ReportDataInputs | None = None
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ak_pins: tuple[bytes, ...] = ()
    verifier_collateral: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    collateral_history: CollateralHistory | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("VerifyContext.now must be timezone-aware")


class EvidenceKind(Protocol):
    name: ClassVar[str]
    #: Submodule name used when an item has none ("cpu0", "gpu0").
    default_submod: ClassVar[str]
    #: Pydantic model of this kind's policy section (frozen, extra="forbid").
    policy_model: ClassVar[type[BaseModel]]

    def sniff(self, data: bytes) -> bool:
        """True if ``data`` looks like this kind's evidence in a format ``load`` accepts."""
        ...

    def load(self, data: bytes) -> EvidenceBundle:
        """Turn a file's bytes (raw, hex, vendor JSON) into one or more items (a multi-GPU
        file gives several). Parse errors are MalformedEvidenceError."""
        ...

    def inspect(self, item: EvidenceItem) -> Claims:
        """Parse only: claims with ``verified=False``. Never judges authenticity."""
        ...

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        """Parse and check authenticity (signatures, chains, revocation). Raises
        AttestationError / UnavailableError; returns claims with ``verified=True``."""
        ...

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        """Pure: every rule of ``section`` against ``claims``."""
        ...

    def starter_policy(self) -> str:
        """A commented YAML policy section (without the top-level key) for ``policy init``."""
        ...


# name -> "module:attribute". Order matters for sniffing: the first kind that claims the
# bytes wins, so more specific formats come first.
_REGISTRY: dict[str, str] = {
    "snp": "sealroom.attestation.snp.kind:KIND",
    "nvidia": "sealroom.attestation.nvidia.kind:KIND",
    "tdx": "sealroom.attestation.tdx.kind:KIND",
    "sgx": "sealroom.attestation.tdx.kind:SGX_KIND",
    "az-snp-vtpm": "sealroom.attestation.tpm.kind:AZ_SNP_KIND",
    "az-tdx-vtpm": "sealroom.attestation.tpm.kind:AZ_TDX_KIND",
    "tpm": "sealroom.attestation.tpm.kind:KIND",
}
_loaded: dict[str, EvidenceKind] = {}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> EvidenceKind:
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown evidence kind {name!r} (known: {', '.join(_REGISTRY)})",
            code="unknown-evidence-kind",
        )
    if name not in _loaded:
        module, attr = _REGISTRY[name].split(":")
        kind: EvidenceKind = getattr(importlib.import_module(module), attr)
        _loaded[name] = kind
    return _loaded[name]


def sniff(data: bytes) -> EvidenceKind:
    for n in _REGISTRY:
        k = get(n)
        if k.sniff(data):
            return k
    raise MalformedEvidenceError(
        f"cannot tell what kind of evidence this is ({len(data)} bytes, starts "
        f"{data[:8].hex() or '(empty)'}); known kinds: {', '.join(_REGISTRY)}; pass --kind"
    )
