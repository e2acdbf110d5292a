"""Evidence kinds of the TPM path.

``tpm``: TPM 2.0 quotes (tpm2-tools/sealroom form, GCE go-tpm-tools protobuf, Trustee JSON).
``az-snp-vtpm`` / ``az-tdx-vtpm``: Azure confidential VMs, where an SNP report or a TD quote
certifies the vTPM's AK through the HCL report (see ``azure.py``); separate kinds because
their policy embeds the SNP or TDX section and their claims carry the hardware claims.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from sealroom.attestation.appraise import RuleResult
from sealroom.attestation.claims import Claims
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tpm.abi import parse_attest
from sealroom.attestation.tpm.azure import (
    AzureEvidence,
    decode_azure_item,
    load_azure,
    looks_like_azure,
)
from sealroom.attestation.tpm.azure_verify import inspect_azure, verify_azure
from sealroom.attestation.tpm.claims import AzureVtpmClaims, TpmClaims
from sealroom.attestation.tpm.formats import (
    MAGIC,
    decode_tpm_item,
    load_trustee_tpm,
    looks_like_trustee_tpm,
)
from sealroom.attestation.tpm.gce import looks_like_gce_attestation
from sealroom.attestation.tpm.policy import (
    AZURE_STARTER,
    STARTER,
    AzSnpVtpmPolicy,
    AzTdxVtpmPolicy,
    TpmPolicy,
    appraise_azure,
    appraise_tpm,
)
from sealroom.attestation.tpm.verify import inspect_tpm_evidence, verify_tpm_evidence
from sealroom.errors import MalformedEvidenceError


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
        return inspect_tpm_evidence(decode_tpm_item(item, require_signature=False))

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        return verify_tpm_evidence(
            decode_tpm_item(item), ctx, presented_ak=item.attachments.get("ak")
        )

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, TpmClaims) or not isinstance(section, TpmPolicy):
            raise TypeError("tpm appraisal needs TpmClaims and TpmPolicy")
        return appraise_tpm(claims, section, ctx)

    def starter_policy(self) -> str:
        return STARTER


KIND = TpmKind()


class _AzureKind:
    name: ClassVar[str]
    default_submod: ClassVar[str]
    hardware: ClassVar[str]
    policy_model: ClassVar[type[BaseModel]]

    def sniff(self, data: bytes) -> bool:
        return looks_like_azure(data) == self.hardware

    def load(self, data: bytes) -> EvidenceBundle:
        item = load_azure(data)
        if item.kind != self.name:
            raise MalformedEvidenceError(
                f"this is {item.kind} evidence, not {self.name}",
                code="azure-kind-mismatch",
            )
        return EvidenceBundle.single(item)

    def _decode(self, item: EvidenceItem) -> AzureEvidence:
        ev = decode_azure_item(item)
        if ev.hcl.hardware != self.hardware:
            raise MalformedEvidenceError(
                f"the HCL report holds a {ev.hcl.hardware} report, this kind reads {self.hardware}",
                code="azure-kind-mismatch",
            )
        return ev

    def inspect(self, item: EvidenceItem) -> Claims:
        return inspect_azure(self._decode(item), self.name)

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        return verify_azure(
            self._decode(item),
            self.name,
            ctx,
            item.attachments.get("ak"),
        )

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, AzureVtpmClaims) or not isinstance(
            section, AzSnpVtpmPolicy | AzTdxVtpmPolicy
        ):
            raise TypeError("Azure vTPM appraisal needs AzureVtpmClaims and its policy section")
        return appraise_azure(claims, section, ctx)

    def starter_policy(self) -> str:
        return AZURE_STARTER + self.hardware_starter

    #: The hardware section of the starter (report_data stays "any": REPORT_DATA holds the
    #: HCL runtime-data hash, which verification checks).
    hardware_starter: ClassVar[str]


class AzSnpVtpmKind(_AzureKind):
    name: ClassVar[str] = "az-snp-vtpm"
    default_submod: ClassVar[str] = "cvm0"
    hardware: ClassVar[str] = "snp"
    policy_model: ClassVar[type[BaseModel]] = AzSnpVtpmPolicy
    hardware_starter: ClassVar[str] = """\
# The snp kind's rules for the SNP report (keep report_data: any; verification checks
# that it binds the HCL runtime data and so the AK).
snp: {}
"""


class AzTdxVtpmKind(_AzureKind):
    name: ClassVar[str] = "az-tdx-vtpm"
    default_submod: ClassVar[str] = "cvm0"
    hardware: ClassVar[str] = "tdx"
    policy_model: ClassVar[type[BaseModel]] = AzTdxVtpmPolicy
    hardware_starter: ClassVar[str] = """\
# The tdx kind's rules for the TD quote (keep report_data: any; verification checks that it
# binds the HCL runtime data and so the AK). Azure evidence carries no Intel collateral
# (ADR 0006): the TD quote's signature and PCK chain are checked, its TCB is not. To have
# Intel's verdict on the platform, pass --collateral and set both to true.
tdx: {require_collateral: false, require_crl: false}
"""


AZ_SNP_KIND = AzSnpVtpmKind()
AZ_TDX_KIND = AzTdxVtpmKind()
