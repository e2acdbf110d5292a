"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1).

Layout per Intel "SGX PCK Certificate and Certificate Revocation List Profile
Specification", section "Intel SGX PCK Certificate - Extensions": a SEQUENCE of
(OID, value) pairs, of which verification needs

    .1  PPID          OCTET STRING (16)
    .2  TCB           SEQUENCE of (OID .2.1 .. .2.16 INTEGER component SVN,
                                   .2.17 INTEGER PCESVN, .2.18 OCTET STRING CPUSVN)
    .3  PCE-ID        OCTET STRING (2)
    .4  FMSPC         OCTET STRING (6)
    .5  SGX Type      ENUMERATED (0 Standard, 1 Scalable, 2 Scalable with integrity)

cryptography exposes the extension's DER as ``UnrecognizedExtension.value``; the few
DER forms above are walked with the strict reader in ``sealroom.attestation.der``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from sealroom.attestation import der
from sealroom.errors import MalformedEvidenceError

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_BASE = "1.2.840.113741.1.13.1"

_CODE = "tdx-pck-extension"
_WHAT = "PCK certificate SGX extension"


def _bad(msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"{_WHAT}: {msg}", code=_CODE)


def _int(tlv: der.Tlv, what: str) -> int:
    n = der.read_int(tlv, f"{_WHAT}: {what}", code=_CODE)
    if n < 0:
        raise _bad(f"{what} is negative")
    return n


def _pairs(seq_value: bytes, what: str) -> dict[str, der.Tlv]:
    out: dict[str, der.Tlv] = {}
    for item in der.read_tlvs(seq_value, f"{_WHAT}: {what}", code=_CODE):
        if item.tag != der.SEQUENCE:
            raise _bad(f"{what}: entry is not a SEQUENCE")
        inner = der.read_tlvs(item.value, f"{_WHAT}: {what}", code=_CODE)
        if len(inner) != 2 or inner[0].tag != der.OID:
            raise _bad(f"{what}: entry is not (OID, value)")
        oid = der.read_oid(inner[0], f"{_WHAT}: {what}", code=_CODE)
        if oid in out:
            raise _bad(f"{what}: {oid} appears twice")
        out[oid] = inner[1]
    return out


@dataclass(frozen=True)
class PckExtension:
    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int


def parse_sgx_extension(cert: x509.Certificate) -> PckExtension:
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID)
    except x509.ExtensionNotFound as e:
        raise _bad("absent (is this a PCK certificate?)") from e
    except ValueError as e:  # duplicate or undecodable extensions
        raise _bad(str(e)) from e
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _bad("unexpected decoded type")
    return parse_sgx_extension_der(value.value)


def parse_sgx_extension_der(ext_der: bytes) -> PckExtension:
    """The extension value (DER of the outer SEQUENCE)."""
    top = der.read_one(ext_der, _WHAT, code=_CODE)
    if top.tag != der.SEQUENCE:
        raise _bad("not a single SEQUENCE")
    entries = _pairs(top.value, "extension")

    def get(n: str, tag: int, size: int | None) -> bytes:
        key = f"{_BASE}.{n}"
        if key not in entries:
            raise _bad(f"{key} missing")
        t, v = entries[key]
        if t != tag or (size is not None and len(v) != size):
            raise _bad(f"{key} has tag {t:#x} / {len(v)} bytes, expected {tag:#x} / {size}")
        return v

    ppid = get("1", der.OCTET_STRING, 16)
    tcb = _pairs(get("2", der.SEQUENCE, None), "TCB")
    comps = []
    for i in range(1, 17):
        key = f"{_BASE}.2.{i}"
        if key not in tcb:
            raise _bad(f"TCB component {key} missing")
        comps.append(_int(tcb[key], f"TCB component {i}"))
    if any(c > 255 for c in comps):
        raise _bad("a TCB component SVN is above 255")
    pce_key = f"{_BASE}.2.17"
    cpu_key = f"{_BASE}.2.18"
    if pce_key not in tcb or cpu_key not in tcb:
        raise _bad("PCESVN or CPUSVN missing")
    pce_svn = _int(tcb[pce_key], "PCESVN")
    if pce_svn > 0xFFFF:
        raise _bad("PCESVN is above 65535")
    ctag, cpu_svn = tcb[cpu_key]
    if ctag != der.OCTET_STRING or len(cpu_svn) != 16:
        raise _bad("CPUSVN must be a 16-byte OCTET STRING")
    pce_id = get("3", der.OCTET_STRING, 2)
    fmspc = get("4", der.OCTET_STRING, 6)
    sgx_type = _int(entries.get(f"{_BASE}.5", der.Tlv(der.ENUMERATED, b"\x00")), "SGX Type")
    return PckExtension(ppid, tuple(comps), pce_svn, cpu_svn, pce_id, fmspc, sgx_type)
