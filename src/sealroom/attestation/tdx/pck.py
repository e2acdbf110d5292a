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
DER forms above are walked here by a small TLV reader (no third-party ASN.1 library).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from sealroom.errors import MalformedEvidenceError

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_BASE = "1.2.840.113741.1.13.1"

_SEQUENCE = 0x30
_OID = 0x06
_OCTET_STRING = 0x04
_INTEGER = 0x02
_ENUMERATED = 0x0A


def _bad(msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"PCK certificate SGX extension: {msg}", code="tdx-pck-extension")


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Split ``data`` into (tag, value) pairs; definite lengths only (DER)."""
    out = []
    off = 0
    while off < len(data):
        if off + 2 > len(data):
            raise _bad("truncated TLV header")
        tag = data[off]
        if tag & 0x1F == 0x1F:
            raise _bad("multi-byte tags are not used by this extension")
        first = data[off + 1]
        off += 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > 4 or off + n > len(data):
                raise _bad("bad length encoding")
            length = int.from_bytes(data[off : off + n], "big")
            off += n
        if off + length > len(data):
            raise _bad("value runs past the end")
        out.append((tag, data[off : off + length]))
        off += length
    return out


def _oid(value: bytes) -> str:
    if not value:
        raise _bad("empty OID")
    parts = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for b in value[1:]:
        acc = acc << 7 | (b & 0x7F)
        if not b & 0x80:
            parts.append(acc)
            acc = 0
    if value[-1] & 0x80:
        raise _bad("truncated OID")
    return ".".join(str(p) for p in parts)


def _int(tag: int, value: bytes, what: str) -> int:
    if tag not in (_INTEGER, _ENUMERATED) or not value:
        raise _bad(f"{what} must be an INTEGER")
    n = int.from_bytes(value, "big", signed=True)
    if n < 0:
        raise _bad(f"{what} is negative")
    return n


def _pairs(seq_value: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for tag, item in _tlvs(seq_value):
        if tag != _SEQUENCE:
            raise _bad(f"{what}: entry is not a SEQUENCE")
        inner = _tlvs(item)
        if len(inner) != 2 or inner[0][0] != _OID:
            raise _bad(f"{what}: entry is not (OID, value)")
        oid = _oid(inner[0][1])
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


def parse_sgx_extension_der(der: bytes) -> PckExtension:
    """The extension value (DER of the outer SEQUENCE)."""
    top = _tlvs(der)
    if len(top) != 1 or top[0][0] != _SEQUENCE:
        raise _bad("not a single SEQUENCE")
    entries = _pairs(top[0][1], "extension")

    def get(n: str, tag: int, size: int | None) -> bytes:
        key = f"{_BASE}.{n}"
        if key not in entries:
            raise _bad(f"{key} missing")
        t, v = entries[key]
        if t != tag or (size is not None and len(v) != size):
            raise _bad(f"{key} has tag {t:#x} / {len(v)} bytes, expected {tag:#x} / {size}")
        return v

    ppid = get("1", _OCTET_STRING, 16)
    tcb = _pairs(get("2", _SEQUENCE, None), "TCB")
    comps = []
    for i in range(1, 17):
        key = f"{_BASE}.2.{i}"
        if key not in tcb:
            raise _bad(f"TCB component {key} missing")
        comps.append(_int(*tcb[key], f"TCB component {i}"))
    if any(c > 255 for c in comps):
        raise _bad("a TCB component SVN is above 255")
    pce_key = f"{_BASE}.2.17"
    cpu_key = f"{_BASE}.2.18"
    if pce_key not in tcb or cpu_key not in tcb:
        raise _bad("PCESVN or CPUSVN missing")
    pce_svn = _int(*tcb[pce_key], "PCESVN")
    if pce_svn > 0xFFFF:
        raise _bad("PCESVN is above 65535")
    ctag, cpu_svn = tcb[cpu_key]
    if ctag != _OCTET_STRING or len(cpu_svn) != 16:
        raise _bad("CPUSVN must be a 16-byte OCTET STRING")
    pce_id = get("3", _OCTET_STRING, 2)
    fmspc = get("4", _OCTET_STRING, 6)
    stag, sval = entries.get(f"{_BASE}.5", (_ENUMERATED, b"\x00"))
    sgx_type = _int(stag, sval, "SGX Type")
    return PckExtension(ppid, tuple(comps), pce_svn, cpu_svn, pce_id, fmspc, sgx_type)
