"""Verify Azure SNP-vTPM and TDX-vTPM evidence: hardware report -> HCL runtime data -> AK
-> TPM quote.

1. the hardware evidence is authentic, checked by the SNP or TDX evidence kind itself:
   SNP: the 1184-byte report inside the HCL report with its VCEK (``kinds.get("snp")``);
   TDX: the TD quote shipped next to the HCL report (``kinds.get("tdx")``);
2. the hardware REPORT_DATA binds the runtime JSON: REPORT_DATA[0:n] == H(runtime JSON)
   (H per the IGVM hash type, n its size) and the rest is zero; for TDX the TDREPORT in the
   HCL report carries that REPORT_DATA and it must equal the TD quote's;
3. the TPM quote verifies with the runtime JSON's HCLAkPub (``ak_trust`` "certified",
   certification "azure-hcl-snp" / "azure-hcl-tdx"); its PCR digest matches the PCRs.
"""

from __future__ import annotations

import hmac

from sealroom.attestation import kinds
from sealroom.attestation.claims import Claims
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tpm.abi import digest, hash_name
from sealroom.attestation.tpm.azure import AzureEvidence
from sealroom.attestation.tpm.claims import AzureVtpmClaims, TpmClaims
from sealroom.attestation.tpm.formats import TpmEvidence
from sealroom.attestation.tpm.verify import inspect_tpm_evidence, verify_tpm_evidence
from sealroom.errors import AttestationError, MalformedEvidenceError


def _tpm_evidence(ev: AzureEvidence) -> TpmEvidence:
    return TpmEvidence(format="azure-hcl", quotes=((ev.attest, ev.signature),), pcrs=(ev.pcrs,))


def expected_report_data(ev: AzureEvidence) -> bytes:
    h = digest(ev.hcl.hash_alg, ev.hcl.runtime_data)
    return h + bytes(64 - len(h))


def check_binding(ev: AzureEvidence, report_data: bytes, what: str) -> None:
    want = expected_report_data(ev)
    if not hmac.compare_digest(report_data, want):
        raise AttestationError(
            f"{what} REPORT_DATA is {report_data.hex()}, but {hash_name(ev.hcl.hash_alg)} of the "
            f"HCL runtime data (zero-padded) is {want.hex()}: the runtime data (and its AK) is "
            "not the one the hardware report binds",
            code="azure-hcl-binding-mismatch",
        )


def _claims(
    ev: AzureEvidence,
    kind: str,
    *,
    verified: bool,
    tpm: TpmClaims,
    hardware: Claims,
    tdreport_report_data: bytes | None = None,
) -> AzureVtpmClaims:
    return AzureVtpmClaims(
        kind=kind,
        simulated=hardware.simulated,
        verified=verified,
        hcl_version=ev.hcl.version,
        report_data_hash=hash_name(ev.hcl.hash_alg),
        runtime_keys=ev.runtime.keys,
        vm_configuration=dict(ev.runtime.vm_configuration),
        user_data=ev.runtime.user_data,
        tpm=tpm,
        hardware=hardware,
        tdreport_report_data=tdreport_report_data,
    )


def _hardware_item(ev: AzureEvidence) -> EvidenceItem:
    if ev.hcl.hardware == "snp":
        return EvidenceItem("snp", ev.hcl.snp_report, ev.hardware_attachments)
    if ev.td_quote is None:
        raise MalformedEvidenceError(
            "Azure TDX evidence has no TD quote (attachment td_quote): the TDREPORT in the HCL "
            "report cannot be verified off the machine",
            code="azure-td-quote-missing",
        )
    return EvidenceItem("tdx", ev.td_quote, ev.hardware_attachments)


def _report_data(claims: Claims, what: str) -> bytes:
    rd = getattr(claims, "report_data", None)
    if not isinstance(rd, bytes) or len(rd) != 64:
        raise AttestationError(f"{what} claims carry no 64-byte report_data")
    return rd


def inspect_azure(ev: AzureEvidence, kind: str) -> AzureVtpmClaims:
    hw_item = _hardware_item(ev)
    hardware = kinds.get(hw_item.kind).inspect(hw_item)
    tpm = inspect_tpm_evidence(_tpm_evidence(ev))
    return _claims(ev, kind, verified=False, tpm=tpm, hardware=hardware)


def verify_azure(
    ev: AzureEvidence, kind: str, ctx: VerifyContext, presented_ak: bytes | None
) -> AzureVtpmClaims:
    hw_item = _hardware_item(ev)
    hardware = kinds.get(hw_item.kind).verify(hw_item, ctx)
    tdreport_rd = None
    if ev.hcl.hardware == "snp":
        check_binding(ev, _report_data(hardware, "SNP report"), "SNP report")
    else:
        tdreport_rd = ev.hcl.hw_report_data
        check_binding(ev, tdreport_rd, "TDREPORT (HCL report)")
        quote_rd = _report_data(hardware, "TD quote")
        if not hmac.compare_digest(quote_rd, tdreport_rd):
            raise AttestationError(
                f"TD quote REPORT_DATA is {quote_rd.hex()}, the HCL report's TDREPORT has "
                f"{tdreport_rd.hex()}: the TD quote is not for this HCL report",
                code="azure-td-quote-mismatch",
            )
    tpm = verify_tpm_evidence(
        _tpm_evidence(ev),
        ctx,
        presented_ak=presented_ak,
        bound_ak=(ev.runtime.ak, f"azure-hcl-{ev.hcl.hardware}"),
    )
    return _claims(
        ev, kind, verified=True, tpm=tpm, hardware=hardware, tdreport_report_data=tdreport_rd
    )
