"""Intel DCAP collateral: TCB info, QE identity, CRLs and issuer chains; parse and fetch.

Formats accepted:

- the single-file JSON of Phala's dcap-qvl (``QuoteCollateralV3``): ``tcb_info`` and
  ``qe_identity`` as JSON *strings* (exactly the signed bytes), signatures and CRLs as
  hex, issuer chains as PEM;
- Intel PCS responses: ``{"tcbInfo": {...}, "signature": "<hex>"}`` and
  ``{"enclaveIdentity": {...}, "signature": "<hex>"}``. The signature covers the exact
  bytes of the ``tcbInfo``/``enclaveIdentity`` value as served, so the value's byte range
  is located in the response text and never re-serialised;
- CRLs as DER or PEM; certificate chains as PEM.

Parsing here checks shapes and types only (MalformedEvidenceError). Signatures, chains
and freshness at ``now`` are verify's business (``verify.py``). Parsed objects are
cached by their exact bytes, so repeated verifications with the same collateral parse it
once.

Fetching goes through :class:`~sealroom.attestation.collateral.CollateralSource` with one
:class:`CollateralRequest` per item, each naming the Intel PCS URL and the plain file
names an offline directory may use (``DirectoryCollateral``).
"""

from __future__ import annotations

import binascii
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealroom.attestation.collateral import CollateralRequest
from sealroom.attestation.tdx.tcb import INTEL_STATUSES, TcbStatus
from sealroom.attestation.x509util import load_certificates, load_crl
from sealroom.errors import MalformedEvidenceError

PCS_BASE = "https://api.trustedservices.intel.com"
ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

# --- exact JSON substrings ----------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def _bad(what: str, msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"{what}: {msg}", code="tdx-collateral-malformed")


def top_level_members(text: str, what: str) -> dict[str, tuple[int, int]]:
    """Byte-exact spans (as str indices) of each member value of a top-level JSON object.

    Uses the standard decoder to find where each value ends, so the span is exactly the
    text the signer produced. Duplicate keys are rejected: a signed value must be
    unambiguous.
    """
    i = 0
    n = len(text)

    def ws(j: int) -> int:
        while j < n and text[j] in _WS:
            j += 1
        return j

    i = ws(i)
    if i >= n or text[i] != "{":
        raise _bad(what, "not a JSON object")
    i = ws(i + 1)
    spans: dict[str, tuple[int, int]] = {}
    if i < n and text[i] == "}":
        i += 1
    else:
        while True:
            if i >= n or text[i] != '"':
                raise _bad(what, f"expected a member name at offset {i}")
            try:
                key, i = _DECODER.raw_decode(text, i)
            except (ValueError, RecursionError) as e:
                raise _bad(what, f"bad member name: {e}") from e
            i = ws(i)
            if i >= n or text[i] != ":":
                raise _bad(what, f"expected ':' at offset {i}")
            i = ws(i + 1)
            try:
                _, end = _DECODER.raw_decode(text, i)
            except (ValueError, RecursionError) as e:
                raise _bad(what, f"bad value of {key!r}: {e}") from e
            if key in spans:
                raise _bad(what, f"member {key!r} appears twice")
            spans[key] = (i, end)
            i = ws(end)
            if i < n and text[i] == ",":
                i = ws(i + 1)
                continue
            if i < n and text[i] == "}":
                i += 1
                break
            raise _bad(what, f"expected ',' or '}}' at offset {i}")
    if ws(i) != n:
        raise _bad(what, "trailing data after the JSON object")
    return spans


