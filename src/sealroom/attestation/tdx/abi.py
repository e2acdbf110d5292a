"""Intel DCAP ECDSA quotes (SGX v3, TDX v4 and v5): bytes <-> frozen typed objects.

Layouts follow Intel's "SGX ECDSA Quote Library API" (quote v3, appendix A "Quote
Format") and "Intel TDX DCAP Quoting Library API" (quote v4 and v5, section "Quote
Format"): the 48-byte quote header, the SGX report body (384 B), the TD quote body
v4 (TD 1.0, 584 B) and the v5 body descriptor (type 2 = TD 1.0, type 3 = TD 1.5,
648 B), and the ECDSA signature data with its QE report certification data (type 6)
wrapping the PCK certification data (type 5: PEM chain).

Parsing is strict about every declared length (they must nest exactly), versions, key
type and must-be-zero ranges of the report bodies. It never judges acceptability.

Trailing bytes after the declared signature data are **tolerated and reported**
(``Quote.trailing``): real quotes carry them (a 5006-byte buffer holding 4936 bytes of
quote, with 70 zero bytes of padding; a test file with 39 ASCII bytes appended). No
signature covers them and no claim is derived from them, so accepting them cannot
change a verdict; rejecting them would reject real evidence. ``to_bytes()`` re-emits
them so a round trip is exact.

Signatures are always checked over the original bytes (``Quote.signed_bytes``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from sealroom.errors import MalformedEvidenceError

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD10_BODY_SIZE = 584
TD15_BODY_SIZE = 648
ECDSA_SIG_SIZE = 64  # r || s, 32 bytes each, big-endian
ATTEST_KEY_SIZE = 64  # P-256 point x || y, big-endian

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
ATT_KEY_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081

CERT_DATA_PCK_CHAIN = 5  # PEM: PCK leaf, PCK Platform/Processor CA, Intel SGX Root CA
CERT_DATA_QE_REPORT = 6  # QE report certification data (quote v4/v5)


class TeeType(enum.IntEnum):
    SGX = TEE_TYPE_SGX
    TDX = TEE_TYPE_TDX


class BodyType(enum.IntEnum):
    """Quote v5 body descriptor type."""

    SGX = 1
    TD10 = 2
    TD15 = 3


def _need(data: bytes, off: int, size: int, what: str) -> None:
    if off + size > len(data):
        raise MalformedEvidenceError(
            f"{what} needs {size} bytes at offset {off:#x}, quote has {len(data)} bytes",
            code="tdx-quote-truncated",
        )


def _mbz(data: bytes, what: str) -> None:
    if any(data):
        raise MalformedEvidenceError(
            f"{what} must be zero, got {data.hex()}", code="tdx-quote-reserved-nonzero"
        )


# --- quote header ------------------------------------------------------------------------

_HEADER = struct.Struct("<HHIHH16s20s")
assert _HEADER.size == HEADER_SIZE


@dataclass(frozen=True)
class QuoteHeader:
    """Quote header (48 B). 0x00 VERSION, 0x02 ATT_KEY_TYPE, 0x04 TEE_TYPE (v3: reserved,
    zero), 0x08 QE_SVN, 0x0A PCE_SVN (v4/v5 name them reserved; QEs still fill them),
    0x0C QE_VENDOR_ID, 0x1C USER_DATA."""

    version: int
    att_key_type: int
    tee_type: TeeType
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @staticmethod
    def from_bytes(data: bytes) -> QuoteHeader:
        _need(data, 0, HEADER_SIZE, "quote header")
        version, akt, tee, qe_svn, pce_svn, vendor, user = _HEADER.unpack_from(data, 0)
        if version not in (3, 4, 5):
            raise MalformedEvidenceError(
                f"quote VERSION is {version}, supported: 3 (SGX), 4 and 5 (TDX)",
                code="tdx-quote-version",
            )
        if akt != ATT_KEY_ECDSA_P256:
            raise MalformedEvidenceError(
                f"quote ATT_KEY_TYPE is {akt}, supported: {ATT_KEY_ECDSA_P256} (ECDSA P-256)",
                code="tdx-quote-key-type",
            )
        if tee not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
            raise MalformedEvidenceError(
                f"quote TEE_TYPE is {tee:#x}, known: 0x0 (SGX), 0x81 (TDX)",
                code="tdx-quote-tee-type",
            )
        tee_type = TeeType(tee)
        if version == 3 and tee_type is not TeeType.SGX:
            raise MalformedEvidenceError("quote v3 with TEE_TYPE TDX", code="tdx-quote-tee-type")
        if version in (4, 5) and tee_type is not TeeType.TDX:
            raise MalformedEvidenceError(
                f"quote v{version} with TEE_TYPE SGX is not supported", code="tdx-quote-tee-type"
            )
        return QuoteHeader(version, akt, tee_type, qe_svn, pce_svn, vendor, user)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            self.version,
            self.att_key_type,
            int(self.tee_type),
            self.qe_svn,
            self.pce_svn,
            self.qe_vendor_id,
            self.user_data,
        )


# --- SGX report body (also the QE report) ------------------------------------------------

# 0x000 CPUSVN[16] 0x010 MISCSELECT u32 0x014 reserved[12] 0x020 ISVEXTPRODID[16]
# 0x030 ATTRIBUTES[16] 0x040 MRENCLAVE[32] 0x060 reserved[32] 0x080 MRSIGNER[32]
# 0x0A0 reserved[32] 0x0C0 CONFIGID[64] 0x100 ISVPRODID u16 0x102 ISVSVN u16
# 0x104 CONFIGSVN u16 0x106 reserved[42] 0x130 ISVFAMILYID[16] 0x140 REPORTDATA[64]
_SGX = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
assert _SGX.size == SGX_REPORT_SIZE

SGX_FLAG_INIT = 0x01
SGX_FLAG_DEBUG = 0x02
SGX_FLAG_MODE64BIT = 0x04
SGX_FLAG_PROVISION_KEY = 0x10
SGX_FLAG_EINITTOKEN_KEY = 0x20
SGX_FLAG_KSS = 0x80


@dataclass(frozen=True)
class EnclaveReport:
    """SGX REPORT body (384 B): the SGX quote body, and the QE report in every quote."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes  # 16 B: FLAGS u64 LE || XFRM u64 LE
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def xfrm(self) -> int:
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        return bool(self.flags & SGX_FLAG_DEBUG)

    @staticmethod
    def from_bytes(data: bytes, what: str = "SGX report body") -> EnclaveReport:
        if len(data) != SGX_REPORT_SIZE:
            raise MalformedEvidenceError(
                f"{what} is {len(data)} bytes, expected {SGX_REPORT_SIZE}",
                code="tdx-quote-truncated",
            )
        (
            cpu_svn,
            misc,
            r1,
            ext_prod,
            attrs,
            mre,
            r2,
            mrs,
            r3,
            cfg,
            prod,
            svn,
            cfgsvn,
            r4,
            family,
            rd,
        ) = _SGX.unpack(data)
        _mbz(r1, f"{what} reserved 0x014")
        _mbz(r2, f"{what} reserved 0x060")
        _mbz(r3, f"{what} reserved 0x0A0")
        _mbz(r4, f"{what} reserved 0x106")
        return EnclaveReport(
            cpu_svn, misc, ext_prod, attrs, mre, mrs, cfg, prod, svn, cfgsvn, family, rd
        )

    def to_bytes(self) -> bytes:
        return _SGX.pack(
            self.cpu_svn,
            self.misc_select,
            bytes(12),
            self.isv_ext_prod_id,
            self.attributes,
            self.mr_enclave,
            bytes(32),
            self.mr_signer,
            bytes(32),
            self.config_id,
            self.isv_prod_id,
            self.isv_svn,
            self.config_svn,
            bytes(42),
            self.isv_family_id,
            self.report_data,
        )


