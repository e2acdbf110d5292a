"""NVIDIA SPDM evidence: GET_MEASUREMENTS request + MEASUREMENTS response <-> typed objects.

Layouts follow DMTF DSP0274 (SPDM) version 1.1: tables "GET_MEASUREMENTS request message
format", "Successful MEASUREMENTS response message format", "Measurement block format" and
"DMTF measurement specification format". NVIDIA Hopper GPUs and LS10 NVSwitches answer
GET_MEASUREMENTS with SPDM 1.1; their evidence is the request the verifier sent followed
by the device's response, and the device signs SHA-384(request || response-without-
signature) with its attestation key (ECDSA P-384, raw r || s, 96 bytes).

Everything is parsed by structure: the measurement record by its length field, the opaque
data by its length field, the signature as the next ``signature_size`` bytes. Anything
after the signature is kept as ``trailing`` (one public vector carries one extra 0x00
byte); it is never part of the signed message.

The opaque data holds NVIDIA's type-length-value fields (u16 type, u16 length, both
little-endian). Field ids are listed in :class:`OpaqueFieldId`; values are decoded for
display in :func:`decode_opaque` and kept raw otherwise.

``to_bytes()`` is the inverse of parsing so tests build real-layout evidence. Signatures
are checked over the original bytes (``SpdmEvidence.signed_bytes``), never re-encoded.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from sealroom.errors import MalformedEvidenceError

SPDM_VERSION_1_1 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
NONCE_SIZE = 32
REQUEST_SIZE_SIGNED = 37  # version, code, param1, param2, nonce[32], SlotIDParam
REQUEST_SIZE_UNSIGNED = 4
RESPONSE_FIXED_HEAD = 8  # version, code, param1, param2, NumberOfBlocks, RecordLength[3]
# DSP0274 1.1: OpaqueLength "shall be less than or equal to 1024".
MAX_OPAQUE_LENGTH = 1024
# TPM_ALG_ECDSA_ECC_NIST_P384: r and s, 48 bytes each, big-endian.
ECDSA_P384_SIGNATURE_SIZE = 96
# Request Param1 bit 0: the requester asks for a signature (then nonce + slot follow).
PARAM1_SIGNATURE_REQUESTED = 0x01
# Request Param2: 0xFF = all measurement blocks, 0x00 = only their number.
MEASUREMENT_OPERATION_ALL = 0xFF
# Measurement block MeasurementSpecification bit 0: DMTF format.
MEASUREMENT_SPEC_DMTF = 0x01


class DmtfValueType(enum.IntEnum):
    """DMTFSpecMeasurementValueType bits [6:0] (DSP0274 1.1 table; 5-7 added by 1.2)."""

    IMMUTABLE_ROM = 0
    MUTABLE_FIRMWARE = 1
    HARDWARE_CONFIGURATION = 2
    FIRMWARE_CONFIGURATION = 3
    MEASUREMENT_MANIFEST = 4
    DEVICE_MODE = 5
    MUTABLE_FIRMWARE_VERSION = 6
    MUTABLE_FIRMWARE_SVN = 7


# Bit 7 of DMTFSpecMeasurementValueType: 1 = raw bit stream, 0 = digest.
DMTF_RAW_BIT_STREAM = 0x80


class OpaqueFieldId(enum.IntEnum):
    """NVIDIA opaque-data field ids, as published in NVIDIA's nvtrust verifiers.

    Ids 22-26 differ in name between the GPU and NVSwitch verifiers: 22 holds the PDIs
    (platform device identifiers) of the peers on a GPU and the device's own PDI on a
    switch; 23 is the switch's disabled (floor-swept) ports; 26 the GPU PDIs a switch sees.
    """

    CERT_ISSUER_NAME = 1
    CERT_AUTHORITY_KEY_IDENTIFIER = 2
    DRIVER_VERSION = 3
    GPU_INFO = 4
    SKU = 5
    VBIOS_VERSION = 6
    MANUFACTURER_ID = 7
    TAMPER_DETECTION = 8
    SMC = 9
    VPR = 10
    NVDEC0_STATUS = 11
    MSRSCNT = 12
    CPRINFO = 13
    BOARD_ID = 14
    CHIP_SKU = 15
    CHIP_SKU_MOD = 16
    PROJECT = 17
    PROJECT_SKU = 18
    PROJECT_SKU_MOD = 19
    FWID = 20
    PROTECTED_PCIE_STATUS = 21
    PDI = 22
    DISABLED_PORTS = 23
    POSITION_ID = 24
    LOCK_SWITCH_STATUS = 25
    SWITCH_GPU_PDIS = 26
    GPU_LINK_CONN = 32
    SYS_ENABLE_STATUS = 33
    OPAQUE_DATA_VERSION = 34
    CHIP_INFO = 35
    FEATURE_FLAG = 36
    INVALID = 255


def _u24(b: bytes) -> int:
    return int.from_bytes(b, "little")


@dataclass(frozen=True)
class MeasurementRequest:
    """GET_MEASUREMENTS (DSP0274 1.1): 37 bytes when a signature is requested, else 4."""

    version: int
    param1: int
    param2: int
    nonce: bytes | None
    slot_id: int | None

    @property
    def signature_requested(self) -> bool:
        return bool(self.param1 & PARAM1_SIGNATURE_REQUESTED)

    @classmethod
    def parse(cls, data: bytes) -> MeasurementRequest:
        if len(data) < REQUEST_SIZE_UNSIGNED:
            raise MalformedEvidenceError(
                f"GET_MEASUREMENTS request is {len(data)} bytes, need at least 4"
            )
        version, code, p1, p2 = data[0], data[1], data[2], data[3]
        if version != SPDM_VERSION_1_1:
            raise MalformedEvidenceError(
                f"request SPDMVersion is {version:#04x}, only 0x11 (SPDM 1.1) is supported",
                code="nvidia-spdm-version-unsupported",
            )
        if code != GET_MEASUREMENTS:
            raise MalformedEvidenceError(
                f"request RequestResponseCode is {code:#04x}, expected {GET_MEASUREMENTS:#04x} "
                "(GET_MEASUREMENTS)"
            )
        if not p1 & PARAM1_SIGNATURE_REQUESTED:
            return cls(version, p1, p2, None, None)
        if len(data) < REQUEST_SIZE_SIGNED:
            raise MalformedEvidenceError(
                f"signed GET_MEASUREMENTS request is {len(data)} bytes, need 37"
            )
        return cls(version, p1, p2, bytes(data[4:36]), data[36])

    @property
    def size(self) -> int:
        return REQUEST_SIZE_SIGNED if self.signature_requested else REQUEST_SIZE_UNSIGNED

    def to_bytes(self) -> bytes:
        head = bytes([self.version, GET_MEASUREMENTS, self.param1, self.param2])
        if not self.signature_requested:
            return head
        assert self.nonce is not None
        assert self.slot_id is not None
        return head + self.nonce + bytes([self.slot_id])


@dataclass(frozen=True)
class MeasurementBlock:
    """One measurement block in DMTF format (spec bit 0 set)."""

    index: int
    spec: int
    value_type: int  # DMTFSpecMeasurementValueType, bit 7 = raw bit stream
    value: bytes

    @property
    def raw_bit_stream(self) -> bool:
        return bool(self.value_type & DMTF_RAW_BIT_STREAM)

    @property
    def kind(self) -> DmtfValueType | None:
        try:
            return DmtfValueType(self.value_type & 0x7F)
        except ValueError:
            return None

    def to_bytes(self) -> bytes:
        dmtf = struct.pack("<BH", self.value_type, len(self.value)) + self.value
        return struct.pack("<BBH", self.index, self.spec, len(dmtf)) + dmtf


def parse_measurement_record(record: bytes, number_of_blocks: int) -> tuple[MeasurementBlock, ...]:
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    off = 0
    while off < len(record):
        if len(record) - off < 4:
            raise MalformedEvidenceError(
                f"measurement record: truncated block header at offset {off}"
            )
        index, spec, size = struct.unpack_from("<BBH", record, off)
        off += 4
        if size > len(record) - off:
            raise MalformedEvidenceError(
                f"measurement block {index}: MeasurementSize {size} exceeds the "
                f"{len(record) - off} bytes left in the record"
            )
        body = record[off : off + size]
        off += size
        if index in (0x00, 0xFF):
            raise MalformedEvidenceError(f"measurement block index {index:#04x} is reserved")
        if index in seen:
            raise MalformedEvidenceError(f"measurement block index {index} appears twice")
        seen.add(index)
        if spec != MEASUREMENT_SPEC_DMTF:
            raise MalformedEvidenceError(
                f"measurement block {index}: MeasurementSpecification is {spec:#04x}, "
                f"expected {MEASUREMENT_SPEC_DMTF:#04x} (DMTF)"
            )
        if size < 3:
            raise MalformedEvidenceError(
                f"measurement block {index}: MeasurementSize {size} < 3 (DMTF header)"
            )
        value_type, value_size = struct.unpack_from("<BH", body, 0)
        if value_size != size - 3:
            raise MalformedEvidenceError(
                f"measurement block {index}: DMTFSpecMeasurementValueSize {value_size} "
                f"!= MeasurementSize {size} - 3"
            )
        blocks.append(MeasurementBlock(index, spec, value_type, bytes(body[3:])))
    if len(blocks) != number_of_blocks:
        raise MalformedEvidenceError(
            f"NumberOfBlocks is {number_of_blocks}, measurement record holds {len(blocks)}"
        )
    return tuple(blocks)


@dataclass(frozen=True)
class OpaqueField:
    field_id: int
    value: bytes

    @property
    def name(self) -> str:
        try:
            return OpaqueFieldId(self.field_id).name.lower()
        except ValueError:
            return f"field_{self.field_id}"

    def to_bytes(self) -> bytes:
        return struct.pack("<HH", self.field_id, len(self.value)) + self.value


def parse_opaque_data(data: bytes) -> tuple[OpaqueField, ...]:
    """NVIDIA TLVs. Strict: every TLV must fit and no id may appear twice."""
    fields: list[OpaqueField] = []
    seen: set[int] = set()
    off = 0
    while off < len(data):
        if len(data) - off < 4:
            raise MalformedEvidenceError(f"opaque data: truncated field header at offset {off}")
        field_id, size = struct.unpack_from("<HH", data, off)
        off += 4
        if size > len(data) - off:
            raise MalformedEvidenceError(
                f"opaque data field {field_id}: length {size} exceeds the "
                f"{len(data) - off} bytes left"
            )
        if field_id in seen:
            raise MalformedEvidenceError(f"opaque data field {field_id} appears twice")
        seen.add(field_id)
        fields.append(OpaqueField(field_id, bytes(data[off : off + size])))
        off += size
    return tuple(fields)


@dataclass(frozen=True)
class MeasurementsResponse:
    """MEASUREMENTS (DSP0274 1.1) up to, not including, the signature."""

    version: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    nonce: bytes  # the responder's nonce
    opaque: tuple[OpaqueField, ...]

    def to_bytes(self) -> bytes:
        record = b"".join(b.to_bytes() for b in self.blocks)
        opaque = b"".join(f.to_bytes() for f in self.opaque)
        if len(record) >= 1 << 24 or len(opaque) > 0xFFFF:
            raise ValueError("measurement record or opaque data too long")
        return (
            bytes([self.version, MEASUREMENTS, self.param1, self.param2, len(self.blocks)])
            + len(record).to_bytes(3, "little")
            + record
            + self.nonce
            + struct.pack("<H", len(opaque))
            + opaque
        )

    def opaque_value(self, field_id: OpaqueFieldId) -> bytes | None:
        for f in self.opaque:
            if f.field_id == field_id:
                return f.value
        return None


@dataclass(frozen=True)
class SpdmEvidence:
    """Request || response as the device and the verifier exchanged them."""

    request: MeasurementRequest
    response: MeasurementsResponse
    signature: bytes  # empty when the request asked for none
    trailing: bytes = b""
    # The exact bytes the device signed: request || response-without-signature.
    signed_bytes: bytes = b""

    @property
    def nonce(self) -> bytes | None:
        """The verifier's nonce, as sent in the request (None if unsigned)."""
        return self.request.nonce

    def to_bytes(self) -> bytes:
        return self.request.to_bytes() + self.response.to_bytes() + self.signature + self.trailing

    @classmethod
    def build(
        cls,
        request: MeasurementRequest,
        response: MeasurementsResponse,
        signature: bytes = b"",
        trailing: bytes = b"",
    ) -> SpdmEvidence:
        signed = request.to_bytes() + response.to_bytes()
        return cls(request, response, signature, trailing, signed)