def _json(text: str | bytes, what: str) -> Any:
    """json.loads with every failure a MalformedEvidenceError (deep nesting, huge numbers)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _bad(what, f"not JSON: {str(e)[:200]}") from e


def _decode_text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(what, f"not UTF-8: {e}") from e


# --- typed readers --------------------------------------------------------------------------


class _Obj:
    """Typed access to a JSON object with messages naming the path."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _bad(where, f"must be an object, got {type(value).__name__}")
        self.v: dict[str, Any] = value
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.v:
            raise _bad(self.where, f"{key!r} is missing")
        return self.v[key]

    def text(self, key: str) -> str:
        val = self._get(key)
        if not isinstance(val, str):
            raise _bad(f"{self.where}.{key}", "must be a string")
        return val

    def opt_text(self, key: str) -> str | None:
        return self.text(key) if key in self.v else None

    def integer(self, key: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
        val = self._get(key)
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            raise _bad(f"{self.where}.{key}", f"must be an integer in [{lo}, {hi}], got {val!r}")
        return val

    def hexbytes(self, key: str, size: int) -> bytes:
        s = self.text(key)
        try:
            b = bytes.fromhex(s)
        except ValueError as e:
            raise _bad(f"{self.where}.{key}", f"not hex: {s[:40]!r}") from e
        if len(b) != size:
            raise _bad(f"{self.where}.{key}", f"must be {size} bytes, got {len(b)}")
        return b

    def time(self, key: str) -> datetime:
        s = self.text(key)
        try:
            t = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError as e:
            raise _bad(f"{self.where}.{key}", f"not an ISO 8601 time: {s!r}") from e
        if t.tzinfo is None:
            raise _bad(f"{self.where}.{key}", f"has no time zone: {s!r}")
        return t

    def items(self, key: str) -> list[Any]:
        val = self._get(key)
        if not isinstance(val, list):
            raise _bad(f"{self.where}.{key}", "must be a list")
        return val

    def obj(self, key: str) -> _Obj:
        return _Obj(self._get(key), f"{self.where}.{key}")

    def status(self, key: str) -> TcbStatus:
        s = self.text(key)
        try:
            st = TcbStatus(s)
        except ValueError:
            st = None
        if st is None or st not in INTEL_STATUSES:
            raise _bad(f"{self.where}.{key}", f"unknown TCB status {s!r}")
        return st

    def advisories(self) -> tuple[str, ...]:
        if "advisoryIDs" not in self.v:
            return ()
        ids = self.items("advisoryIDs")
        if not all(isinstance(i, str) for i in ids):
            raise _bad(f"{self.where}.advisoryIDs", "must be a list of strings")
        return tuple(ids)


# --- TCB info -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedJson:
    """A JSON value exactly as signed, and Intel's raw r||s ECDSA P-256 signature."""

    body: bytes
    signature: bytes


@dataclass(frozen=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]  # empty for SGX TCB info
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes


@dataclass(frozen=True)
class ModuleTcbLevel:
    isvsvn: int
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[ModuleTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str  # "SGX" or "TDX"
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    signed: SignedJson

    @property
    def is_tdx(self) -> bool:
        return self.id == "TDX"

    @functools.cached_property
    def ordered_levels(self) -> tuple[TcbLevel, ...]:
        """Levels highest first, independent of the JSON order, as Intel's QVL sorts them:
        by SGX components, then PCESVN, then (TDX) TDX components, each descending."""
        tdx = self.is_tdx
        return tuple(
            sorted(
                self.tcb_levels,
                key=lambda lv: (lv.sgx_components, lv.pce_svn, lv.tdx_components if tdx else ()),
                reverse=True,
            )
        )


def _svn_list(items: list[Any], where: str) -> tuple[int, ...]:
    if len(items) != 16:
        raise _bad(where, f"must list 16 components, got {len(items)}")
    return tuple(_Obj(c, f"{where}[{i}]").integer("svn", 0, 255) for i, c in enumerate(items))


def _tcb_level(raw: Any, where: str, version: int, tdx: bool) -> TcbLevel:
    lv = _Obj(raw, where)
    tcb = lv.obj("tcb")
    if version >= 3:
        sgx = _svn_list(tcb.items("sgxtcbcomponents"), f"{where}.tcb.sgxtcbcomponents")
        tdx_c = (
            _svn_list(tcb.items("tdxtcbcomponents"), f"{where}.tcb.tdxtcbcomponents") if tdx else ()
        )
    else:
        sgx = tuple(tcb.integer(f"sgxtcbcomp{i:02d}svn", 0, 255) for i in range(1, 17))
        tdx_c = ()
    return TcbLevel(
        sgx_components=sgx,
        pce_svn=tcb.integer("pcesvn", 0, 0xFFFF),
        tdx_components=tdx_c,
        tcb_date=lv.time("tcbDate"),
        tcb_status=lv.status("tcbStatus"),
        advisory_ids=lv.advisories(),
    )


#: The statuses a TDX module identity level may carry (QVL ``VALID_MODULE_TCB_STATUSES``).
MODULE_STATUSES = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED})