# --- TD quote body -----------------------------------------------------------------------

# 0x000 TEE_TCB_SVN[16] 0x010 MRSEAM[48] 0x040 MRSIGNERSEAM[48] 0x070 SEAMATTRIBUTES[8]
# 0x078 TDATTRIBUTES[8] 0x080 XFAM[8] 0x088 MRTD[48] 0x0B8 MRCONFIGID[48]
# 0x0E8 MROWNER[48] 0x118 MROWNERCONFIG[48] 0x148 RTMR0..3[4x48] 0x208 REPORTDATA[64]
# TD 1.5 adds 0x248 TEE_TCB_SVN2[16] 0x258 MRSERVICETD[48].
_TD10 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_TD15_EXT = struct.Struct("<16s48s")
assert _TD10.size == TD10_BODY_SIZE
assert _TD10.size + _TD15_EXT.size == TD15_BODY_SIZE

# TDATTRIBUTES bits (Intel TDX Module ABI, table "TD ATTRIBUTES Definition"): TUD bits
# 7:0 (any set bit means the TD is under debug or profiling: untrusted), SEC bits 31:8,
# OTHER bits 63:32. Every bit not named here is reserved and must be zero.
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_HGS_PLUS_PROF = 1 << 4
TD_ATTR_PERF_PROF = 1 << 5
TD_ATTR_PMT_PROF = 1 << 6
TD_ATTR_ICSSD = 1 << 16
TD_ATTR_LASS = 1 << 27
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
TD_ATTR_MIGRATABLE = 1 << 29
TD_ATTR_PKS = 1 << 30
TD_ATTR_KL = 1 << 31
TD_ATTR_TPA = 1 << 62
TD_ATTR_PERFMON = 1 << 63
TD_ATTR_TUD_PROFILING = TD_ATTR_HGS_PLUS_PROF | TD_ATTR_PERF_PROF | TD_ATTR_PMT_PROF
TD_ATTR_DEFINED = (
    TD_ATTR_DEBUG
    | TD_ATTR_TUD_PROFILING
    | TD_ATTR_ICSSD
    | TD_ATTR_LASS
    | TD_ATTR_SEPT_VE_DISABLE
    | TD_ATTR_MIGRATABLE
    | TD_ATTR_PKS
    | TD_ATTR_KL
    | TD_ATTR_TPA
    | TD_ATTR_PERFMON
)
TD_ATTR_RESERVED = ~TD_ATTR_DEFINED & ((1 << 64) - 1)


