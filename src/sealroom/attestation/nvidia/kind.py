"""The ``nvidia`` evidence kind: NVIDIA H100 GPU and LS10 NVSwitch SPDM evidence."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from sealroom.attestation.appraise import RuleResult
from sealroom.attestation.claims import Claims
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.nvidia import formats, policy, verify
from sealroom.attestation.nvidia.claims import NvidiaClaims


class NvidiaKind:
    name: ClassVar[str] = formats.KIND_NAME
    default_submod: ClassVar[str] = "gpu0"
    policy_model: ClassVar[type[BaseModel]] = policy.NvidiaPolicy

    def sniff(self, data: bytes) -> bool:
        return formats.sniff(data)

    def load(self, data: bytes) -> EvidenceBundle:
        return formats.load(data)

    def inspect(self, item: EvidenceItem) -> Claims:
        return verify.inspect(item)

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        return verify.verify(item, ctx)

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, NvidiaClaims) or not isinstance(section, policy.NvidiaPolicy):
            raise TypeError("nvidia appraise needs NvidiaClaims and an NvidiaPolicy section")
        return policy.appraise(claims, section, ctx)

    def starter_policy(self) -> str:
        return policy.STARTER


KIND = NvidiaKind()
