"""A minimal, strict reader of the protobuf wire format (no schema compiler, no dependency).

Only what the evidence formats here need: varint (wire type 0), 64-bit (1),
length-delimited (2) and 32-bit (5) fields. Groups (3, 4), field number 0, over-long
varints and truncated fields are MalformedEvidenceError. Mapping fields to meaning is the
caller's job (see ``gce.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sealroom.errors import MalformedEvidenceError

VARINT, I64, LEN, I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Field:
    number: int
    wire_type: int
    value: int | bytes


def _err(what: str, msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"{what}: {msg}", code="protobuf-invalid")


def _varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise _err(what, f"varint truncated at offset {pos}")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >= 1 << 64:
                raise _err(what, "varint exceeds 64 bits")
            return result, pos
    raise _err(what, "varint longer than 10 bytes")


def parse_message(data: bytes, what: str) -> list[Field]:
    """Every field of one message, in wire order."""
    out: list[Field] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos, what)
        number, wt = key >> 3, key & 7
        if number == 0 or number > (1 << 29) - 1:
            raise _err(what, f"invalid field number {number}")
        value: int | bytes
        if wt == VARINT:
            value, pos = _varint(data, pos, what)
        elif wt == LEN:
            size, pos = _varint(data, pos, what)
            if size > len(data) - pos:
                raise _err(what, f"field {number} claims {size} bytes, {len(data) - pos} left")
            value = bytes(data[pos : pos + size])
            pos += size
        elif wt in (I64, I32):
            n = 8 if wt == I64 else 4
            if pos + n > len(data):
                raise _err(what, f"field {number} truncated")
            value = int.from_bytes(data[pos : pos + n], "little")
            pos += n
        else:
            raise _err(what, f"field {number} has unsupported wire type {wt}")
        out.append(Field(number, wt, value))
    return out


def _as_bytes(v: int | bytes) -> bytes:
    if not isinstance(v, bytes):
        raise TypeError("length-delimited field without bytes")
    return v


class Message:
    """Typed access to one parsed message by field number, checking wire types."""

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        self.fields = parse_message(data, what)

    def _all(self, number: int, wt: int, name: str) -> list[Field]:
        found = [f for f in self.fields if f.number == number]
        for f in found:
            if f.wire_type != wt:
                raise _err(
                    self.what,
                    f"{name} (field {number}) has wire type {f.wire_type}, expected {wt}",
                )
        return found

    def _one(self, number: int, wt: int, name: str) -> Field | None:
        found = self._all(number, wt, name)
        if len(found) > 1:
            raise _err(self.what, f"{name} (field {number}) appears {len(found)} times")
        return found[0] if found else None

    def bytes_(self, number: int, name: str, default: bytes = b"") -> bytes:
        f = self._one(number, LEN, name)
        return default if f is None else _as_bytes(f.value)

    def has(self, number: int) -> bool:
        return any(f.number == number for f in self.fields)

    def repeated_bytes(self, number: int, name: str) -> list[bytes]:
        return [_as_bytes(f.value) for f in self._all(number, LEN, name)]

    def uint(self, number: int, name: str, default: int = 0) -> int:
        f = self._one(number, VARINT, name)
        return default if f is None else int(f.value)

    def string(self, number: int, name: str) -> str:
        raw = self.bytes_(number, name)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _err(self.what, f"{name} (field {number}) is not UTF-8") from e


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_field(number: int, value: int | bytes) -> bytes:
    """One field: an int as a varint, bytes as length-delimited."""
    if isinstance(value, bytes):
        return encode_varint(number << 3 | LEN) + encode_varint(len(value)) + value
    return encode_varint(number << 3 | VARINT) + encode_varint(value)
