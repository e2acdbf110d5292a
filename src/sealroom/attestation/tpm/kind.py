"""The ``tpm`` evidence kind: TPM 2.0 quotes (tpm2-tools/sealroom form, GCE go-tpm-tools
protobuf, Trustee JSON). Azure vTPM evidence has its own kinds (``azure_kind.py``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from sealroom.attestation.appraise import RuleResult
from sealroom.attestation.claims import Claims
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tpm.abi import parse_attest
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.tpm.formats import (
    MAGIC,
    decode_tpm_item,
    load_trustee_tpm,
    looks_like_trustee_tpm,
)
from sealroom.attestation.tpm.gce import looks_like_gce_attestation
from sealroom.attestation.tpm.policy import STARTER, TpmPolicy, appraise_tpm
from sealroom.attestation.tpm.verify import inspect_tpm_evidence, verify_tpm_evidence


class TpmKind:
    name: ClassVar[str] = "tpm"
    default_submod: ClassVar[str] = "tpm0"
    policy_model: ClassVar[type[BaseModel]] = TpmPolicy

    def sniff(self, data: bytes) -> bool:
        return (
            data.startswith(MAGIC)
            or looks_like_gce_attestation(data)
            or looks_like_trustee_tpm(data)
        )

    def load(self, data: bytes) -> EvidenceBundle:
        if looks_like_trustee_tpm(data):
            return EvidenceBundle.single(load_trustee_tpm(data))
        item = EvidenceItem("tpm", data)
        if data.startswith(MAGIC):
            parse_attest(data)  # the signature and PCRs come as attachments (envelope)
        else:
            decode_tpm_item(item)  # fail early, with the parser's message
        return EvidenceBundle.single(item)

    def inspect(self, item: EvidenceItem) -> Claims:
        return inspect_tpm_evidence(decode_tpm_item(item))

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        return verify_tpm_evidence(decode_tpm_item(item), ctx, pinned=item.attachments.get("ak"))

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, TpmClaims) or not isinstance(section, TpmPolicy):
            raise TypeError("tpm appraisal needs TpmClaims and TpmPolicy")
        return appraise_tpm(claims, section, ctx)

    def starter_policy(self) -> str:
        return STARTER


KIND = TpmKind()
