"""One strict DER reader and writer for the few ASN.1 forms the verifiers walk themselves.

pyca/cryptography parses whole certificates and CRLs; what it hands back undecoded is
walked here: AMD VCEK/VLEK extension values (SNP), the Intel SGX extension of a PCK
certificate (TDX), NVIDIA's TCG DICE TcbInfo and device-name otherName, and the RSASSA-PSS
parameters of AMD's signatures. ITU-T X.690 (DER) rules enforced here:

- identifier: low-tag-number form only (tag number < 31; no multi-byte tags are used by
  any of the structures above);
- length: definite form only (0x80, indefinite, is refused); the short form for lengths
  below 128, and in the long form the fewest octets (no leading zero octet, never the long
  form for a length below 128), at most 4 length octets;
- INTEGER and ENUMERATED: at least one content octet, minimal two's complement (no
  redundant leading 0x00 or 0xFF octet);
- OBJECT IDENTIFIER: non-empty, each sub-identifier in the fewest base-128 octets (no
  leading 0x80 octet), the last one complete;
- a read consumes exactly the bytes it is given: trailing bytes are an error.

Whatever this module accepts, :func:`encode_tlv` re-encodes to the same bytes (the
property tests check it). Every failure is a :class:`MalformedEvidenceError`.
"""

from __future__ import annotations

from typing import NamedTuple

from sealroom.errors import MalformedEvidenceError

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
ENUMERATED = 0x0A
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
IA5_STRING = 0x16
SEQUENCE = 0x30

MAX_LENGTH_OCTETS = 4


class Tlv(NamedTuple):
    tag: int  # the whole identifier octet (class, constructed bit, tag number)
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _bad(what: str, msg: str, code: str | None) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"{what}: {msg}", code=code)


def _read_at(data: bytes, off: int, what: str, code: str | None) -> tuple[Tlv, int]:
    """One TLV starting at ``off``; returns it and the offset after it."""
    if len(data) - off < 2:
        raise _bad(what, f"truncated DER header at offset {off}", code)
    tag = data[off]
    if tag & 0x1F == 0x1F:
        raise _bad(what, f"multi-byte DER tag {tag:#04x} at offset {off} is not expected", code)
    first = data[off + 1]
    off += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise _bad(what, f"indefinite DER length at offset {off - 1} (BER, not DER)", code)
    else:
        n = first & 0x7F
        if n > MAX_LENGTH_OCTETS:
            raise _bad(what, f"DER length uses {n} octets, at most {MAX_LENGTH_OCTETS}", code)
        if len(data) - off < n:
            raise _bad(what, "truncated DER length", code)
        raw = data[off : off + n]
        if raw[0] == 0:
            raise _bad(what, f"non-minimal DER length {raw.hex()} (leading zero octet)", code)
        length = int.from_bytes(raw, "big")
        if length < 0x80:
            raise _bad(what, f"non-minimal DER length: {length} in the long form", code)
        off += n
    if length > len(data) - off:
        raise _bad(what, f"DER length {length} exceeds the {len(data) - off} bytes left", code)
    return Tlv(tag, data[off : off + length]), off + length


def read_tlvs(data: bytes, what: str, *, code: str | None = None) -> list[Tlv]:
    """Every TLV in ``data``, which they must fill exactly."""
    data = bytes(data)
    out: list[Tlv] = []
    off = 0
    while off < len(data):
        tlv, off = _read_at(data, off, what, code)
        out.append(tlv)
    return out


def read_one(data: bytes, what: str, *, tag: int | None = None, code: str | None = None) -> Tlv:
    """Exactly one TLV spanning all of ``data`` (and of ``tag``, when given)."""
    data = bytes(data)
    tlv, end = _read_at(data, 0, what, code)
    if end != len(data):
        raise _bad(what, f"{len(data) - end} trailing bytes after the DER value", code)
    if tag is not None and tlv.tag != tag:
        raise _bad(what, f"DER tag is {tlv.tag:#04x}, expected {tag:#04x}", code)
    return tlv


def read_int(tlv: Tlv, what: str, *, code: str | None = None) -> int:
    """An INTEGER or ENUMERATED in minimal two's complement."""
    if tlv.tag not in (INTEGER, ENUMERATED):
        raise _bad(what, f"DER tag is {tlv.tag:#04x}, expected an INTEGER", code)
    v = tlv.value
    if not v:
        raise _bad(what, "empty DER INTEGER", code)
    if len(v) > 1 and ((v[0] == 0 and v[1] < 0x80) or (v[0] == 0xFF and v[1] >= 0x80)):
        raise _bad(what, f"non-minimal DER INTEGER {v.hex()}", code)
    return int.from_bytes(v, "big", signed=True)


def read_oid(tlv: Tlv, what: str, *, code: str | None = None) -> str:
    """An OBJECT IDENTIFIER as dotted text."""
    if tlv.tag != OID:
        raise _bad(what, f"DER tag is {tlv.tag:#04x}, expected an OBJECT IDENTIFIER", code)
    v = tlv.value
    if not v:
        raise _bad(what, "empty OBJECT IDENTIFIER", code)
    if v[-1] & 0x80:
        raise _bad(what, "truncated OBJECT IDENTIFIER", code)
    subids: list[int] = []
    acc = 0
    start = True
    for b in v:
        if start and b == 0x80:
            raise _bad(what, f"non-minimal OBJECT IDENTIFIER sub-identifier in {v.hex()}", code)
        acc = acc << 7 | (b & 0x7F)
        start = not b & 0x80
        if start:
            subids.append(acc)
            acc = 0
    first = subids[0]
    arcs = [first // 40, first % 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in arcs + subids[1:])


def sequence(data: bytes, what: str, *, code: str | None = None) -> list[Tlv]:
    """The elements of the single SEQUENCE that is ``data``."""
    return read_tlvs(read_one(data, what, tag=SEQUENCE, code=code).value, what, code=code)


# ---- writers (for fakes, the sim authority and round-trip tests) ----------------------


def encode_length(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative DER length")
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_LENGTH_OCTETS:
        raise ValueError(f"DER value of {n} bytes is too long")
    return bytes([0x80 | len(raw)]) + raw


def encode_tlv(tag: int, value: bytes) -> bytes:
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise ValueError(f"DER tag {tag:#x} is not a low-tag-number identifier octet")
    return bytes([tag]) + encode_length(len(value)) + value


def encode_int(n: int, tag: int = INTEGER) -> bytes:
    size = (n if n >= 0 else ~n).bit_length() // 8 + 1  # minimal two's complement
    return encode_tlv(tag, n.to_bytes(size, "big", signed=True))


def encode_oid(dotted: str) -> bytes:
    arcs = [int(p) for p in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not an OBJECT IDENTIFIER: {dotted!r}")
    body = b""
    for subid in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [subid & 0x7F]
        subid >>= 7
        while subid:
            chunk.append(0x80 | (subid & 0x7F))
            subid >>= 7
        body += bytes(reversed(chunk))
    return encode_tlv(OID, body)


def encode_ia5(text: str) -> bytes:
    return encode_tlv(IA5_STRING, text.encode("ascii"))


def encode_sequence(*items: bytes) -> bytes:
    return encode_tlv(SEQUENCE, b"".join(items))