def _module_levels(items: list[Any], where: str) -> tuple[ModuleTcbLevel, ...]:
    out = []
    for i, raw in enumerate(items):
        lv = _Obj(raw, f"{where}[{i}]")
        status = lv.status("tcbStatus")
        if status not in MODULE_STATUSES:
            raise _bad(
                f"{where}[{i}].tcbStatus",
                f"{status.value!r} is not a TDX module status (UpToDate, OutOfDate, Revoked)",
            )
        out.append(
            ModuleTcbLevel(
                isvsvn=lv.obj("tcb").integer("isvsvn", 0, 255),
                tcb_date=lv.time("tcbDate"),
                tcb_status=status,
                advisory_ids=lv.advisories(),
            )
        )
    if not out:
        raise _bad(where, "is empty")  # QVL: "should be a nonempty array"
    return tuple(out)


#: The only TCB type Intel defines: the SGX TCB components are the 16 bytes of CPUSVN in
#: order (QVL rejects every other value, "TcbInfo TCB Type ... is not supported").
SUPPORTED_TCB_TYPE = 0


def _tcb_type(t: _Obj, what: str) -> int:
    """``tcbType``: required (TCB info v2 and v3 both carry it) and must be 0. Another
    value would change how the components compare, which this evaluator cannot do."""
    tcb_type = t.integer("tcbType")
    if tcb_type != SUPPORTED_TCB_TYPE:
        raise MalformedEvidenceError(
            f"{what}.tcbType is {tcb_type}, supported: {SUPPORTED_TCB_TYPE} (the TCB "
            "components cannot be compared under another type)",
            code="tdx-tcb-type-unsupported",
        )
    return tcb_type


def parse_tcb_info(signed: SignedJson, what: str = "tcbInfo") -> TcbInfo:
    text = _decode_text(signed.body, what)
    top_level_members(text, what)  # rejects duplicates and trailing data
    t = _Obj(_json(text, what), what)
    tid = t.text("id") if "id" in t.v else "SGX"  # TCB info v2 (SGX) has no id
    if tid not in ("SGX", "TDX"):
        raise _bad(f"{what}.id", f"must be SGX or TDX, got {tid!r}")
    version = t.integer("version")
    if version not in (2, 3) or (tid == "TDX" and version != 3):
        raise _bad(f"{what}.version", f"{tid} TCB info version {version} is not supported")
    tdx = tid == "TDX"
    levels = tuple(
        _tcb_level(raw, f"{what}.tcbLevels[{i}]", version, tdx)
        for i, raw in enumerate(t.items("tcbLevels"))
    )
    if not levels:
        raise _bad(f"{what}.tcbLevels", "is empty")
    module = None
    if "tdxModule" in t.v:
        m = t.obj("tdxModule")
        module = TdxModule(
            m.hexbytes("mrsigner", 48),
            m.hexbytes("attributes", 8),
            m.hexbytes("attributesMask", 8),
        )
    identities = []
    if "tdxModuleIdentities" in t.v:
        for i, raw in enumerate(t.items("tdxModuleIdentities")):
            where = f"{what}.tdxModuleIdentities[{i}]"
            m = _Obj(raw, where)
            identities.append(
                TdxModuleIdentity(
                    id=m.text("id"),
                    mrsigner=m.hexbytes("mrsigner", 48),
                    attributes=m.hexbytes("attributes", 8),
                    attributes_mask=m.hexbytes("attributesMask", 8),
                    tcb_levels=_module_levels(m.items("tcbLevels"), f"{where}.tcbLevels"),
                )
            )
    return TcbInfo(
        id=tid,
        version=version,
        issue_date=t.time("issueDate"),
        next_update=t.time("nextUpdate"),
        fmspc=t.hexbytes("fmspc", 6),
        pce_id=t.hexbytes("pceId", 2),
        tcb_type=_tcb_type(t, what),
        tcb_evaluation_data_number=t.integer("tcbEvaluationDataNumber"),
        tcb_levels=levels,
        tdx_module=module,
        tdx_module_identities=tuple(identities),
        signed=signed,
    )


