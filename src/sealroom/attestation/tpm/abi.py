"""TPM 2.0 structures: bytes <-> frozen typed objects (TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE).

Layouts follow TPM 2.0 Library Specification Part 2 (Structures): TPMS_ATTEST (10.12.12),
TPMS_QUOTE_INFO (10.12.4), TPML_PCR_SELECTION (10.9.7), TPMT_PUBLIC (12.2.4),
TPMT_SIGNATURE (11.3.4). Every integer is big-endian; every variable-size field is a
TPM2B (u16 size + bytes) and parsing follows those size fields strictly: a short buffer, a
size beyond the structure's maximum, an unknown selector or trailing bytes is a
MalformedEvidenceError. Parsing never judges whether a quote is acceptable; each object
keeps its original bytes (``raw``) so signatures are checked over what the TPM signed, and
``to_bytes()`` is the inverse so tests can build real-layout structures.
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealroom.errors import MalformedEvidenceError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018


class Alg(enum.IntEnum):
    """TPM_ALG_ID values used here (TCG Algorithm Registry)."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


#: Digest sizes of the hash algorithms a PCR bank, name or signature may use.
HASH_SIZES: dict[int, int] = {
    Alg.SHA1: 20,
    Alg.SHA256: 32,
    Alg.SHA384: 48,
    Alg.SHA512: 64,
    Alg.SM3_256: 32,
    Alg.SHA3_256: 32,
    Alg.SHA3_384: 48,
    Alg.SHA3_512: 64,
}
HASH_NAMES: dict[int, str] = {
    Alg.SHA1: "sha1",
    Alg.SHA256: "sha256",
    Alg.SHA384: "sha384",
    Alg.SHA512: "sha512",
    Alg.SM3_256: "sm3_256",
    Alg.SHA3_256: "sha3_256",
    Alg.SHA3_384: "sha3_384",
    Alg.SHA3_512: "sha3_512",
}
HASH_BY_NAME: dict[str, int] = {v: k for k, v in HASH_NAMES.items()}
_CRYPTO_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    Alg.SHA1: hashes.SHA1,
    Alg.SHA256: hashes.SHA256,
    Alg.SHA384: hashes.SHA384,
    Alg.SHA512: hashes.SHA512,
    Alg.SM3_256: hashes.SM3,
    Alg.SHA3_256: hashes.SHA3_256,
    Alg.SHA3_384: hashes.SHA3_384,
    Alg.SHA3_512: hashes.SHA3_512,
}


class EccCurve(enum.IntEnum):
    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005


_CURVES: dict[int, ec.EllipticCurve] = {
    EccCurve.NIST_P256: ec.SECP256R1(),
    EccCurve.NIST_P384: ec.SECP384R1(),
    EccCurve.NIST_P521: ec.SECP521R1(),
}

# Maximum buffer sizes (TPM 2.0 Part 2 with the PC Client profile's largest values).
MAX_DIGEST = 64  # sizeof(TPMU_HA)
MAX_NAME = 2 + MAX_DIGEST  # TPMU_NAME: a TPMT_HA (or a 4-byte handle)
MAX_DATA = 2 + MAX_DIGEST  # TPM2B_DATA: sizeof(TPMT_HA)
MAX_RSA_KEY_BYTES = 512  # 4096-bit keys
MAX_ECC_KEY_BYTES = 66  # P-521
MAX_PCR_SELECTIONS = 16
MAX_SIZEOF_SELECT = 32  # 256 PCRs; PC Client TPMs have 24 (3 bytes)

# TPMA_OBJECT bits (Part 2, 8.3).
OBJ_FIXED_TPM = 1 << 1
OBJ_ST_CLEAR = 1 << 2
OBJ_FIXED_PARENT = 1 << 4
OBJ_SENSITIVE_DATA_ORIGIN = 1 << 5
OBJ_USER_WITH_AUTH = 1 << 6
OBJ_ADMIN_WITH_POLICY = 1 << 7
OBJ_NO_DA = 1 << 10
OBJ_RESTRICTED = 1 << 16
OBJ_DECRYPT = 1 << 17
OBJ_SIGN = 1 << 18


_ALG_NAMES = {a.value: a.name.lower() for a in Alg}


def alg_name(alg: int) -> str:
    name = _ALG_NAMES.get(alg)
    return name if name is not None else f"alg-{alg:#06x}"


