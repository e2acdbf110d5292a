"""go-tpm-tools ``attest.Attestation`` (GCE Shielded VM vTPM evidence), read from the wire.

Schema (go-tpm-tools ``proto/attest.proto`` and ``proto/tpm.proto``), the fields used::

    Attestation { bytes ak_pub = 1;            // TPMT_PUBLIC
                  repeated Quote quotes = 2;
                  bytes event_log = 3;          // TCG event log, raw
                  GCEInstanceInfo instance_info = 4;
                  bytes canonical_event_log = 5;
                  bytes ak_cert = 6;            // DER
                  repeated bytes intermediate_certs = 7;
                  oneof tee_attestation { ... = 8; ... = 9; } }
    Quote { bytes quote = 1; bytes raw_sig = 2; PCRs pcrs = 3; }   // TPMS_ATTEST, TPMT_SIGNATURE
    PCRs  { HashAlgo hash = 1; map<uint32, bytes> pcrs = 2; }
    GCEInstanceInfo { string zone = 1; string project_id = 2; uint64 project_number = 3;
                      string instance_name = 4; uint64 instance_id = 5; }

Unknown fields are ignored (protobuf semantics); known fields with the wrong wire type,
repeated singular fields and duplicate PCR indices are MalformedEvidenceError. Only the
structure is checked here; the TPM structures inside are parsed by ``abi.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sealroom.attestation.tpm.abi import HASH_SIZES, alg_name
from sealroom.attestation.tpm.protowire import Message, encode_field
from sealroom.errors import MalformedEvidenceError

MAX_PCR_INDEX = 31


@dataclass(frozen=True)
class GceQuote:
    attest: bytes
    signature: bytes
    pcr_hash: int
    pcrs: Mapping[int, bytes]

    def to_bytes(self) -> bytes:
        pcrs = encode_field(1, self.pcr_hash) + b"".join(
            encode_field(2, encode_field(1, k) + encode_field(2, v))
            for k, v in sorted(self.pcrs.items())
        )
        return (
            encode_field(1, self.attest) + encode_field(2, self.signature) + encode_field(3, pcrs)
        )


@dataclass(frozen=True)
class GceInstanceInfo:
    zone: str
    project_id: str
    project_number: int
    instance_name: str
    instance_id: int


@dataclass(frozen=True)
class GceAttestation:
    ak_pub: bytes
    quotes: tuple[GceQuote, ...]
    event_log: bytes = b""
    instance_info: GceInstanceInfo | None = None
    canonical_event_log: bytes = b""
    ak_cert: bytes = b""
    intermediate_certs: tuple[bytes, ...] = field(default=())
    #: A TEE attestation (SEV-SNP or TDX) is present; sealroom does not read it from here.
    has_tee_attestation: bool = False

    def to_bytes(self) -> bytes:
        out = encode_field(1, self.ak_pub)
        out += b"".join(encode_field(2, q.to_bytes()) for q in self.quotes)
        if self.event_log:
            out += encode_field(3, self.event_log)
        if self.instance_info is not None:
            i = self.instance_info
            out += encode_field(
                4,
                encode_field(1, i.zone.encode())
                + encode_field(2, i.project_id.encode())
                + encode_field(3, i.project_number)
                + encode_field(4, i.instance_name.encode())
                + encode_field(5, i.instance_id),
            )
        if self.canonical_event_log:
            out += encode_field(5, self.canonical_event_log)
        if self.ak_cert:
            out += encode_field(6, self.ak_cert)
        out += b"".join(encode_field(7, c) for c in self.intermediate_certs)
        return out


def _bad(msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"GCE attestation: {msg}", code="gce-attestation-invalid")


def _quote(data: bytes, n: int) -> GceQuote:
    m = Message(data, f"GCE attestation quotes[{n}]")
    attest = m.bytes_(1, "quote")
    sig = m.bytes_(2, "raw_sig")
    if not attest or not sig:
        raise _bad(f"quotes[{n}] lacks the quote or its signature")
    if not m.has(3):
        raise _bad(f"quotes[{n}] carries no PCR values")
    p = Message(m.bytes_(3, "pcrs"), f"GCE attestation quotes[{n}].pcrs")
    alg = p.uint(1, "hash")
    size = HASH_SIZES.get(alg)
    if size is None:
        raise _bad(f"quotes[{n}].pcrs.hash is {alg_name(alg)}, not a hash algorithm")
    values: dict[int, bytes] = {}
    for entry in p.repeated_bytes(2, "pcrs"):
        e = Message(entry, f"GCE attestation quotes[{n}].pcrs entry")
        idx = e.uint(1, "key")
        val = e.bytes_(2, "value")
        if idx > MAX_PCR_INDEX:
            raise _bad(f"quotes[{n}].pcrs has PCR index {idx}, at most {MAX_PCR_INDEX} allowed")
        if idx in values:
            raise _bad(f"quotes[{n}].pcrs lists PCR {idx} twice")
        if len(val) != size:
            raise _bad(
                f"quotes[{n}].pcrs[{idx}] is {len(val)} bytes, a {alg_name(alg)} PCR is {size}"
            )
        values[idx] = val
    return GceQuote(attest, sig, alg, MappingProxyType(dict(sorted(values.items()))))


def parse_gce_attestation(data: bytes) -> GceAttestation:
    m = Message(data, "GCE attestation")
    ak_pub = m.bytes_(1, "ak_pub")
    if not ak_pub:
        raise _bad("ak_pub is empty")
    quotes = tuple(_quote(q, n) for n, q in enumerate(m.repeated_bytes(2, "quotes")))
    if not quotes:
        raise _bad("holds no quotes")
    info = None
    if m.has(4):
        i = Message(m.bytes_(4, "instance_info"), "GCE attestation instance_info")
        info = GceInstanceInfo(
            zone=i.string(1, "zone"),
            project_id=i.string(2, "project_id"),
            project_number=i.uint(3, "project_number"),
            instance_name=i.string(4, "instance_name"),
            instance_id=i.uint(5, "instance_id"),
        )
    return GceAttestation(
        ak_pub=ak_pub,
        quotes=quotes,
        event_log=m.bytes_(3, "event_log"),
        instance_info=info,
        canonical_event_log=m.bytes_(5, "canonical_event_log"),
        ak_cert=m.bytes_(6, "ak_cert"),
        intermediate_certs=tuple(m.repeated_bytes(7, "intermediate_certs")),
        has_tee_attestation=m.has(8) or m.has(9),
    )


def looks_like_gce_attestation(data: bytes) -> bool:
    """Cheap recognition: field 1 (ak_pub) then field 2 (a quote starting TPM_GENERATED)."""
    if not data.startswith(b"\x0a"):
        return False
    try:
        m = Message(data, "GCE attestation")
        quotes = m.repeated_bytes(2, "quotes")
        if not quotes:
            return False
        q = Message(quotes[0], "quote")
        return q.bytes_(1, "quote").startswith(b"\xff\x54\x43\x47")
    except MalformedEvidenceError:
        return False
