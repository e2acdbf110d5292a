"""/dev/sev-guest provider at the ioctl boundary: UAPI struct encoding and error mapping.

No SNP guest here, so a fake driver stands in for the kernel: it decodes the
snp_guest_request_ioctl the provider built, reads the request through its pointer, and
writes the MSG_REPORT_RSP and the certificate table through the response pointers, exactly
where the kernel's copy_to_user would.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sealroom.attestation import kinds
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.snp import certs as snp_certs
from sealroom.attestation.snp.abi import REPORT_SIZE, parse_report
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    UnavailableError,
)
from sealroom.tee.base import open_provider
from sealroom.tee.sev_guest import (
    EXT_REPORT_REQ,
    GUEST_REQUEST_IOCTL,
    MSG_REPORT_RSP_HEADER,
    REPORT_REQ,
    REPORT_RESP_SIZE,
    SNP_GET_DERIVED_KEY,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    SevGuestProvider,
    cert_table_size,
    decode_exitinfo2,
    encode_guest_request,
)
from sealroom.testing.fake_snp import FakeSnpPki

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
REPORT_DATA = hashlib.sha512(b"bound to the enclave keys").digest()
DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def pki() -> FakeSnpPki:
    return FakeSnpPki(NOW)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    dev = tmp_path / "sev-guest"
    dev.write_bytes(b"")
    return dev


class FakeDriver:
    """The sev-guest driver's ioctl, reading and writing through the user pointers."""

    def __init__(self, pki: FakeSnpPki) -> None:
        self.pki = pki
        self.table = snp_certs.build_cert_table(
            {"vcek": pki.issued.keys.vcek.public_bytes(DER), "ask": pki.ask.public_bytes(DER)}
        )
        self.needed_certs_len = 4096
        self.status = 0
        self.report_size = REPORT_SIZE
        self.errno: int | None = None
        self.exitinfo2 = 0
        self.report_data_override: bytes | None = None
        self.calls: list[tuple[int, int]] = []  # (request, certs_len)

    def _fail(self, arg: bytearray, code: int, exitinfo2: int) -> None:
        version, req, resp, _ = GUEST_REQUEST_IOCTL.unpack(bytes(arg))
        arg[:] = GUEST_REQUEST_IOCTL.pack(version, req, resp, exitinfo2)
        raise OSError(code, "fake driver")

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        assert isinstance(arg, bytearray) and len(arg) == GUEST_REQUEST_IOCTL.size
        version, req_ptr, resp_ptr, exitinfo2 = GUEST_REQUEST_IOCTL.unpack(bytes(arg))
        assert exitinfo2 == 0xFF
        if version == 0 or not req_ptr or not resp_ptr:
            raise OSError(errno.EINVAL, "fake driver")
        certs_len = 0
        if request == SNP_GET_EXT_REPORT:
            data, certs_ptr, certs_len = EXT_REPORT_REQ.unpack(
                ctypes.string_at(req_ptr, EXT_REPORT_REQ.size)
            )
            self.calls.append((request, certs_len))
            if certs_len % 4096 or certs_len > 0x4000:
                raise OSError(errno.EINVAL, "fake driver")
            if certs_len < self.needed_certs_len:
                # the kernel writes the needed size back into the request, VMM error 1
                back = EXT_REPORT_REQ.pack(data, certs_ptr, self.needed_certs_len)
                ctypes.memmove(req_ptr, back, len(back))
                self._fail(arg, errno.EIO, 1 << 32)
            table = self.table.ljust(certs_len, b"\0")[:certs_len]
            ctypes.memmove(certs_ptr, table, len(table))
        elif request == SNP_GET_REPORT:
            data = ctypes.string_at(req_ptr, REPORT_REQ.size)
            self.calls.append((request, 0))
        else:
            raise OSError(errno.ENOTTY, "fake driver")
        if self.errno is not None:
            self._fail(arg, self.errno, self.exitinfo2)
        user_data, vmpl, rsvd = REPORT_REQ.unpack(data)
        assert rsvd == bytes(28)
        report = self.pki.authority.report(
            measurement=b"\x33" * 48,
            report_data=self.report_data_override or user_data,
            vmpl=vmpl,
        )
        body = MSG_REPORT_RSP_HEADER.pack(self.status, self.report_size) + report.to_bytes()
        ctypes.memmove(resp_ptr, body, len(body))
        return 0