# --- QE identity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QeTcbLevel:
    isvsvn: int
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class QeIdentity:
    id: str  # "QE" (SGX), "TD_QE" (TDX), "QVE"
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    tcb_levels: tuple[QeTcbLevel, ...]
    signed: SignedJson


def parse_qe_identity(signed: SignedJson, what: str = "enclaveIdentity") -> QeIdentity:
    text = _decode_text(signed.body, what)
    top_level_members(text, what)
    q = _Obj(_json(text, what), what)
    version = q.integer("version")
    if version != 2:
        raise _bad(f"{what}.version", f"enclave identity version {version} is not supported")
    levels = []
    for i, raw in enumerate(q.items("tcbLevels")):
        lv = _Obj(raw, f"{what}.tcbLevels[{i}]")
        levels.append(
            QeTcbLevel(
                isvsvn=lv.obj("tcb").integer("isvsvn", 0, 0xFFFF),
                tcb_date=lv.time("tcbDate"),
                tcb_status=lv.status("tcbStatus"),
                advisory_ids=lv.advisories(),
            )
        )
    if not levels:
        raise _bad(f"{what}.tcbLevels", "is empty")
    return QeIdentity(
        id=q.text("id"),
        version=version,
        issue_date=q.time("issueDate"),
        next_update=q.time("nextUpdate"),
        tcb_evaluation_data_number=q.integer("tcbEvaluationDataNumber"),
        miscselect=int.from_bytes(q.hexbytes("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(q.hexbytes("miscselectMask", 4), "little"),
        attributes=q.hexbytes("attributes", 16),
        attributes_mask=q.hexbytes("attributesMask", 16),
        mrsigner=q.hexbytes("mrsigner", 32),
        isvprodid=q.integer("isvprodid", 0, 0xFFFF),
        tcb_levels=tuple(levels),
        signed=signed,
    )


# --- collateral sets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Collateral:
    """Whatever collateral was found; every part is optional (absent = None / empty)."""

    tcb_info: TcbInfo | None = None
    qe_identity: QeIdentity | None = None
    pck_crl: bytes | None = None  # DER
    root_ca_crl: bytes | None = None  # DER
    #: candidate issuer certificates (TCB Signing, PCK CA): DER, in order of preference
    certs: tuple[bytes, ...] = ()
    #: a PCK chain (PEM) for quotes whose certification data is not type 5
    pck_chain: bytes | None = None
    sources: tuple[str, ...] = ()

    def merged(self, other: Collateral) -> Collateral:
        """``self`` wins per item; certificates accumulate."""
        return Collateral(
            tcb_info=self.tcb_info or other.tcb_info,
            qe_identity=self.qe_identity or other.qe_identity,
            pck_crl=self.pck_crl or other.pck_crl,
            root_ca_crl=self.root_ca_crl or other.root_ca_crl,
            certs=self.certs + tuple(c for c in other.certs if c not in self.certs),
            pck_chain=self.pck_chain or other.pck_chain,
            sources=self.sources + other.sources,
        )


def _sig_hex(value: str, what: str) -> bytes:
    try:
        sig = bytes.fromhex(value)
    except ValueError as e:
        raise _bad(what, "signature is not hex") from e
    if len(sig) != 64:
        raise _bad(what, f"signature must be 64 bytes (r||s), got {len(sig)}")
    return sig


def _crl_der(data: bytes, what: str) -> bytes:
    """Normalise a CRL (DER, PEM or hex text) to DER; malformed CRLs are rejected here.

    cryptography decodes names and entries lazily: they are decoded here so a corrupted
    CRL is a parse error, never a ValueError during verification.
    """
    stripped = data.strip()
    if stripped and all(c in b"0123456789abcdefABCDEF" for c in stripped):
        try:
            data = binascii.unhexlify(stripped)
        except binascii.Error as e:
            raise _bad(what, "odd-length hex") from e
    crl = load_crl(data, what)
    try:
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.extensions)
        for entry in crl:
            _ = (entry.serial_number, entry.revocation_date_utc)
    except ValueError as e:
        raise _bad(what, f"does not decode: {e}") from e
    return crl.public_bytes(serialization.Encoding.DER)


def _crl_issuer_cn(der: bytes) -> str:
    cn = load_crl(der).issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else ""


def _chain_ders(pem: str | bytes, what: str) -> tuple[bytes, ...]:
    raw = pem.encode() if isinstance(pem, str) else pem
    if not raw.strip():
        return ()
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in load_certificates(raw, what))


