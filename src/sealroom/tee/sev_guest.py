"""SEV-SNP evidence from ``/dev/sev-guest`` (SNP_GET_REPORT / SNP_GET_EXT_REPORT ioctls).

For kernels without configfs-tsm (before v6.7) or where configfs is not mounted. The
structures are the Linux UAPI ones (include/uapi/linux/sev-guest.h), x86-64 layout:

    struct snp_report_req          { u8 user_data[64]; u32 vmpl; u8 rsvd[28]; }      96 bytes
    struct snp_ext_report_req      { snp_report_req data; u64 certs_address;
                                     u32 certs_len; /* pad 4 */ }                    112 bytes
    struct snp_report_resp         { u8 data[4000]; }
    struct snp_guest_request_ioctl { u8 msg_version; /* pad 7 */ u64 req_data;
                                     u64 resp_data; u64 exitinfo2; }                  32 bytes

``resp.data`` holds the firmware's MSG_REPORT_RSP (SEV-SNP Firmware ABI #56860, table
"MSG_REPORT_RSP Message Structure"): STATUS (u32), REPORT_SIZE (u32), 24 reserved bytes,
then the report. ``exitinfo2`` carries the firmware error (bits 31:0) and the VMM error
(bits 63:32; 1 = certificate buffer too small, the kernel then writes the needed size back
into ``certs_len``; 2 = busy). The certificate buffer is the GHCB certificate table, passed
on as ``attachments["certtable"]`` like configfs-tsm's auxblob.

The ioctl goes through an injectable callable (default ``fcntl.ioctl``) so the struct
encoding and error mapping are tested against a fake driver that reads and writes the
buffers through the same pointers the kernel would.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.snp.abi import REPORT_SIZE, parse_report
from sealroom.attestation.snp.certs import parse_cert_table
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    UnavailableError,
)
from sealroom.tee.base import require_report_data

DEFAULT_DEVICE = Path("/dev/sev-guest")

# ---- include/uapi/linux/sev-guest.h --------------------------------------------------

SNP_REPORT_USER_DATA_SIZE = 64
REPORT_REQ = struct.Struct("<64sI28s")  # snp_report_req
EXT_REPORT_REQ = struct.Struct("<96sQI4x")  # snp_ext_report_req
GUEST_REQUEST_IOCTL = struct.Struct("<B7xQQQ")  # snp_guest_request_ioctl
REPORT_RESP_SIZE = 4000  # snp_report_resp.data
MSG_REPORT_RSP_HEADER = struct.Struct("<II24x")  # STATUS, REPORT_SIZE, reserved

_IOC_WRITE, _IOC_READ = 1, 2
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30


def _iowr(ioc_type: int, nr: int, size: int) -> int:
    """Linux ``_IOWR(type, nr, size)`` (asm-generic/ioctl.h)."""
    return (
        ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT)
        | (size << _IOC_SIZESHIFT)
        | (ioc_type << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
    )


SNP_GUEST_REQ_IOC_TYPE = ord("S")
SNP_GET_REPORT = _iowr(SNP_GUEST_REQ_IOC_TYPE, 0x0, GUEST_REQUEST_IOCTL.size)
SNP_GET_DERIVED_KEY = _iowr(SNP_GUEST_REQ_IOC_TYPE, 0x1, GUEST_REQUEST_IOCTL.size)
SNP_GET_EXT_REPORT = _iowr(SNP_GUEST_REQ_IOC_TYPE, 0x2, GUEST_REQUEST_IOCTL.size)

SNP_GUEST_VMM_ERR_INVALID_LEN = 1
SNP_GUEST_VMM_ERR_BUSY = 2
PAGE_SIZE = 4096
SEV_FW_BLOB_MAX_SIZE = 0x4000  # the driver's largest certificate buffer

# MSG_REPORT_RSP STATUS values (psp-sev.h sev_ret_code)
SEV_RET_INVALID_PARAM = 0x16
SEV_RET_INVALID_KEY = 0x27

_CERT_ENTRY = struct.Struct("<16sII")

IoctlFn = Callable[[int, int, bytearray], object]


def _default_ioctl(fd: int, request: int, arg: bytearray) -> object:
    return fcntl.ioctl(fd, request, arg, True)


# ---- encoding ---------------------------------------------------------------------------


def encode_report_req(user_data: bytes, vmpl: int) -> bytes:
    if len(user_data) != SNP_REPORT_USER_DATA_SIZE:
        raise ValueError(f"user_data must be {SNP_REPORT_USER_DATA_SIZE} bytes")
    return REPORT_REQ.pack(user_data, vmpl, bytes(28))


def encode_ext_report_req(user_data: bytes, vmpl: int, certs_address: int, certs_len: int) -> bytes:
    return EXT_REPORT_REQ.pack(encode_report_req(user_data, vmpl), certs_address, certs_len)


def encode_guest_request(msg_version: int, req_data: int, resp_data: int) -> bytearray:
    # exitinfo2 starts as 0xff, as the kernel's own configfs path does: a driver that
    # returns without touching it is recognisable.
    return bytearray(GUEST_REQUEST_IOCTL.pack(msg_version, req_data, resp_data, 0xFF))


@dataclass(frozen=True)
class ExitInfo2:
    raw: int

    @property
    def fw_error(self) -> int:
        return self.raw & 0xFFFFFFFF

    @property
    def vmm_error(self) -> int:
        return self.raw >> 32

    def __str__(self) -> str:
        return (
            f"exitinfo2 {self.raw:#x} (firmware error {self.fw_error:#x}, "
            f"VMM error {self.vmm_error})"
        )


def decode_exitinfo2(arg: bytes | bytearray) -> ExitInfo2:
    return ExitInfo2(GUEST_REQUEST_IOCTL.unpack(bytes(arg))[3])


def decode_report_resp(resp: bytes) -> bytes:
    """The report inside a MSG_REPORT_RSP; errors named after the firmware status."""
    status, size = MSG_REPORT_RSP_HEADER.unpack_from(resp)
    if status in (SEV_RET_INVALID_PARAM, SEV_RET_INVALID_KEY):
        name = "INVALID_PARAM" if status == SEV_RET_INVALID_PARAM else "INVALID_KEY"
        raise InvalidInputError(
            f"SNP firmware refused the report request: STATUS {status:#x} ({name}); "
            "is the requested VMPL below the guest's own?",
            code="sev-guest-invalid-request",
        )
    if status != 0:
        raise UnavailableError(
            f"SNP firmware answered STATUS {status:#x} to MSG_REPORT_REQ",
            code="sev-guest-unavailable",
        )
    start = MSG_REPORT_RSP_HEADER.size
    if size != REPORT_SIZE or start + size > len(resp):
        raise MalformedEvidenceError(
            f"MSG_REPORT_RSP REPORT_SIZE is {size}, expected {REPORT_SIZE}",
            code="sev-guest-bad-response",
        )
    return bytes(resp[start : start + size])


def cert_table_size(buf: bytes) -> int:
    """Bytes of ``buf`` a GHCB certificate table uses (max offset + length over entries)."""
    size = 0
    for pos in range(0, len(buf) - _CERT_ENTRY.size + 1, _CERT_ENTRY.size):
        guid, offset, length = _CERT_ENTRY.unpack_from(buf, pos)
        if guid == bytes(16) and offset == 0 and length == 0:
            return size
        size = max(size, offset + length)
    raise MalformedEvidenceError(
        "SNP certificate table has no terminating zero entry", code="sev-guest-bad-response"
    )


# ---- the provider ---------------------------------------------------------------------


class SevGuestProvider:
    """Collects ``snp`` evidence through the sev-guest driver's ioctls.

    ``extended=True`` (default) uses SNP_GET_EXT_REPORT so the host-provided certificate
    table (VCEK/VLEK, ASK, ARK) travels with the report; ``False`` uses SNP_GET_REPORT
    and the verifier needs the VCEK from elsewhere (KDS, collateral).
    """

    kind = "snp"

    def __init__(
        self,
        device: Path = DEFAULT_DEVICE,
        *,
        vmpl: int = 0,
        extended: bool = True,
        certs_len: int = SEV_FW_BLOB_MAX_SIZE,
        msg_version: int = 1,
        ioctl: IoctlFn | None = None,
    ) -> None:
        if not 0 <= vmpl <= 3:
            raise InvalidInputError(f"vmpl is {vmpl}, expected 0..3", code="sev-guest-option")
        if certs_len <= 0 or certs_len % PAGE_SIZE or certs_len > SEV_FW_BLOB_MAX_SIZE:
            raise InvalidInputError(
                f"certs_len is {certs_len}, expected a multiple of {PAGE_SIZE} up to "
                f"{SEV_FW_BLOB_MAX_SIZE}",
                code="sev-guest-option",
            )
        if not 1 <= msg_version <= 255:
            raise ValueError("msg_version must be 1..255")
        self.device = Path(device)
        self.vmpl = vmpl
        self.extended = extended
        self.certs_len = certs_len
        self.msg_version = msg_version
        self._ioctl: IoctlFn = ioctl or _default_ioctl
        self._lock = threading.Lock()
        if not self.device.exists():
            raise UnavailableError(
                f"{self.device} is absent: not an SEV-SNP guest, or the sev-guest driver "
                "is not loaded (modprobe sev-guest)",
                code="sev-guest-unavailable",
            )

    def __repr__(self) -> str:
        return f"SevGuestProvider({str(self.device)!r})"

    def collect(self, report_data: bytes) -> EvidenceItem:
        wanted = require_report_data(report_data)
        with self._lock:  # one request at a time per provider, like the driver's mutex
            fd = self._open()
            try:
                report, certs = self._request(fd, wanted)
            finally:
                os.close(fd)
        got = parse_report(report).report_data
        if got != wanted:
            raise AttestationError(
                f"sev-guest report carries REPORT_DATA {got.hex()[:32]}..., expected "
                f"{wanted.hex()[:32]}... (the report is not for this request)",
                code="tee-report-data-mismatch",
            )
        attachments: dict[str, bytes] = {}
        if certs:
            parse_cert_table(certs)
            attachments["certtable"] = certs
        return EvidenceItem(
            kind="snp", data=report, attachments=attachments, collected_at=datetime.now(UTC)
        )

    def _open(self) -> int:
        try:
            return os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise UnavailableError(f"{self.device} is absent", code="sev-guest-unavailable") from e
        except PermissionError as e:
            raise UnavailableError(
                f"cannot open {self.device}: permission denied", code="sev-guest-unavailable"
            ) from e
        except OSError as e:
            raise UnavailableError(
                f"cannot open {self.device}: {e.strerror or e}", code="sev-guest-unavailable"
            ) from e

    def _request(self, fd: int, user_data: bytes) -> tuple[bytes, bytes | None]:
        resp = ctypes.create_string_buffer(REPORT_RESP_SIZE)
        if not self.extended:
            req = ctypes.create_string_buffer(
                encode_report_req(user_data, self.vmpl), REPORT_REQ.size
            )
            arg = encode_guest_request(
                self.msg_version, ctypes.addressof(req), ctypes.addressof(resp)
            )
            self._call(fd, SNP_GET_REPORT, arg)
            return decode_report_resp(resp.raw), None
        certs_len = self.certs_len
        for _ in range(2):
            certs = ctypes.create_string_buffer(certs_len)
            req = ctypes.create_string_buffer(
                encode_ext_report_req(user_data, self.vmpl, ctypes.addressof(certs), certs_len),
                EXT_REPORT_REQ.size,
            )
            arg = encode_guest_request(
                self.msg_version, ctypes.addressof(req), ctypes.addressof(resp)
            )
            try:
                self._call(fd, SNP_GET_EXT_REPORT, arg)
            except _CertsTooSmall:
                needed = EXT_REPORT_REQ.unpack(req.raw)[2]
                if needed <= certs_len or needed > SEV_FW_BLOB_MAX_SIZE or needed % PAGE_SIZE:
                    raise UnavailableError(
                        f"the host's certificate table needs {needed} bytes; the driver "
                        f"accepts at most {SEV_FW_BLOB_MAX_SIZE} (asked with {certs_len})",
                        code="sev-guest-certs-too-large",
                    ) from None
                certs_len = needed
                continue
            report = decode_report_resp(resp.raw)
            size = cert_table_size(certs.raw)
            return report, (certs.raw[:size] if size else None)
        raise UnavailableError(
            "the host kept asking for a larger certificate buffer", code="sev-guest-unavailable"
        )

    def _call(self, fd: int, request: int, arg: bytearray) -> None:
        try:
            self._ioctl(fd, request, arg)
        except OSError as e:
            info = decode_exitinfo2(arg)
            if e.errno == errno.EIO and info.vmm_error == SNP_GUEST_VMM_ERR_INVALID_LEN:
                raise _CertsTooSmall from e
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            if e.errno == errno.ENOTTY:
                why = "the driver refused the request (VMPCK disabled, or not an SNP guest)"
            elif info.vmm_error == SNP_GUEST_VMM_ERR_BUSY or e.errno == errno.ETIMEDOUT:
                why = "the host throttled the request"
            else:
                why = "the guest request failed"
            raise UnavailableError(
                f"{self.device}: {why}: {name} {e.strerror or ''}, {info}".strip(),
                code="sev-guest-unavailable",
            ) from e


class _CertsTooSmall(Exception):
    pass
