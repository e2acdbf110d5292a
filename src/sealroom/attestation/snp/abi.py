"""AMD SEV-SNP ATTESTATION_REPORT: bytes <-> a frozen typed object.

Offsets follow the SEV Secure Nested Paging Firmware ABI Specification (AMD #56860),
table "ATTESTATION_REPORT Structure" (report versions 2, 3 and 5). Parsing is strict about
size, versions and must-be-zero ranges, and never judges whether a report is acceptable.
``to_bytes()`` is the inverse so the sim authority and test fakes build real-layout bytes.
Signatures are always checked over the original bytes (``Report.raw``), never re-encoded.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, replace

from sealroom.errors import MalformedEvidenceError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the signature covers bytes [0x0, 0x2A0)
SIGNATURE_OFFSET = 0x2A0
ECDSA_COMPONENT_SIZE = 72  # r and s: little-endian, zero-extended to 72 bytes each
SUPPORTED_VERSIONS = (2, 3, 4, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1


class Product(enum.StrEnum):
    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"
    # The sim authority's product: never an AMD part; see sealroom.attestation.sim.
    SIMULATED = "Simulated"


def product_from_cpuid(family: int, model: int) -> Product | None:
    """Map CPUID family/model (report v3+ bytes 0x188/0x189) to the SNP product line.

    Family 19h: models 00h-0Fh Milan, 10h-1Fh and A0h-AFh Genoa (incl. Bergamo/Siena).
    Family 1Ah: models 00h-1Fh Turin.
    """
    if family == 0x19:
        if model <= 0x0F:
            return Product.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return Product.GENOA
    if family == 0x1A and model <= 0x1F:
        return Product.TURIN
    return None


def uses_turin_tcb_layout(product: Product | None) -> bool:
    return product is Product.TURIN


@dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION (8 bytes, little-endian u64), decoded per product.

    Milan/Genoa: byte 0 BOOT_LOADER, 1 TEE, 2-5 reserved, 6 SNP, 7 MICROCODE.
    Turin:       byte 0 FMC, 1 BOOT_LOADER, 2 TEE, 3 SNP, 4-6 reserved, 7 MICROCODE.
    """

    raw: int
    turin: bool = False

    @property
    def _b(self) -> bytes:
        return self.raw.to_bytes(8, "little")

    @property
    def fmc(self) -> int | None:
        return self._b[0] if self.turin else None

    @property
    def bootloader(self) -> int:
        return self._b[1] if self.turin else self._b[0]

    @property
    def tee(self) -> int:
        return self._b[2] if self.turin else self._b[1]

    @property
    def snp(self) -> int:
        return self._b[3] if self.turin else self._b[6]

    @property
    def microcode(self) -> int:
        return self._b[7]

    def components(self) -> dict[str, int]:
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.turin:
            out["fmc"] = self._b[0]
        return out

    def __str__(self) -> str:
        parts = " ".join(f"{k}={v}" for k, v in self.components().items())
        return f"{self.raw:#018x} ({parts})"

    @staticmethod
    def build(
        *, bootloader: int, tee: int, snp: int, microcode: int, fmc: int | None = None
    ) -> TcbVersion:
        if fmc is not None:
            b = bytes([fmc, bootloader, tee, snp, 0, 0, 0, microcode])
            return TcbVersion(int.from_bytes(b, "little"), turin=True)
        b = bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])
        return TcbVersion(int.from_bytes(b, "little"))