@functools.lru_cache(maxsize=64)
def parse_pcs_response(data: bytes) -> Collateral:
    """An Intel PCS ``tcbInfo`` or ``enclaveIdentity`` response body."""
    text = _decode_text(data, "PCS response")
    spans = top_level_members(text, "PCS response")
    for key, parse in (("tcbInfo", "tcb"), ("enclaveIdentity", "qe")):
        if key in spans:
            extra = set(spans) - {key, "signature"}
            if extra:
                raise _bad("PCS response", f"unknown members {sorted(extra)}")
            if "signature" not in spans:
                raise _bad("PCS response", "'signature' is missing")
            s, e = spans[key]
            sig_raw = _json(text[slice(*spans["signature"])], "PCS response signature")
            if not isinstance(sig_raw, str):
                raise _bad("PCS response", "'signature' must be a hex string")
            signed = SignedJson(text[s:e].encode("utf-8"), _sig_hex(sig_raw, "PCS response"))
            if parse == "tcb":
                return Collateral(tcb_info=parse_tcb_info(signed), sources=("PCS tcbInfo",))
            return Collateral(
                qe_identity=parse_qe_identity(signed), sources=("PCS enclaveIdentity",)
            )
    raise _bad("PCS response", "has neither 'tcbInfo' nor 'enclaveIdentity'")


_PHALA_KEYS = frozenset(
    {
        "pck_crl_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info_issuer_chain",
        "tcb_info",
        "tcb_info_signature",
        "qe_identity_issuer_chain",
        "qe_identity",
        "qe_identity_signature",
        "pck_certificate_chain",
    }
)


@functools.lru_cache(maxsize=64)
def parse_bundle(data: bytes) -> Collateral:
    """The single-file collateral JSON of dcap-qvl (``QuoteCollateralV3.to_json``)."""
    what = "collateral JSON"
    o = _Obj(_json(_decode_text(data, what), what), what)
    extra = set(o.v) - _PHALA_KEYS
    if extra:
        raise _bad(what, f"unknown keys {sorted(extra)} (expected dcap-qvl QuoteCollateralV3)")
    tcb = qe = None
    if "tcb_info" in o.v:
        tcb = parse_tcb_info(
            SignedJson(
                o.text("tcb_info").encode("utf-8"),
                _sig_hex(o.text("tcb_info_signature"), f"{what}.tcb_info_signature"),
            ),
            f"{what}.tcb_info",
        )
    if "qe_identity" in o.v:
        qe = parse_qe_identity(
            SignedJson(
                o.text("qe_identity").encode("utf-8"),
                _sig_hex(o.text("qe_identity_signature"), f"{what}.qe_identity_signature"),
            ),
            f"{what}.qe_identity",
        )
    certs: list[bytes] = []
    for key in ("tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain"):
        s = o.opt_text(key)
        if s is not None:
            certs.extend(c for c in _chain_ders(s, f"{what}.{key}") if c not in certs)
    pck_crl = root_crl = None
    if "pck_crl" in o.v:
        pck_crl = _crl_der(o.text("pck_crl").encode(), f"{what}.pck_crl")
    if "root_ca_crl" in o.v:
        root_crl = _crl_der(o.text("root_ca_crl").encode(), f"{what}.root_ca_crl")
    pck_chain = o.opt_text("pck_certificate_chain")
    return Collateral(
        tcb_info=tcb,
        qe_identity=qe,
        pck_crl=pck_crl,
        root_ca_crl=root_crl,
        certs=tuple(certs),
        pck_chain=pck_chain.encode() if pck_chain else None,
        sources=("collateral JSON",),
    )


