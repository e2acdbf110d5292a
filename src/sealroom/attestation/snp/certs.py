"""AMD SEV-SNP certificates: VCEK/VLEK extensions, embedded AMD roots, cert tables.

VCEK/VLEK X.509 extensions are listed in AMD's "Versioned Chip Endorsement Key (VCEK)
Certificate and KDS Interface Specification" (#57230), table "VCEK Certificate Extensions"
(OIDs under 1.3.6.1.4.1.3704.1). The embedded ARK/ASK/ASVK certificates are AMD's public
KDS certificates (provenance and fingerprints in roots/README.md).
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from cryptography import x509

from sealroom.attestation import der
from sealroom.attestation.snp.abi import Product
from sealroom.attestation.x509util import fingerprint, load_certificates, subject_cn
from sealroom.errors import AttestationError, MalformedEvidenceError

_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{_AMD}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD}.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{_AMD}.3.9")
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{_AMD}.5")


def _ext_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise MalformedEvidenceError(f"extension {oid.dotted_string} has an unexpected type")
    return value.value


def _ext_int(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> int | None:
    raw = _ext_value(cert, oid)
    if raw is None:
        return None
    what = f"extension {oid.dotted_string}"
    return der.read_int(der.read_one(raw, what), what)


def _ext_str(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    raw = _ext_value(cert, oid)
    if raw is None:
        return None
    tag, body = der.read_one(raw, f"extension {oid.dotted_string}")
    if tag not in (der.IA5_STRING, der.UTF8_STRING, der.PRINTABLE_STRING):
        raise MalformedEvidenceError(f"extension {oid.dotted_string} is not a string")
    return body.decode("ascii", errors="replace")


def _hwid(cert: x509.Certificate) -> bytes | None:
    raw = _ext_value(cert, OID_HWID)
    if raw is None:
        return None
    # KDS certificates carry the raw bytes (64, or 8 on Turin); accept the DER OCTET STRING
    # form too, as some tooling re-encodes it.
    if len(raw) in (66, 10) and raw[0] == der.OCTET_STRING and raw[1] == len(raw) - 2:
        return der.read_one(raw, "VCEK hwID", tag=der.OCTET_STRING).value
    return raw


class VekKind(enum.StrEnum):
    VCEK = "vcek"
    VLEK = "vlek"


@dataclass(frozen=True)
class VekInfo:
    """What a VCEK/VLEK says about itself."""

    kind: VekKind
    struct_version: int | None
    product_name: str | None
    bl_spl: int | None
    tee_spl: int | None
    snp_spl: int | None
    ucode_spl: int | None
    fmc_spl: int | None
    hwid: bytes | None
    csp_id: str | None

    @property
    def product(self) -> Product | None:
        return product_from_name(self.product_name)


def product_from_name(name: str | None) -> Product | None:
    """ "Milan-B0" -> Milan; "Genoa" -> Genoa; sim certificates say "Simulated"."""
    if not name:
        return None
    head = name.split("-")[0].strip().lower()
    for p in Product:
        if p.value.lower() == head:
            return p
    return None


@lru_cache(maxsize=512)
def vek_info(cert: x509.Certificate) -> VekInfo:
    csp = _ext_str(cert, OID_CSP_ID)
    cn = subject_cn(cert)
    kind = VekKind.VLEK if (csp is not None or cn.endswith("VLEK")) else VekKind.VCEK
    return VekInfo(
        kind=kind,
        struct_version=_ext_int(cert, OID_STRUCT_VERSION),
        product_name=_ext_str(cert, OID_PRODUCT_NAME),
        bl_spl=_ext_int(cert, OID_BL_SPL),
        tee_spl=_ext_int(cert, OID_TEE_SPL),
        snp_spl=_ext_int(cert, OID_SNP_SPL),
        ucode_spl=_ext_int(cert, OID_UCODE_SPL),
        fmc_spl=_ext_int(cert, OID_FMC_SPL),
        hwid=_hwid(cert),
        csp_id=csp,
    )


@lru_cache(maxsize=512)
def is_vek(cert: x509.Certificate) -> bool:
    return (
        _ext_value(cert, OID_HWID) is not None
        or _ext_value(cert, OID_CSP_ID) is not None
        or (subject_cn(cert) in ("SEV-VCEK", "SEV-VLEK"))
    )


@lru_cache(maxsize=512)
def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


# ---- embedded AMD chains -------------------------------------------------------------


@dataclass(frozen=True)
class ProductChain:
    product: Product
    vek_kind: VekKind
    intermediate: x509.Certificate  # ASK (VCEK chain) or ASVK (VLEK chain)
    ark: x509.Certificate


@cache
def amd_chains() -> tuple[ProductChain, ...]:
    out = []
    root = resources.files("sealroom.attestation.snp") / "roots"
    for product in (Product.MILAN, Product.GENOA, Product.TURIN):
        for kind in VekKind:
            data = (root / f"{product.value.lower()}_{kind.value}_chain.pem").read_bytes()
            inter, ark = load_certificates(data, f"embedded {product} {kind} chain")
            out.append(ProductChain(product, kind, inter, ark))
    return tuple(out)


@cache
def amd_arks() -> tuple[x509.Certificate, ...]:
    seen: dict[str, x509.Certificate] = {}
    for c in amd_chains():
        seen.setdefault(fingerprint(c.ark), c.ark)
    return tuple(seen.values())


# ---- GHCB / extended-report certificate table ----------------------------------------

# GUIDs from the GHCB specification (#56421), "SNP Extended Guest Request" certificate table.
GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
_GUID_NAMES = {GUID_VCEK: "vcek", GUID_VLEK: "vlek", GUID_ASK: "ask", GUID_ARK: "ark"}
_ENTRY = struct.Struct("<16sII")


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """Parse a certificate table (configfs-tsm ``auxblob``, SNP extended report).

    Entries of (GUID, offset, length) end with an all-zero entry; offsets are from the
    start of the table. Unknown GUIDs are kept under their GUID string.
    """
    out: dict[str, bytes] = {}
    pos = 0
    while True:
        if pos + _ENTRY.size > len(data):
            raise MalformedEvidenceError("SNP certificate table has no terminating zero entry")
        raw_guid, offset, length = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        if raw_guid == bytes(16):
            break
        if offset < pos or offset + length > len(data):
            raise MalformedEvidenceError(
                f"SNP certificate table entry {raw_guid.hex()} points outside the table "
                f"(offset {offset}, length {length}, table {len(data)} bytes)"
            )
        guid = uuid.UUID(bytes_le=raw_guid)
        name = _GUID_NAMES.get(guid, str(guid))
        if name in out:
            raise MalformedEvidenceError(f"SNP certificate table lists {name} twice")
        out[name] = data[offset : offset + length]
    return out


def build_cert_table(entries: dict[str, bytes]) -> bytes:
    """Inverse of :func:`parse_cert_table` (for providers and fakes)."""
    by_name = {v: k for k, v in _GUID_NAMES.items()}
    header_size = _ENTRY.size * (len(entries) + 1)
    header = b""
    body = b""
    for name, blob in entries.items():
        guid = by_name.get(name) or uuid.UUID(name)
        header += _ENTRY.pack(guid.bytes_le, header_size + len(body), len(blob))
        body += blob
    return header + bytes(_ENTRY.size) + body


# ---- RSASSA-PSS parameters of AMD's signatures --------------------------------------

OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
AMD_PSS_SALT = 48


def _hash_alg(tlv: der.Tlv, what: str) -> str:
    """AlgorithmIdentifier of a hash: SEQUENCE { OID, NULL OPTIONAL }."""
    if tlv.tag != der.SEQUENCE:
        raise MalformedEvidenceError(f"{what}: hash AlgorithmIdentifier is not a SEQUENCE")
    parts = der.read_tlvs(tlv.value, what)
    if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] != (der.NULL, b"")):
        raise MalformedEvidenceError(f"{what}: hash AlgorithmIdentifier is malformed")
    return der.read_oid(parts[0], what)


def check_amd_pss(signed_der: bytes, what: str) -> None:
    """The signature of a certificate or CRL (``SEQUENCE { tbs, signatureAlgorithm,
    signature }``) must be RSASSA-PSS with SHA-384, MGF1-SHA-384, salt length 48 and
    trailer field 1: the parameters AMD's KDS specification (#57230, "Certificate
    Signatures") fixes for the ARK, ASK/ASVK, VCEK/VLEK and CRL. pyca/cryptography
    verifies with whatever parameters the certificate names, so they are pinned here.

    Raises AttestationError naming the parameter that differs."""
    top = der.sequence(signed_der, what)
    if len(top) != 3:
        raise MalformedEvidenceError(f"{what}: not a signed X.509 structure")
    alg = der.read_tlvs(top[1].value, what) if top[1].tag == der.SEQUENCE else []
    got_oid = der.read_oid(alg[0], what) if alg else "(none)"
    if got_oid != OID_RSASSA_PSS or len(alg) != 2 or alg[1].tag != der.SEQUENCE:
        raise AttestationError(
            f"{what}: signature algorithm is {got_oid}, expected RSASSA-PSS ({OID_RSASSA_PSS}) "
            "with explicit parameters",
            code="snp-chain-signature-params",
        )
    fields = der.read_tlvs(alg[1].value, what)
    params = {t.tag: t.value for t in fields}
    if len(params) != len(fields) or not set(params) <= {0xA0, 0xA1, 0xA2, 0xA3}:
        raise MalformedEvidenceError(f"{what}: RSASSA-PSS parameters are malformed")
    hash_oid = _hash_alg(der.read_one(params[0xA0], what), what) if 0xA0 in params else "SHA-1"
    mgf_oid, mgf_hash = OID_MGF1, "SHA-1"  # the ASN.1 DEFAULT: MGF1 with SHA-1
    if 0xA1 in params:
        mgf = der.sequence(params[0xA1], what)
        if len(mgf) != 2:
            raise MalformedEvidenceError(f"{what}: maskGenAlgorithm is malformed")
        mgf_oid = der.read_oid(mgf[0], what)
        mgf_hash = _hash_alg(mgf[1], what)
    salt = der.read_int(der.read_one(params[0xA2], what), what) if 0xA2 in params else 20
    trailer = der.read_int(der.read_one(params[0xA3], what), what) if 0xA3 in params else 1
    checks = (
        ("hashAlgorithm", hash_oid, OID_SHA384),
        ("maskGenAlgorithm", mgf_oid, OID_MGF1),
        ("MGF1 hash", mgf_hash, OID_SHA384),
        ("saltLength", salt, AMD_PSS_SALT),
        ("trailerField", trailer, 1),
    )
    for name, got, want in checks:
        if got != want:
            raise AttestationError(
                f"{what}: RSASSA-PSS {name} is {got}, expected {want} "
                "(SHA-384, MGF1-SHA-384, salt 48)",
                code="snp-chain-signature-params",
            )