def hash_name(alg: int) -> str:
    return HASH_NAMES.get(alg, alg_name(alg))


def crypto_hash(alg: int) -> hashes.HashAlgorithm:
    """The pyca/cryptography hash object for a TPM hash algorithm (ValueError if none)."""
    cls = _CRYPTO_HASHES.get(alg)
    if cls is None:
        raise ValueError(f"unsupported hash algorithm {hash_name(alg)}")
    return cls()


def digest(alg: int, data: bytes) -> bytes:
    """H_alg(data) through pyca/cryptography (ValueError if the hash is unavailable)."""
    try:
        h = hashes.Hash(crypto_hash(alg))
    except UnsupportedAlgorithm as e:
        raise ValueError(f"hash algorithm {hash_name(alg)} is not available: {e}") from e
    h.update(data)
    return h.finalize()


class Reader:
    """A bounds-checked cursor; every failure names the structure and field. TPM
    structures are big-endian; the TCG event log is little-endian (``little=True``)."""

    def __init__(
        self,
        data: bytes,
        what: str,
        *,
        little: bool = False,
        code: str = "tpm-structure-truncated",
    ) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what
        self.code = code
        self._order = "<" if little else ">"

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedEvidenceError(
                f"{self.what}: {field} needs {n} bytes at offset {self.pos}, "
                f"only {self.remaining()} left",
                code=self.code,
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int(struct.unpack(self._order + "H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack(self._order + "I", self.take(4, field))[0])

    def u64(self, field: str) -> int:
        return int(struct.unpack(self._order + "Q", self.take(8, field))[0])

    def at_padding(self) -> bool:
        """Only zero bytes left (trailing padding after the last record)."""
        return not any(self.data[self.pos :])

    def tpm2b(self, field: str, max_size: int) -> bytes:
        size = self.u16(f"{field}.size")
        if size > max_size:
            raise MalformedEvidenceError(
                f"{self.what}: {field}.size is {size}, at most {max_size} allowed",
                code="tpm-structure-invalid",
            )
        return self.take(size, field)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MalformedEvidenceError(
                f"{self.what}: {self.remaining()} trailing bytes after the structure "
                f"(parsed {self.pos} of {len(self.data)})",
                code="tpm-structure-invalid",
            )


def _b2(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _bad(what: str, msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"{what}: {msg}", code="tpm-structure-invalid")


# --------------------------------------------------------------------------- PCR selection


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank and a bitmap of PCR indices."""

    hash_alg: int
    select: bytes

    @functools.cached_property
    def indices(self) -> tuple[int, ...]:
        """Selected PCR indices, ascending: the order the TPM concatenates them in."""
        return tuple(
            8 * i + bit for i, byte in enumerate(self.select) if byte for bit in range(8)
            if byte >> bit & 1
        )  # fmt: skip

    @property
    def bank(self) -> str:
        return hash_name(self.hash_alg)

    @classmethod
    def of(cls, hash_alg: int, indices: list[int] | tuple[int, ...], size: int = 3) -> PcrSelection:
        sel = bytearray(max(size, (max(indices) // 8 + 1) if indices else 0))
        for i in indices:
            sel[i // 8] |= 1 << (i % 8)
        return cls(hash_alg, bytes(sel))

    def to_bytes(self) -> bytes:
        return struct.pack(">HB", self.hash_alg, len(self.select)) + self.select


def parse_pcr_selection_list(r: Reader, field: str) -> tuple[PcrSelection, ...]:
    count = r.u32(f"{field}.count")
    if count > MAX_PCR_SELECTIONS:
        raise _bad(r.what, f"{field}.count is {count}, at most {MAX_PCR_SELECTIONS} allowed")
    out = []
    for n in range(count):
        alg = r.u16(f"{field}[{n}].hash")
        if alg not in HASH_SIZES:
            raise _bad(r.what, f"{field}[{n}].hash is {alg_name(alg)}, not a hash algorithm")
        size = r.u8(f"{field}[{n}].sizeofSelect")
        if size > MAX_SIZEOF_SELECT:
            raise _bad(r.what, f"{field}[{n}].sizeofSelect is {size}, at most 32 allowed")
        out.append(PcrSelection(alg, r.take(size, f"{field}[{n}].pcrSelect")))
    return tuple(out)


def pcr_selection_list_bytes(selections: tuple[PcrSelection, ...]) -> bytes:
    return struct.pack(">I", len(selections)) + b"".join(s.to_bytes() for s in selections)


# --------------------------------------------------------------------------- TPMS_ATTEST


@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class Attest:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE (the only type a quote verifier needs)."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes
    magic: int = TPM_GENERATED_VALUE
    type: int = TPM_ST_ATTEST_QUOTE
    raw: bytes = b""

    def to_bytes(self) -> bytes:
        c = self.clock_info
        return (
            struct.pack(">IH", self.magic, self.type)
            + _b2(self.qualified_signer)
            + _b2(self.extra_data)
            + struct.pack(">QIIB", c.clock, c.reset_count, c.restart_count, int(c.safe))
            + struct.pack(">Q", self.firmware_version)
            + pcr_selection_list_bytes(self.pcr_select)
            + _b2(self.pcr_digest)
        )


def parse_attest(data: bytes) -> Attest:
    """Parse a TPMS_ATTEST quote. Strict: magic, type, sizes and no trailing bytes."""
    r = Reader(data, "TPMS_ATTEST")
    magic = r.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise MalformedEvidenceError(
            f"TPMS_ATTEST: magic is {magic:#010x}, expected TPM_GENERATED_VALUE "
            f"{TPM_GENERATED_VALUE:#010x} (not produced by a TPM)",
            code="tpm-attest-magic",
        )
    typ = r.u16("type")
    if typ != TPM_ST_ATTEST_QUOTE:
        raise MalformedEvidenceError(
            f"TPMS_ATTEST: type is {typ:#06x}, expected TPM_ST_ATTEST_QUOTE "
            f"{TPM_ST_ATTEST_QUOTE:#06x}",
            code="tpm-attest-type",
        )
    signer = r.tpm2b("qualifiedSigner", MAX_NAME)
    extra = r.tpm2b("extraData", MAX_DATA)
    clock = r.u64("clockInfo.clock")
    reset = r.u32("clockInfo.resetCount")
    restart = r.u32("clockInfo.restartCount")
    safe = r.u8("clockInfo.safe")
    if safe > 1:
        raise _bad(r.what, f"clockInfo.safe is {safe}, expected 0 or 1 (TPMI_YES_NO)")
    fw = r.u64("firmwareVersion")
    sel = parse_pcr_selection_list(r, "attested.quote.pcrSelect")
    pdig = r.tpm2b("attested.quote.pcrDigest", MAX_DIGEST)
    r.done()
    return Attest(
        qualified_signer=signer,
        extra_data=extra,
        clock_info=ClockInfo(clock, reset, restart, bool(safe)),
        firmware_version=fw,
        pcr_select=sel,
        pcr_digest=pdig,
        magic=magic,
        type=typ,
        raw=bytes(data),
    )


# --------------------------------------------------------------------------- TPMT_SIGNATURE

_ECC_SIG_ALGS = (Alg.ECDSA, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR)


@dataclass(frozen=True)
class Signature:
    """A TPMT_SIGNATURE. RSA schemes fill ``sig``; ECC schemes fill ``r`` and ``s``."""

    sig_alg: int
    hash_alg: int
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""
    raw: bytes = b""

    @property
    def is_rsa(self) -> bool:
        return self.sig_alg in (Alg.RSASSA, Alg.RSAPSS)

    def to_bytes(self) -> bytes:
        head = struct.pack(">HH", self.sig_alg, self.hash_alg)
        if self.is_rsa:
            return head + _b2(self.sig)
        return head + _b2(self.r) + _b2(self.s)


def parse_signature(data: bytes) -> Signature:
    """Parse a TPMT_SIGNATURE of an RSA (RSASSA, RSAPSS) or ECC (ECDSA, ...) scheme."""
    r = Reader(data, "TPMT_SIGNATURE")
    alg = r.u16("sigAlg")
    if alg not in (Alg.RSASSA, Alg.RSAPSS, *_ECC_SIG_ALGS):
        raise MalformedEvidenceError(
            f"TPMT_SIGNATURE: sigAlg is {alg_name(alg)}, expected an RSA or ECC signature scheme",
            code="tpm-signature-unsupported",
        )
    h = r.u16("hash")
    if h not in HASH_SIZES:
        raise _bad(r.what, f"hash is {alg_name(h)}, not a hash algorithm")
    if alg in (Alg.RSASSA, Alg.RSAPSS):
        sig = r.tpm2b("sig", MAX_RSA_KEY_BYTES)
        r.done()
        return Signature(alg, h, sig=sig, raw=bytes(data))
    rr = r.tpm2b("signatureR", MAX_ECC_KEY_BYTES)
    ss = r.tpm2b("signatureS", MAX_ECC_KEY_BYTES)
    r.done()
    return Signature(alg, h, r=rr, s=ss, raw=bytes(data))


# --------------------------------------------------------------------------- TPMT_PUBLIC


@dataclass(frozen=True)
class SymDef:
    algorithm: int
    key_bits: int = 0
    mode: int = 0


@dataclass(frozen=True)
class Scheme:
    scheme: int
    hash_alg: int = 0
    count: int = 0  # ECDAA only


@dataclass(frozen=True)
class Public:
    """A TPMT_PUBLIC of an RSA or ECC key.

    ``rsa_bits``/``exponent``/``modulus`` are set for RSA keys; ``curve``/``x``/``y``/``kdf``
    for ECC keys.
    """

    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    symmetric: SymDef
    scheme: Scheme
    rsa_bits: int = 0
    exponent: int = 0
    modulus: bytes = b""
    curve: int = 0
    kdf: Scheme = Scheme(Alg.NULL)
    x: bytes = b""
    y: bytes = b""
    raw: bytes = b""

    def has(self, attribute: int) -> bool:
        return bool(self.object_attributes & attribute)

    def name(self) -> bytes:
        """The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        body = self.raw or self.to_bytes()
        try:
            return struct.pack(">H", self.name_alg) + digest(self.name_alg, body)
        except ValueError as e:
            raise MalformedEvidenceError(
                f"TPMT_PUBLIC: nameAlg: {e}", code="tpm-key-unsupported"
            ) from e

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as a pyca/cryptography object. MalformedEvidenceError if not a valid key."""
        try:
            if self.type == Alg.RSA:
                e = self.exponent or 65537
                return rsa.RSAPublicNumbers(e, int.from_bytes(self.modulus, "big")).public_key()
            curve = _CURVES.get(self.curve)
            if curve is None:
                raise MalformedEvidenceError(
                    f"TPMT_PUBLIC: curve {self.curve:#06x} is not supported (P-256, P-384, P-521)",
                    code="tpm-key-unsupported",
                )
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(self.x, "big"), int.from_bytes(self.y, "big"), curve
            ).public_key()
        except ValueError as e:
            raise MalformedEvidenceError(
                f"TPMT_PUBLIC: unique field is not a valid public key: {e}", code="tpm-key-invalid"
            ) from e

    def to_bytes(self) -> bytes:
        out = struct.pack(">HHI", self.type, self.name_alg, self.object_attributes)
        out += _b2(self.auth_policy)
        out += _symdef_bytes(self.symmetric)
        out += _scheme_bytes(self.scheme)
        if self.type == Alg.RSA:
            out += struct.pack(">HI", self.rsa_bits, self.exponent) + _b2(self.modulus)
        else:
            out += struct.pack(">H", self.curve) + _scheme_bytes(self.kdf)
            out += _b2(self.x) + _b2(self.y)
        return out


def _symdef_bytes(s: SymDef) -> bytes:
    if s.algorithm == Alg.NULL:
        return struct.pack(">H", s.algorithm)
    return struct.pack(">HHH", s.algorithm, s.key_bits, s.mode)


def _scheme_bytes(s: Scheme) -> bytes:
    if s.scheme == Alg.NULL:
        return struct.pack(">H", s.scheme)
    if s.scheme == Alg.RSAES:
        return struct.pack(">H", s.scheme)
    if s.scheme == Alg.ECDAA:
        return struct.pack(">HHH", s.scheme, s.hash_alg, s.count)
    return struct.pack(">HH", s.scheme, s.hash_alg)


def _symdef(r: Reader) -> SymDef:
    alg = r.u16("parameters.symmetric.algorithm")
    if alg == Alg.NULL:
        return SymDef(alg)
    if alg not in (Alg.AES, Alg.SM4, Alg.CAMELLIA):
        raise _bad(r.what, f"parameters.symmetric.algorithm is {alg_name(alg)}, not a block cipher")
    bits = r.u16("parameters.symmetric.keyBits")
    mode = r.u16("parameters.symmetric.mode")
    if mode not in (Alg.CTR, Alg.OFB, Alg.CBC, Alg.CFB, Alg.ECB, Alg.NULL):
        raise _bad(r.what, f"parameters.symmetric.mode is {alg_name(mode)}, not a cipher mode")
    return SymDef(alg, bits, mode)


def _hash_field(r: Reader, field: str) -> int:
    h = r.u16(field)
    if h not in HASH_SIZES:
        raise _bad(r.what, f"{field} is {alg_name(h)}, not a hash algorithm")
    return h


def _rsa_scheme(r: Reader) -> Scheme:
    alg = r.u16("parameters.scheme.scheme")
    if alg in (Alg.NULL, Alg.RSAES):
        return Scheme(alg)
    if alg not in (Alg.RSASSA, Alg.RSAPSS, Alg.OAEP):
        raise _bad(r.what, f"parameters.scheme.scheme is {alg_name(alg)}, not an RSA scheme")
    return Scheme(alg, _hash_field(r, "parameters.scheme.hashAlg"))


def _ecc_scheme(r: Reader) -> Scheme:
    alg = r.u16("parameters.scheme.scheme")
    if alg == Alg.NULL:
        return Scheme(alg)
    if alg not in (*_ECC_SIG_ALGS, Alg.ECDH, Alg.ECMQV):
        raise _bad(r.what, f"parameters.scheme.scheme is {alg_name(alg)}, not an ECC scheme")
    h = _hash_field(r, "parameters.scheme.hashAlg")
    if alg == Alg.ECDAA:
        return Scheme(alg, h, r.u16("parameters.scheme.count"))
    return Scheme(alg, h)


def _kdf(r: Reader) -> Scheme:
    alg = r.u16("parameters.kdf.scheme")
    if alg == Alg.NULL:
        return Scheme(alg)
    if alg not in (Alg.KDF1_SP800_56A, Alg.KDF2, Alg.KDF1_SP800_108):
        raise _bad(r.what, f"parameters.kdf.scheme is {alg_name(alg)}, not a KDF")
    return Scheme(alg, _hash_field(r, "parameters.kdf.hashAlg"))


def parse_public(data: bytes) -> Public:
    """Parse a TPMT_PUBLIC of an RSA or ECC key (keyed-hash and symmetric objects are
    not attestation keys and are rejected)."""
    r = Reader(data, "TPMT_PUBLIC")
    typ = r.u16("type")
    if typ not in (Alg.RSA, Alg.ECC):
        raise MalformedEvidenceError(
            f"TPMT_PUBLIC: type is {alg_name(typ)}, expected rsa or ecc",
            code="tpm-key-unsupported",
        )
    name_alg = _hash_field(r, "nameAlg")
    attrs = r.u32("objectAttributes")
    policy = r.tpm2b("authPolicy", MAX_DIGEST)
    sym = _symdef(r)
    if typ == Alg.RSA:
        scheme = _rsa_scheme(r)
        bits = r.u16("parameters.keyBits")
        exponent = r.u32("parameters.exponent")
        modulus = r.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES)
        r.done()
        if bits not in (1024, 2048, 3072, 4096) or len(modulus) * 8 != bits:
            raise _bad(
                r.what,
                f"parameters.keyBits is {bits} but unique.rsa holds {len(modulus) * 8} bits",
            )
        return Public(
            typ, name_alg, attrs, policy, sym, scheme,
            rsa_bits=bits, exponent=exponent, modulus=modulus, raw=bytes(data),
        )  # fmt: skip
    scheme = _ecc_scheme(r)
    curve = r.u16("parameters.curveID")
    kdf = _kdf(r)
    x = r.tpm2b("unique.ecc.x", MAX_ECC_KEY_BYTES)
    y = r.tpm2b("unique.ecc.y", MAX_ECC_KEY_BYTES)
    r.done()
    return Public(
        typ, name_alg, attrs, policy, sym, scheme,
        curve=curve, kdf=kdf, x=x, y=y, raw=bytes(data),
    )  # fmt: skip


def parse_public_area(data: bytes) -> Public:
    """A TPMT_PUBLIC, or a TPM2B_PUBLIC (u16 size + TPMT_PUBLIC, as tpm2-tools writes)."""
    if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == len(data) - 2:
        return parse_public(data[2:])
    return parse_public(data)