@functools.lru_cache(maxsize=64)
def parse_collateral_file(data: bytes) -> Collateral:
    """A collateral file of any accepted form: dcap-qvl JSON, a PCS JSON response, a CRL
    (DER/PEM) or a PEM certificate chain."""
    head = data.lstrip()[:1]
    if head == b"{":
        text = _decode_text(data, "collateral file")
        spans = top_level_members(text, "collateral file")
        if "tcbInfo" in spans or "enclaveIdentity" in spans:
            return parse_pcs_response(data)
        return parse_bundle(data)
    if b"-----BEGIN X509 CRL-----" in data or head == b"\x30":
        der = _crl_der(data, "collateral CRL")
        is_root = _crl_issuer_cn(der) == "Intel SGX Root CA"
        return (
            Collateral(root_ca_crl=der, sources=("root CA CRL file",))
            if is_root
            else Collateral(pck_crl=der, sources=("PCK CRL file",))
        )
    if b"-----BEGIN CERTIFICATE-----" in data:
        return Collateral(
            certs=_chain_ders(data, "collateral certificates"), sources=("certificate file",)
        )
    raise _bad("collateral file", "is neither JSON, a CRL nor PEM certificates")


@functools.lru_cache(maxsize=128)
def parse_crl_item(data: bytes) -> bytes:
    return _crl_der(data, "CRL")


@functools.lru_cache(maxsize=128)
def parse_cert_item(data: bytes) -> tuple[bytes, ...]:
    return _chain_ders(data, "certificate attachment")


def from_attachments(attachments: Mapping[str, bytes]) -> Collateral:
    """Collateral carried with the evidence item.

    ``collateral`` (and ``collateral.N``): any collateral file (see
    :func:`parse_collateral_file`); ``tcb_info``/``qe_identity``: PCS responses;
    ``pck_crl``/``root_ca_crl``: CRLs; ``cert``/``cert.N``: PEM certificates (issuer chains,
    e.g. the Intel SGX TCB Signing certificate), the CLI's ``--certs``.
    """
    # Parsed once per distinct set of attachment bytes.
    items = tuple(
        sorted((k, v) for k, v in attachments.items() if k.split(".", 1)[0] in _ATTACHMENT_NAMES)
    )
    return _from_items(items) if items else Collateral()


_ATTACHMENT_NAMES = frozenset(
    {"collateral", "tcb_info", "qe_identity", "pck_crl", "root_ca_crl", "cert"}
)


@functools.lru_cache(maxsize=64)
def _from_items(items: tuple[tuple[str, bytes], ...]) -> Collateral:
    out = Collateral()
    for name, data in items:
        base = name.split(".", 1)[0]
        if base == "collateral":
            out = out.merged(parse_collateral_file(data))
        elif base in ("tcb_info", "qe_identity"):
            out = out.merged(parse_pcs_response(data))
        elif base == "pck_crl":
            out = out.merged(Collateral(pck_crl=parse_crl_item(data)))
        elif base == "root_ca_crl":
            out = out.merged(Collateral(root_ca_crl=parse_crl_item(data)))
        elif base == "cert":
            out = out.merged(Collateral(certs=parse_cert_item(data)))
    if out.sources or out.certs:
        out = Collateral(
            out.tcb_info,
            out.qe_identity,
            out.pck_crl,
            out.root_ca_crl,
            out.certs,
            out.pck_chain,
            ("attachments",),
        )
    return out