def _verify(pki: FakeSnpPki, item: object) -> SnpClaims:
    from sealroom.attestation.evidence import EvidenceItem

    assert isinstance(item, EvidenceItem)
    claims = kinds.get("snp").verify(item, VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert isinstance(claims, SnpClaims)
    return claims


def test_uapi_layout() -> None:
    assert REPORT_REQ.size == 96
    assert EXT_REPORT_REQ.size == 112
    assert GUEST_REQUEST_IOCTL.size == 32
    assert REPORT_RESP_SIZE == 4000
    # _IOWR('S', nr, struct snp_guest_request_ioctl), as snpguest/go-sev-guest use them
    assert SNP_GET_REPORT == 0xC0205300
    assert SNP_GET_DERIVED_KEY == 0xC0205301
    assert SNP_GET_EXT_REPORT == 0xC0205302
    arg = encode_guest_request(1, 0x1000, 0x2000)
    assert bytes(arg) == (
        b"\x01" + bytes(7) + (0x1000).to_bytes(8, "little") + (0x2000).to_bytes(8, "little")
    ) + (0xFF).to_bytes(8, "little")


def test_exitinfo2_split() -> None:
    info = decode_exitinfo2(GUEST_REQUEST_IOCTL.pack(1, 0, 0, (2 << 32) | 0x16))
    assert (info.vmm_error, info.fw_error) == (2, 0x16)


def test_extended_report_verifies_with_cert_table(pki: FakeSnpPki, device: Path) -> None:
    driver = FakeDriver(pki)
    item = SevGuestProvider(device, ioctl=driver).collect(REPORT_DATA)
    assert item.kind == "snp" and set(item.attachments) == {"certtable"}
    assert item.attachments["certtable"] == driver.table  # trimmed to the table's extent
    claims = _verify(pki, item)
    assert claims.report_data == REPORT_DATA and claims.simulated
    assert driver.calls == [(SNP_GET_EXT_REPORT, 0x4000)]


def test_plain_report_needs_the_vcek_from_elsewhere(pki: FakeSnpPki, device: Path) -> None:
    driver = FakeDriver(pki)
    item = SevGuestProvider(device, extended=False, ioctl=driver).collect(REPORT_DATA)
    assert dict(item.attachments) == {}
    with_vcek = item.with_attachments(
        {"vcek": pki.issued.keys.vcek.public_bytes(DER), "ask": pki.ask.public_bytes(DER)}
    )
    assert _verify(pki, with_vcek).report_data == REPORT_DATA
    assert driver.calls == [(SNP_GET_REPORT, 0)]


def test_vmpl_is_requested(pki: FakeSnpPki, device: Path) -> None:
    item = SevGuestProvider(device, vmpl=2, ioctl=FakeDriver(pki)).collect(REPORT_DATA)
    assert parse_report(item.data).vmpl == 2


def test_small_cert_buffer_is_grown_once(pki: FakeSnpPki, device: Path) -> None:
    driver = FakeDriver(pki)
    driver.needed_certs_len = 8192
    item = SevGuestProvider(device, certs_len=4096, ioctl=driver).collect(REPORT_DATA)
    assert _verify(pki, item).verified
    assert driver.calls == [(SNP_GET_EXT_REPORT, 4096), (SNP_GET_EXT_REPORT, 8192)]


def test_cert_table_beyond_the_driver_limit(pki: FakeSnpPki, device: Path) -> None:
    driver = FakeDriver(pki)
    driver.needed_certs_len = 0x5000
    with pytest.raises(UnavailableError, match="at most") as e:
        SevGuestProvider(device, ioctl=driver).collect(REPORT_DATA)
    assert e.value.code == "sev-guest-certs-too-large"


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (0x16, InvalidInputError, "sev-guest-invalid-request"),
        (0x27, InvalidInputError, "sev-guest-invalid-request"),
        (0x01, UnavailableError, "sev-guest-unavailable"),
    ],
    ids=["firmware_invalid_param", "firmware_invalid_key", "firmware_other_status"],
)
def test_firmware_status(
    pki: FakeSnpPki, device: Path, status: int, error: type[Exception], code: str
) -> None:
    driver = FakeDriver(pki)
    driver.status = status
    with pytest.raises(error) as e:
        SevGuestProvider(device, ioctl=driver).collect(REPORT_DATA)
    assert getattr(e.value, "code") == code  # noqa: B009