@dataclass(frozen=True)
class GuestPolicy:
    """POLICY (report 0x08): the guest policy the VM was launched with."""

    raw: int

    abi_minor = property(lambda self: self.raw & 0xFF)
    abi_major = property(lambda self: (self.raw >> 8) & 0xFF)
    smt = property(lambda self: bool(self.raw >> 16 & 1))
    migrate_ma = property(lambda self: bool(self.raw >> 18 & 1))
    debug = property(lambda self: bool(self.raw >> 19 & 1))
    single_socket = property(lambda self: bool(self.raw >> 20 & 1))
    cxl_allow = property(lambda self: bool(self.raw >> 21 & 1))
    mem_aes_256_xts = property(lambda self: bool(self.raw >> 22 & 1))
    rapl_dis = property(lambda self: bool(self.raw >> 23 & 1))
    ciphertext_hiding = property(lambda self: bool(self.raw >> 24 & 1))
    page_swap_disable = property(lambda self: bool(self.raw >> 25 & 1))

    @staticmethod
    def build(
        *,
        abi_major: int = 0,
        abi_minor: int = 0,
        smt: bool = True,
        debug: bool = False,
        migrate_ma: bool = False,
        single_socket: bool = False,
    ) -> GuestPolicy:
        raw = abi_minor | abi_major << 8 | 1 << 17
        raw |= int(smt) << 16 | int(migrate_ma) << 18 | int(debug) << 19
        raw |= int(single_socket) << 20
        return GuestPolicy(raw)


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_INFO (report 0x40). Unknown bits are kept in ``raw``, not rejected: newer
    firmware defines new bits (the real Turin vector sets bit 6)."""

    raw: int

    smt_enabled = property(lambda self: bool(self.raw & 1))
    tsme_enabled = property(lambda self: bool(self.raw >> 1 & 1))
    ecc_enabled = property(lambda self: bool(self.raw >> 2 & 1))
    rapl_disabled = property(lambda self: bool(self.raw >> 3 & 1))
    ciphertext_hiding_enabled = property(lambda self: bool(self.raw >> 4 & 1))
    alias_check_complete = property(lambda self: bool(self.raw >> 5 & 1))


class SigningKey(enum.IntEnum):
    """Report 0x48 bits 4:2."""

    VCEK = 0
    VLEK = 1
    NONE = 7


# ATTESTATION_REPORT bytes [0x000, 0x188), row by row as in AMD #56860 "ATTESTATION_REPORT
# Structure" (Table 22 in revision 1.55, section 7.3; the v5 MIT_VECTOR rows are from
# revision 1.58): (offset, struct code, field). The offsets written here
# are checked against the packed layout below, so a typo in either fails at import.
_HEAD_FIELDS: tuple[tuple[int, str, str], ...] = (
    (0x000, "I", "VERSION"),
    (0x004, "I", "GUEST_SVN"),
    (0x008, "Q", "POLICY"),
    (0x010, "16s", "FAMILY_ID"),
    (0x020, "16s", "IMAGE_ID"),
    (0x030, "I", "VMPL"),
    (0x034, "I", "SIGNATURE_ALGO"),
    (0x038, "Q", "CURRENT_TCB"),
    (0x040, "Q", "PLATFORM_INFO"),
    (0x048, "I", "AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2)"),
    (0x04C, "4x", "reserved, MBZ"),
    (0x050, "64s", "REPORT_DATA"),
    (0x090, "48s", "MEASUREMENT"),
    (0x0C0, "32s", "HOST_DATA"),
    (0x0E0, "48s", "ID_KEY_DIGEST"),
    (0x110, "48s", "AUTHOR_KEY_DIGEST"),
    (0x140, "32s", "REPORT_ID"),
    (0x160, "32s", "REPORT_ID_MA"),
    (0x180, "Q", "REPORTED_TCB"),
)
# The rest of the table, read field by field in parse_report:
#   0x188  1    CPUID_FAM_ID (v3+; MBZ in v2)     0x1E8  1  CURRENT_BUILD
#   0x189  1    CPUID_MOD_ID (v3+)                0x1E9  1  CURRENT_MINOR
#   0x18A  1    CPUID_STEP (v3+)                  0x1EA  1  CURRENT_MAJOR
#   0x18B  21   reserved, MBZ                     0x1EB  1  reserved, MBZ
#   0x1A0  64   CHIP_ID                           0x1EC  1  COMMITTED_BUILD
#   0x1E0  8    COMMITTED_TCB                     0x1ED  1  COMMITTED_MINOR
#   0x1F0  8    LAUNCH_TCB                        0x1EE  1  COMMITTED_MAJOR
#   0x1F8  8    LAUNCH_MIT_VECTOR (v5; MBZ before) 0x1EF 1  reserved, MBZ
#   0x200  8    CURRENT_MIT_VECTOR (v5)
#   0x208  152  reserved, MBZ
#   0x2A0  512  SIGNATURE (ECDSA: R 0x2A0..0x2E8, S 0x2E8..0x330, rest MBZ)
_HEAD = struct.Struct("<" + "".join(code for _, code, _ in _HEAD_FIELDS))
for _off, _code, _name in _HEAD_FIELDS:
    if struct.calcsize("<" + "".join(c for o, c, _ in _HEAD_FIELDS if o < _off)) != _off:
        raise AssertionError(f"ATTESTATION_REPORT table: {_name} is not at {_off:#05x}")
if _HEAD.size != 0x188:
    raise AssertionError("ATTESTATION_REPORT head must end at 0x188")
MAX_VMPL = 3


@dataclass(frozen=True)
class Report:
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: PlatformInfo
    author_key_en: bool
    mask_chip_key: bool
    signing_key: SigningKey
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid_fam_id: int | None  # v3+
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb_raw: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb_raw: int
    launch_mit_vector: int | None  # v5
    current_mit_vector: int | None
    signature: bytes  # 512 bytes at 0x2A0
    raw: bytes = field(default=b"", repr=False, compare=False)
    # Bytes after the 0x4A0-byte report (a tool's header or padding): unauthenticated,
    # kept only so the claims can say how many there were. See parse_report(trailing_ok).
    trailing: bytes = field(default=b"", repr=False)

    # ---- derived views -------------------------------------------------------------
    @property
    def cpuid_product(self) -> Product | None:
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def tcb(self, which: str, product: Product | None = None) -> TcbVersion:
        """``which`` in current|reported|committed|launch; layout from ``product`` or CPUID."""
        raw: int = getattr(self, f"{which}_tcb_raw")
        return TcbVersion(raw, uses_turin_tcb_layout(product or self.cpuid_product))

    @property
    def signature_r(self) -> int:
        return int.from_bytes(self.signature[:ECDSA_COMPONENT_SIZE], "little")

    @property
    def signature_s(self) -> int:
        return int.from_bytes(
            self.signature[ECDSA_COMPONENT_SIZE : 2 * ECDSA_COMPONENT_SIZE], "little"
        )

    @property
    def signed_bytes(self) -> bytes:
        return (self.raw or self.to_bytes())[:SIGNED_SIZE]

    # ---- encoding ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        signer = int(self.author_key_en) | int(self.mask_chip_key) << 1
        signer |= int(self.signing_key) << 2
        head = _HEAD.pack(
            self.version,
            self.guest_svn,
            self.policy.raw,
            self.family_id,
            self.image_id,
            self.vmpl,
            self.signature_algo,
            self.current_tcb_raw,
            self.platform_info.raw,
            signer,
            self.report_data,
            self.measurement,
            self.host_data,
            self.id_key_digest,
            self.author_key_digest,
            self.report_id,
            self.report_id_ma,
            self.reported_tcb_raw,
        )
        out = bytearray(REPORT_SIZE)
        out[: len(head)] = head
        if self.version >= 3:
            out[0x188] = self.cpuid_fam_id or 0
            out[0x189] = self.cpuid_mod_id or 0
            out[0x18A] = self.cpuid_step or 0
        out[0x1A0:0x1E0] = self.chip_id
        struct.pack_into("<Q", out, 0x1E0, self.committed_tcb_raw)
        out[0x1E8:0x1EB] = bytes([self.current_build, self.current_minor, self.current_major])
        out[0x1EC:0x1EF] = bytes([self.committed_build, self.committed_minor, self.committed_major])
        struct.pack_into("<Q", out, 0x1F0, self.launch_tcb_raw)
        if self.version >= 5:
            struct.pack_into(
                "<QQ", out, 0x1F8, self.launch_mit_vector or 0, self.current_mit_vector or 0
            )
        out[SIGNATURE_OFFSET:] = self.signature
        return bytes(out) + self.trailing

    def with_signature(self, r: int, s: int) -> Report:
        sig = r.to_bytes(ECDSA_COMPONENT_SIZE, "little") + s.to_bytes(
            ECDSA_COMPONENT_SIZE, "little"
        )
        sig += bytes(REPORT_SIZE - SIGNATURE_OFFSET - len(sig))
        unsigned = replace(self, signature=sig, raw=b"")
        return replace(unsigned, raw=unsigned.to_bytes())


def _mbz(data: bytes, lo: int, hi: int) -> None:
    if any(data[lo:hi]):
        raise MalformedEvidenceError(
            f"SNP report bytes [{lo:#x}, {hi:#x}) are reserved and must be zero, "
            f"got {data[lo:hi].hex()}"
        )


def parse_report(data: bytes, *, trailing_ok: bool = False) -> Report:
    """Parse exactly one ATTESTATION_REPORT (0x4A0 bytes).

    ``trailing_ok``: the report may be followed by other bytes (files written by tools
    that append a header or pad to a page); they are kept in ``Report.trailing``, never
    interpreted, and are outside the signed range like everything after 0x2A0."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedEvidenceError(f"SNP report must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) != REPORT_SIZE and not (trailing_ok and len(data) > REPORT_SIZE):
        raise MalformedEvidenceError(
            f"SNP report is {len(data)} bytes, expected {REPORT_SIZE} ({REPORT_SIZE:#x})"
            + (" or more" if trailing_ok else "")
        )
    (
        version,
        guest_svn,
        policy,
        family_id,
        image_id,
        vmpl,
        sig_algo,
        current_tcb,
        plat_info,
        signer,
        report_data,
        measurement,
        host_data,
        id_key_digest,
        author_key_digest,
        report_id,
        report_id_ma,
        reported_tcb,
    ) = _HEAD.unpack_from(data)
    if version not in SUPPORTED_VERSIONS:
        raise MalformedEvidenceError(
            f"SNP report VERSION is {version}, supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    if not policy >> 17 & 1:
        raise MalformedEvidenceError(f"SNP POLICY bit 17 is reserved and must be 1 ({policy:#x})")
    if policy >> 26:
        raise MalformedEvidenceError(f"SNP POLICY bits 63:26 must be zero ({policy:#x})")
    if vmpl > MAX_VMPL:
        # VMPLs are 0-3 (AMD #56860, "Virtual Machine Privilege Levels"); a report request
        # at another level is refused by the firmware, so such a report is not one it made.
        raise MalformedEvidenceError(f"SNP report VMPL is {vmpl}, expected 0-{MAX_VMPL}")
    if signer >> 5:
        raise MalformedEvidenceError(f"SNP report 0x48 bits 31:5 must be zero ({signer:#x})")
    key_sel = signer >> 2 & 0x7
    if key_sel not in (0, 1, 7):
        raise MalformedEvidenceError(f"SNP SIGNING_KEY value {key_sel} is reserved")
    _mbz(data, 0x4C, 0x50)
    fam: int | None
    mod: int | None
    step: int | None
    if version >= 3:
        fam, mod, step = data[0x188], data[0x189], data[0x18A]
        _mbz(data, 0x18B, 0x1A0)
    else:
        fam = mod = step = None
        _mbz(data, 0x188, 0x1A0)
    (committed_tcb,) = struct.unpack_from("<Q", data, 0x1E0)
    _mbz(data, 0x1EB, 0x1EC)
    _mbz(data, 0x1EF, 0x1F0)
    (launch_tcb,) = struct.unpack_from("<Q", data, 0x1F0)
    if version >= 5:
        launch_mit, current_mit = struct.unpack_from("<QQ", data, 0x1F8)
        _mbz(data, 0x208, SIGNATURE_OFFSET)
    else:
        launch_mit = current_mit = None
        _mbz(data, 0x1F8, SIGNATURE_OFFSET)
    if sig_algo == SIG_ALGO_ECDSA_P384_SHA384:
        _mbz(data, SIGNATURE_OFFSET + 2 * ECDSA_COMPONENT_SIZE, REPORT_SIZE)
    trailing = data[REPORT_SIZE:]
    return Report(
        version=version,
        guest_svn=guest_svn,
        policy=GuestPolicy(policy),
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb_raw=current_tcb,
        platform_info=PlatformInfo(plat_info),
        author_key_en=bool(signer & 1),
        mask_chip_key=bool(signer >> 1 & 1),
        signing_key=SigningKey(key_sel),
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb_raw=reported_tcb,
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb_raw=committed_tcb,
        current_build=data[0x1E8],
        current_minor=data[0x1E9],
        current_major=data[0x1EA],
        committed_build=data[0x1EC],
        committed_minor=data[0x1ED],
        committed_major=data[0x1EE],
        launch_tcb_raw=launch_tcb,
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        signature=data[SIGNATURE_OFFSET:REPORT_SIZE],
        raw=data,
        trailing=trailing,
    )