# --- requests -------------------------------------------------------------------------------


def _tee_path(tdx: bool) -> str:
    return "tdx" if tdx else "sgx"


def bundle_request(tdx: bool, fmspc: bytes) -> CollateralRequest:
    """A dcap-qvl single-file collateral in a directory (no vendor serves this form)."""
    return CollateralRequest(
        kind=_tee_path(tdx),
        item="collateral bundle",
        url=f"sealroom-local://dcap-collateral/{_tee_path(tdx)}/{fmspc.hex()}",
        filenames=(f"collateral_{fmspc.hex()}.json", "collateral.json"),
        params={"fmspc": fmspc.hex()},
    )


def tcb_info_request(tdx: bool, fmspc: bytes) -> CollateralRequest:
    f = fmspc.hex()
    return CollateralRequest(
        kind=_tee_path(tdx),
        item="TCB info",
        url=f"{PCS_BASE}/{_tee_path(tdx)}/certification/v4/tcb?fmspc={f}",
        filenames=(
            f"tcbinfo_fmspc{f}_response.json",
            f"tcbinfo_{f}.json",
            "tcbinfo_response.json",
            "tcbinfo.json",
            "tcb_info.json",
        ),
        params={"fmspc": f},
    )


def qe_identity_request(tdx: bool) -> CollateralRequest:
    names = (
        (
            "td_qe_identity_response.json",
            "qe_identity_response.json",
            "td_qe_identity.json",
            "qe_identity.json",
        )
        if tdx
        else ("qe_identity_response.json", "qe_identity.json")
    )
    return CollateralRequest(
        kind=_tee_path(tdx),
        item="QE identity",
        url=f"{PCS_BASE}/{_tee_path(tdx)}/certification/v4/qe/identity",
        filenames=names,
    )


def pck_crl_request(tdx: bool, ca: str) -> CollateralRequest:
    """``ca`` is "platform" or "processor" (from the PCK certificate's issuer)."""
    return CollateralRequest(
        kind=_tee_path(tdx),
        item=f"PCK {ca} CA CRL",
        url=f"{PCS_BASE}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
        filenames=(f"pck_{ca}_crl.der", f"pck_{ca}_crl.pem", "pck_crl.der", "pckcrl.der", "pckcrl"),
        params={"ca": ca},
    )


def root_ca_crl_request(tdx: bool) -> CollateralRequest:
    return CollateralRequest(
        kind=_tee_path(tdx),
        item="Intel SGX Root CA CRL",
        url=ROOT_CA_CRL_URL,
        filenames=("root_ca_crl.der", "rootcrl.der", "IntelSGXRootCA.der", "root_ca_crl.pem"),
    )


def tcb_signing_chain_request(tdx: bool) -> CollateralRequest:
    """The Intel SGX TCB Signing chain. PCS serves it only as the ``TCB-Info-Issuer-Chain``
    response header of the TCB info URL, so the URL carries that header name as fragment."""
    return CollateralRequest(
        kind=_tee_path(tdx),
        item="TCB signing chain",
        url=f"{PCS_BASE}/{_tee_path(tdx)}/certification/v4/tcb#TCB-Info-Issuer-Chain",
        filenames=(
            "Intel_SGX_TCB_Signing_chain.pem",
            "tcb_info_issuer_chain.pem",
            "tcb_signing_chain.pem",
        ),
    )


def clear_caches() -> None:
    for f in (
        parse_pcs_response,
        parse_bundle,
        parse_collateral_file,
        parse_crl_item,
        parse_cert_item,
        _from_items,
    ):
        f.cache_clear()