def test_wrong_report_size_is_malformed(pki: FakeSnpPki, device: Path) -> None:
    driver = FakeDriver(pki)
    driver.report_size = 1000
    with pytest.raises(MalformedEvidenceError, match="REPORT_SIZE is 1000"):
        SevGuestProvider(device, ioctl=driver).collect(REPORT_DATA)


@pytest.mark.parametrize(
    ("code", "exitinfo2", "match"),
    [
        (errno.ENOTTY, 0xFF, "VMPCK disabled"),
        (errno.ETIMEDOUT, 2 << 32, "throttled"),
        (errno.EIO, 0x16, "firmware error 0x16"),
    ],
    ids=["vmpck_disabled", "host_busy", "firmware_error"],
)
def test_driver_errors(
    pki: FakeSnpPki, device: Path, code: int, exitinfo2: int, match: str
) -> None:
    driver = FakeDriver(pki)
    driver.errno, driver.exitinfo2 = code, exitinfo2
    with pytest.raises(UnavailableError, match=match) as e:
        SevGuestProvider(device, ioctl=driver).collect(REPORT_DATA)
    assert e.value.code == "sev-guest-unavailable"


def test_report_for_other_report_data_is_refused(pki: FakeSnpPki, device: Path) -> None:
    driver = FakeDriver(pki)
    driver.report_data_override = b"\x01" * 64
    with pytest.raises(AttestationError) as e:
        SevGuestProvider(device, ioctl=driver).collect(REPORT_DATA)
    assert e.value.code == "tee-report-data-mismatch"


def test_missing_device(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="modprobe sev-guest"):
        SevGuestProvider(tmp_path / "sev-guest")
    with pytest.raises(UnavailableError):
        open_provider(f"sev-guest:{tmp_path / 'sev-guest'}")


@pytest.mark.parametrize(
    "kwargs",
    [{"vmpl": 4}, {"vmpl": -1}, {"certs_len": 1000}, {"certs_len": 0x5000}],
    ids=["vmpl_4", "vmpl_negative", "certs_len_unaligned", "certs_len_too_large"],
)
def test_bad_options(device: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidInputError):
        SevGuestProvider(device, **kwargs)  # type: ignore[arg-type]


def test_cert_table_size() -> None:
    table = snp_certs.build_cert_table({"vcek": b"a" * 10, "ask": b"b" * 20})
    assert cert_table_size(table + bytes(100)) == len(table)
    assert cert_table_size(bytes(4096)) == 0
    with pytest.raises(MalformedEvidenceError):
        cert_table_size(b"\x01" * 48)


def test_real_ioctl_on_a_file_that_is_not_the_driver(device: Path) -> None:
    # The default fcntl.ioctl path, end to end: a regular file answers ENOTTY.
    with pytest.raises(UnavailableError, match="ENOTTY"):
        SevGuestProvider(device).collect(REPORT_DATA)