def parse_evidence(data: bytes, signature_size: int = ECDSA_P384_SIGNATURE_SIZE) -> SpdmEvidence:
    """Parse request || response || signature [|| trailing bytes]."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("data must be bytes")
    data = bytes(data)
    request = MeasurementRequest.parse(data)
    off = request.size
    resp = data[off:]
    if len(resp) < RESPONSE_FIXED_HEAD:
        raise MalformedEvidenceError(
            f"MEASUREMENTS response is {len(resp)} bytes, need at least {RESPONSE_FIXED_HEAD}"
        )
    version, code, p1, p2, nblocks = resp[0], resp[1], resp[2], resp[3], resp[4]
    if version != request.version:
        raise MalformedEvidenceError(
            f"response SPDMVersion is {version:#04x}, request was {request.version:#04x}"
        )
    if code != MEASUREMENTS:
        raise MalformedEvidenceError(
            f"response RequestResponseCode is {code:#04x}, expected {MEASUREMENTS:#04x} "
            "(MEASUREMENTS)"
        )
    record_len = _u24(resp[5:8])
    p = RESPONSE_FIXED_HEAD
    if record_len > len(resp) - p:
        raise MalformedEvidenceError(
            f"MeasurementRecordLength {record_len} exceeds the {len(resp) - p} bytes left"
        )
    blocks = parse_measurement_record(resp[p : p + record_len], nblocks)
    p += record_len
    if len(resp) - p < NONCE_SIZE + 2:
        raise MalformedEvidenceError("MEASUREMENTS response truncated before nonce/OpaqueLength")
    nonce = resp[p : p + NONCE_SIZE]
    p += NONCE_SIZE
    (opaque_len,) = struct.unpack_from("<H", resp, p)
    p += 2
    if opaque_len > MAX_OPAQUE_LENGTH:
        raise MalformedEvidenceError(
            f"OpaqueLength is {opaque_len}, SPDM 1.1 allows at most {MAX_OPAQUE_LENGTH}"
        )
    if opaque_len > len(resp) - p:
        raise MalformedEvidenceError(
            f"OpaqueLength {opaque_len} exceeds the {len(resp) - p} bytes left"
        )
    opaque = parse_opaque_data(resp[p : p + opaque_len])
    p += opaque_len
    signed_end = off + p
    sig_size = signature_size if request.signature_requested else 0
    if len(resp) - p < sig_size:
        raise MalformedEvidenceError(
            f"signature truncated: {len(resp) - p} bytes after the opaque data, need {sig_size}"
        )
    signature = resp[p : p + sig_size]
    trailing = resp[p + sig_size :]
    response = MeasurementsResponse(version, p1, p2, blocks, nonce, opaque)
    return SpdmEvidence(request, response, signature, trailing, data[:signed_end])


# --- opaque-data values, decoded for display and policy ------------------------------------

_TEXT_FIELDS = frozenset(
    {
        OpaqueFieldId.DRIVER_VERSION,
        OpaqueFieldId.CHIP_SKU,
        OpaqueFieldId.CHIP_SKU_MOD,
        OpaqueFieldId.PROJECT,
        OpaqueFieldId.PROJECT_SKU,
        OpaqueFieldId.PROJECT_SKU_MOD,
        OpaqueFieldId.CHIP_INFO,
    }
)
_UINT_FIELDS = frozenset(
    {
        OpaqueFieldId.BOARD_ID,
        OpaqueFieldId.OPAQUE_DATA_VERSION,
        OpaqueFieldId.POSITION_ID,
        OpaqueFieldId.LOCK_SWITCH_STATUS,
        OpaqueFieldId.DISABLED_PORTS,
    }
)
_PDI_FIELDS = frozenset({OpaqueFieldId.PDI, OpaqueFieldId.SWITCH_GPU_PDIS})
_PDI_SIZE = 8
# NVIDIA's verifiers define NVDEC0 status as 0xAA enabled / 0x55 disabled; the protected
# PCIe status uses the same pair (0xAA in the PPCIe-mode 8xH100 vector, 0x55 elsewhere).
_STATUS_FIELDS = frozenset({OpaqueFieldId.NVDEC0_STATUS, OpaqueFieldId.PROTECTED_PCIE_STATUS})
_STATUS_NAMES = {0xAA: "enabled", 0x55: "disabled"}
# FEATURE_FLAG: single-GPU passthrough, multi-GPU passthrough, protected PCIe.
_FEATURE_FLAGS = {0: "SPT", 1: "MPT", 2: "PPCIE"}


def _text(value: bytes, what: str) -> str:
    head = value.split(b"\x00", 1)[0]
    if any(c < 0x20 or c > 0x7E for c in head):
        raise MalformedEvidenceError(f"opaque data {what} is not printable ASCII: {value.hex()}")
    return head.decode("ascii")


def format_vbios_version(value: bytes) -> str:
    """VBIOS version as NVIDIA writes it: ``96.00.9F.00.01``.

    GPUs send 8 bytes: a little-endian u32 (96 00 9F 00 read from byte 3 down to byte 0)
    followed by the OEM byte; NVSwitches send the dotted text itself.
    """
    if len(value) == 8:
        return ".".join(f"{b:02X}" for b in (value[3], value[2], value[1], value[0], value[4]))
    text = _text(value, "VBIOS_VERSION")
    parts = text.split(".")
    if len(parts) == 5 and all(len(p) == 2 for p in parts):
        try:
            return ".".join(f"{int(p, 16):02X}" for p in parts)
        except ValueError:
            pass
    raise MalformedEvidenceError(f"opaque data VBIOS_VERSION is not a version: {value.hex()}")


def decode_opaque_field(f: OpaqueField) -> str:
    """One field's value as text: strings, numbers, lists joined by ','; else hex."""
    try:
        fid: OpaqueFieldId | None = OpaqueFieldId(f.field_id)
    except ValueError:
        fid = None
    v = f.value
    if fid is None:
        return v.hex()
    if fid in _TEXT_FIELDS:
        return _text(v, fid.name)
    if fid is OpaqueFieldId.VBIOS_VERSION:
        return format_vbios_version(v)
    if fid in _UINT_FIELDS and 1 <= len(v) <= 8:
        return str(int.from_bytes(v, "little"))
    if fid is OpaqueFieldId.FEATURE_FLAG and 1 <= len(v) <= 8:
        n = int.from_bytes(v, "little")
        return _FEATURE_FLAGS.get(n, str(n))
    if fid in _STATUS_FIELDS and len(v) == 1:
        return _STATUS_NAMES.get(v[0], f"{v[0]:#04x}")
    if fid is OpaqueFieldId.MSRSCNT and len(v) % 4 == 0:
        return ",".join(str(n) for (n,) in struct.iter_unpack("<I", v))
    if fid in _PDI_FIELDS and len(v) % _PDI_SIZE == 0:
        return ",".join(v[i : i + _PDI_SIZE].hex() for i in range(0, len(v), _PDI_SIZE))
    return v.hex()


def decode_opaque(fields: tuple[OpaqueField, ...]) -> dict[str, str]:
    return {f.name: decode_opaque_field(f) for f in fields}
