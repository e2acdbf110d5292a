"""Typed claims of TPM 2.0 quote evidence (plain TPM, GCE vTPM, and the TPM part of Azure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sealroom.attestation.claims import Claims

AkTrust = Literal["pinned", "certified", "none"]


@dataclass(frozen=True)
class QuoteClaims:
    """One TPMS_ATTEST quote as signed."""

    pcr_select: dict[str, tuple[int, ...]]  # bank -> PCR indices, selection order
    pcr_digest: bytes
    signature_alg: str  # rsassa | rsapss | ecdsa
    hash_alg: str  # the signature's hash, also the pcrDigest hash
    qualified_signer: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class EventClaims:
    seq: int
    pcr: int
    type: str
    digests: dict[str, bytes]  # bank -> digest extended
    data: bytes


@dataclass(frozen=True)
class EventLogClaims:
    format: Literal["crypto-agile", "sha1"]
    banks: tuple[str, ...]
    #: bank -> PCR indices whose replayed value equals the quoted value (all quoted PCRs
    #: that have events). Empty when the log was only parsed (inspect).
    replayed: dict[str, tuple[int, ...]]
    #: PCRs that have events but are not covered by any quote (their events are unverified).
    unquoted_pcrs: tuple[int, ...]
    events: tuple[EventClaims, ...]


@dataclass(frozen=True)
class GceInstanceClaims:
    zone: str
    project_id: str
    project_number: int
    instance_name: str
    instance_id: int


@dataclass(frozen=True, kw_only=True)
class TpmClaims(Claims):
    #: Where the evidence came from: "tpms-attest" (sealroom/tpm2-tools form),
    #: "gce-attestation" (go-tpm-tools protobuf), "trustee-tpm" (Trustee JSON), "azure-hcl".
    format: str
    extra_data: bytes
    firmware_version: int
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    #: Quoted PCR values only (supplied values outside every selection are not claims).
    pcrs: dict[str, dict[int, bytes]]
    quotes: tuple[QuoteClaims, ...]
    ak_fingerprint: str  # SHA-256 of the AK's DER SubjectPublicKeyInfo
    ak_algorithm: str  # "rsa-2048", "ecc-p256", ...
    #: "pinned": the caller supplied this AK (attachments["ak"]); "certified": an AK
    #: certificate chains to a root the caller trusts, or (Azure) a hardware report binds
    #: the AK; "none": only the evidence itself vouches for the AK. Policy decides.
    ak_trust: AkTrust
    #: How the AK was certified ("x509:<root CN>", "azure-hcl-snp", "azure-hcl-tdx"), or why not.
    ak_certification: str | None = None
    #: objectAttributes of the AK where its TPMT_PUBLIC is known (None for SPKI/JWK AKs).
    ak_restricted: bool | None = None
    ak_fixed_tpm: bool | None = None
    event_log: EventLogClaims | None = None
    gce_instance: GceInstanceClaims | None = None
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True, kw_only=True)
class AzureVtpmClaims(Claims):
    """Azure CVM evidence: the hardware report's claims, the HCL runtime data, the TPM quote."""

    hcl_version: int
    report_data_hash: str  # sha256 | sha384 | sha512: how REPORT_DATA binds the runtime data
    runtime_keys: tuple[str, ...]  # kids in the runtime JSON (HCLAkPub, HCLEkPub, ...)
    vm_configuration: dict[str, object]
    user_data: bytes | None
    tpm: TpmClaims
    #: The SNP or TDX kind's claims for the embedded / accompanying hardware evidence.
    hardware: Claims
    #: TDX only: the TDREPORT's REPORT_DATA (equal to the TD quote's).
    tdreport_report_data: bytes | None = None