@dataclass(frozen=True)
class TdAttributes:
    raw: int

    debug = property(lambda self: bool(self.raw & TD_ATTR_DEBUG))
    sept_ve_disable = property(lambda self: bool(self.raw & TD_ATTR_SEPT_VE_DISABLE))
    migratable = property(lambda self: bool(self.raw & TD_ATTR_MIGRATABLE))
    pks = property(lambda self: bool(self.raw & TD_ATTR_PKS))
    kl = property(lambda self: bool(self.raw & TD_ATTR_KL))
    perfmon = property(lambda self: bool(self.raw & TD_ATTR_PERFMON))
    #: TUD bits 6:4 (HGS+, PERF and PMT profiling): the host can observe the TD
    profiling = property(lambda self: self.raw & TD_ATTR_TUD_PROFILING)
    #: set bits the TDX module ABI reserves (a genuine TDX module never sets them)
    reserved = property(lambda self: self.raw & TD_ATTR_RESERVED)

    def to_bytes(self) -> bytes:
        return self.raw.to_bytes(8, "little")


@dataclass(frozen=True)
class TdReportBody:
    """TD quote body. ``tee_tcb_svn2``/``mr_servicetd`` are None for TD 1.0 bodies."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_servicetd: bytes | None = None

    @property
    def attributes(self) -> TdAttributes:
        return TdAttributes(int.from_bytes(self.td_attributes, "little"))

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def is_td15(self) -> bool:
        return self.tee_tcb_svn2 is not None

    @staticmethod
    def from_bytes(data: bytes) -> TdReportBody:
        if len(data) not in (TD10_BODY_SIZE, TD15_BODY_SIZE):
            raise MalformedEvidenceError(
                f"TD quote body is {len(data)} bytes, expected {TD10_BODY_SIZE} or "
                f"{TD15_BODY_SIZE}",
                code="tdx-quote-truncated",
            )
        (
            svn,
            mrseam,
            mrsignerseam,
            seamattr,
            tdattr,
            xfam,
            mrtd,
            mrconfigid,
            mrowner,
            mrownerconfig,
            r0,
            r1,
            r2,
            r3,
            rd,
        ) = _TD10.unpack_from(data, 0)
        svn2 = mrst = None
        if len(data) == TD15_BODY_SIZE:
            svn2, mrst = _TD15_EXT.unpack_from(data, TD10_BODY_SIZE)
        return TdReportBody(
            svn,
            mrseam,
            mrsignerseam,
            seamattr,
            tdattr,
            xfam,
            mrtd,
            mrconfigid,
            mrowner,
            mrownerconfig,
            r0,
            r1,
            r2,
            r3,
            rd,
            tee_tcb_svn2=svn2,
            mr_servicetd=mrst,
        )

    def to_bytes(self) -> bytes:
        out = _TD10.pack(
            self.tee_tcb_svn,
            self.mr_seam,
            self.mr_signer_seam,
            self.seam_attributes,
            self.td_attributes,
            self.xfam,
            self.mr_td,
            self.mr_config_id,
            self.mr_owner,
            self.mr_owner_config,
            self.rtmr0,
            self.rtmr1,
            self.rtmr2,
            self.rtmr3,
            self.report_data,
        )
        if self.tee_tcb_svn2 is not None or self.mr_servicetd is not None:
            out += _TD15_EXT.pack(self.tee_tcb_svn2 or bytes(16), self.mr_servicetd or bytes(48))
        return out


# --- signature data ----------------------------------------------------------------------


@dataclass(frozen=True)
class CertificationData:
    """A certification data entry: u16 type, u32 size, data."""

    cert_type: int
    data: bytes

    def to_bytes(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data


@dataclass(frozen=True)
class QeReportCertData:
    """QE report certification data: the QE report, its signature by the PCK key, the QE
    authentication data and the PCK certification data (type 5 expected)."""

    qe_report_raw: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_cert_data: CertificationData

    @staticmethod
    def parse(data: bytes, what: str) -> QeReportCertData:
        """Parse one QE report certification data block that must fill ``data`` exactly."""
        off = 0
        _need(data, off, SGX_REPORT_SIZE + ECDSA_SIG_SIZE + 2, what)
        qe_raw = data[off : off + SGX_REPORT_SIZE]
        qe = EnclaveReport.from_bytes(qe_raw, "QE report")
        off += SGX_REPORT_SIZE
        qe_sig = data[off : off + ECDSA_SIG_SIZE]
        off += ECDSA_SIG_SIZE
        (auth_len,) = struct.unpack_from("<H", data, off)
        off += 2
        _need(data, off, auth_len, f"{what} QE authentication data")
        auth = data[off : off + auth_len]
        off += auth_len
        _need(data, off, 6, f"{what} certification data header")
        ctype, csize = struct.unpack_from("<HI", data, off)
        off += 6
        _need(data, off, csize, f"{what} certification data (type {ctype})")
        cdata = data[off : off + csize]
        off += csize
        if off != len(data):
            raise MalformedEvidenceError(
                f"{what} declares {len(data)} bytes but its parts use {off}",
                code="tdx-quote-length-mismatch",
            )
        return QeReportCertData(qe_raw, qe, qe_sig, auth, CertificationData(ctype, cdata))

    def to_bytes(self) -> bytes:
        return (
            self.qe_report_raw
            + self.qe_report_signature
            + struct.pack("<H", len(self.qe_auth_data))
            + self.qe_auth_data
            + self.pck_cert_data.to_bytes()
        )


@dataclass(frozen=True)
class SignatureData:
    """ECDSA 256-bit quote signature data.

    v3: signature, attestation key, then the QE report certification data inline.
    v4/v5: signature, attestation key, then a certification data entry of type 6 holding
    the QE report certification data.
    """

    signature: bytes
    attestation_key: bytes
    qe: QeReportCertData

    @staticmethod
    def parse(data: bytes, version: int) -> SignatureData:
        what = "quote signature data"
        _need(data, 0, ECDSA_SIG_SIZE + ATTEST_KEY_SIZE, what)
        sig = data[:ECDSA_SIG_SIZE]
        key = data[ECDSA_SIG_SIZE : ECDSA_SIG_SIZE + ATTEST_KEY_SIZE]
        rest = data[ECDSA_SIG_SIZE + ATTEST_KEY_SIZE :]
        if version == 3:
            qe = QeReportCertData.parse(rest, what)
        else:
            _need(rest, 0, 6, f"{what} certification data header")
            ctype, csize = struct.unpack_from("<HI", rest, 0)
            if ctype != CERT_DATA_QE_REPORT:
                raise MalformedEvidenceError(
                    f"{what} certification data type is {ctype}, expected "
                    f"{CERT_DATA_QE_REPORT} (QE report certification data)",
                    code="tdx-quote-cert-type",
                )
            if 6 + csize != len(rest):
                raise MalformedEvidenceError(
                    f"{what} certification data declares {csize} bytes, "
                    f"{len(rest) - 6} are available",
                    code="tdx-quote-length-mismatch",
                )
            qe = QeReportCertData.parse(rest[6:], "QE report certification data")
        return SignatureData(sig, key, qe)

    def to_bytes(self, version: int) -> bytes:
        inner = self.qe.to_bytes()
        if version != 3:
            inner = CertificationData(CERT_DATA_QE_REPORT, inner).to_bytes()
        return self.signature + self.attestation_key + inner


# --- the quote ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    header: QuoteHeader
    body: TdReportBody | EnclaveReport
    body_type: BodyType
    signature_data: SignatureData
    #: header || (v5: body type || body size ||) body: what the attestation key signed.
    signed_bytes: bytes
    #: bytes after the declared signature data (tolerated, unauthenticated, see module doc)
    trailing: bytes = b""

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def tee_type(self) -> TeeType:
        return self.header.tee_type

    @property
    def td_body(self) -> TdReportBody:
        if not isinstance(self.body, TdReportBody):
            raise TypeError("not a TDX quote")
        return self.body

    @property
    def sgx_body(self) -> EnclaveReport:
        if not isinstance(self.body, EnclaveReport):
            raise TypeError("not an SGX quote")
        return self.body

    @staticmethod
    def from_bytes(data: bytes) -> Quote:
        data = bytes(data)
        header = QuoteHeader.from_bytes(data)
        off = HEADER_SIZE
        body: TdReportBody | EnclaveReport
        if header.version == 3:
            _need(data, off, SGX_REPORT_SIZE, "SGX report body")
            body = EnclaveReport.from_bytes(data[off : off + SGX_REPORT_SIZE])
            body_type = BodyType.SGX
            off += SGX_REPORT_SIZE
        elif header.version == 4:
            _need(data, off, TD10_BODY_SIZE, "TD quote body")
            body = TdReportBody.from_bytes(data[off : off + TD10_BODY_SIZE])
            body_type = BodyType.TD10
            off += TD10_BODY_SIZE
        else:
            _need(data, off, 6, "quote v5 body descriptor")
            btype, bsize = struct.unpack_from("<HI", data, off)
            off += 6
            expected = {BodyType.TD10: TD10_BODY_SIZE, BodyType.TD15: TD15_BODY_SIZE}
            if btype not in expected:
                raise MalformedEvidenceError(
                    f"quote v5 body type is {btype}, supported: 2 (TD 1.0), 3 (TD 1.5)",
                    code="tdx-quote-body-type",
                )
            body_type = BodyType(btype)
            if bsize != expected[body_type]:
                raise MalformedEvidenceError(
                    f"quote v5 body type {btype} declares {bsize} bytes, expected "
                    f"{expected[body_type]}",
                    code="tdx-quote-length-mismatch",
                )
            _need(data, off, bsize, "TD quote body")
            body = TdReportBody.from_bytes(data[off : off + bsize])
            off += bsize
        signed = data[:off]
        _need(data, off, 4, "quote signature data length")
        (sig_len,) = struct.unpack_from("<I", data, off)
        off += 4
        _need(data, off, sig_len, "quote signature data")
        sig = SignatureData.parse(data[off : off + sig_len], header.version)
        off += sig_len
        return Quote(header, body, body_type, sig, signed, data[off:])

    def to_bytes(self) -> bytes:
        head = self.header.to_bytes()
        body = self.body.to_bytes()
        if self.header.version == 5:
            head += struct.pack("<HI", int(self.body_type), len(body))
        sig = self.signature_data.to_bytes(self.header.version)
        return head + body + struct.pack("<I", len(sig)) + sig + self.trailing

    def signed_region(self) -> bytes:
        """The bytes the attestation key signs, re-encoded (for builders of fakes)."""
        head = self.header.to_bytes()
        body = self.body.to_bytes()
        if self.header.version == 5:
            head += struct.pack("<HI", int(self.body_type), len(body))
        return head + body
