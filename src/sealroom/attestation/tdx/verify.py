"""Verify an Intel DCAP quote (TDX v4/v5, SGX v3): signatures, chains, CRLs, collateral, TCB.

Steps (Intel "TDX DCAP Quote Verification Library" / "SGX ECDSA QVL", quote verification):

1. parse the quote strictly (abi.py); QE_VENDOR_ID must be Intel's;
2. PCK chain from the certification data (type 5): PCK leaf <- PCK Platform/Processor CA
   <- Intel SGX Root CA (embedded, or a root the caller added: then not vendor-rooted and
   the claims say ``simulated``), every certificate valid at ``now``;
3. QE report signed by the PCK key (ECDSA P-256, SHA-256);
4. QE REPORTDATA == SHA-256(attestation key || QE authentication data) || 32 zero bytes;
5. quote signature by the attestation key over header || body;
6. collateral: the verifier's (its files, then ``ctx.collateral``) item by item, the
   presenter's (the item's attachments) only where the verifier has none and never older
   than what the verifier has seen (ADR 0020); TCB info and QE identity each signed
   (over the exact JSON bytes) by an Intel SGX TCB Signing certificate that chains to the
   same root as the PCK; ``issueDate <= now <= nextUpdate``; TCB info FMSPC/PCE-ID/id
   equal the PCK certificate's and the quote's;
7. CRLs when available: the root CA CRL (signed by the root) must not list the PCK CA or
   the TCB Signing certificate, the PCK CRL (signed by the PCK CA) must not list the PCK;
   each current at ``now``. Stale collateral is an AttestationError
   (``tdx-collateral-expired``), never silently ignored;
8. TCB evaluation (tcb.py): platform, QE identity and TDX module statuses.

Absent collateral is not an error here: the claims say what was checked
(``collateral``, ``crl_checked``, ``tcb_status`` "unknown") and the policy decides.

Caching: certificates, PEM chains, PCK extensions, verified chain links, collateral
signatures and CRL verdicts are cached by their exact bytes, so repeated verifications
against the same collateral do not redo them. Validity at ``now`` is re-checked on every
call. Nothing about the quote itself (its signatures, QE report, binding) is cached.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealroom.attestation.collateral import (
    CollateralRequest,
    CollateralSource,
    SeenMark,
    crl_series,
    qe_identity_series,
    refuse_rollback,
    tcb_info_series,
)
from sealroom.attestation.tdx import collateral as coll
from sealroom.attestation.tdx.abi import (
    CERT_DATA_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    EnclaveReport,
    Quote,
    TdReportBody,
    TeeType,
)
from sealroom.attestation.tdx.collateral import Collateral, QeIdentity, TcbInfo
from sealroom.attestation.tdx.pck import PckExtension, parse_sgx_extension
from sealroom.attestation.tdx.tcb import StatusResult, TcbStatus
from sealroom.attestation.tdx.tcb import evaluate as _evaluate
from sealroom.attestation.tdx.tcb import match_qe as _match_qe
from sealroom.attestation.x509util import (
    check_crl,
    check_validity,
    fingerprint,
    load_certificate,
    load_certificates,
    load_crl,
    public_key,
    subject_cn,
    verify_chain,
)
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError

_DER = serialization.Encoding.DER


@functools.cache
def intel_root() -> x509.Certificate:
    pem = resources.files("sealroom.attestation.tdx") / "roots" / "Intel_SGX_Root_CA.pem"
    return load_certificate(pem.read_bytes(), "embedded Intel SGX Root CA")


@functools.cache
def intel_root_der() -> bytes:
    return intel_root().public_bytes(_DER)


# --- byte-keyed caches ---------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _cert(der: bytes) -> x509.Certificate:
    cert = load_certificate(der, "certificate")
    # cryptography decodes names, extensions and keys lazily; decode them here so a
    # corrupted certificate is a parse error, not a ValueError deep inside verification.
    try:
        _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_after_utc)
    except ValueError as e:
        raise MalformedEvidenceError(
            f"certificate {cert.serial_number:#x} does not decode: {e}",
            code="tdx-certificate-malformed",
        ) from e
    public_key(cert, f"certificate {cert.serial_number:#x}")
    return cert


_PEM_BLOCK = rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
_PEM_CHAIN = re.compile(rb"\s*(?:" + _PEM_BLOCK + rb"\s*)+")


@functools.lru_cache(maxsize=256)
def _pem_chain(data: bytes) -> tuple[bytes, ...]:
    """DER of each certificate of a PEM chain.

    Strict: the text must be PEM certificate blocks and whitespace only (the QE ends it
    with one NUL byte, which is allowed), so no block can be silently skipped.
    """
    text = data[:-1] if data.endswith(b"\x00") else data
    if not _PEM_CHAIN.fullmatch(text):
        raise MalformedEvidenceError(
            "PCK certificate chain is not a sequence of PEM certificates",
            code="tdx-pck-chain-malformed",
        )
    certs = load_certificates(text, "PCK certificate chain")
    return tuple(c.public_bytes(_DER) for c in certs)


@functools.lru_cache(maxsize=256)
def _pck_extension(der: bytes) -> PckExtension:
    return parse_sgx_extension(_cert(der))


@functools.lru_cache(maxsize=256)
def _public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    key = public_key(_cert(der))
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AttestationError(
            f"{subject_cn(_cert(der))!r} does not hold a P-256 key", code="tdx-pck-key-invalid"
        )
    return key


class _Verdicts:
    """A bounded map of exact-bytes keys to successful verification outcomes."""

    def __init__(self, size: int = 256) -> None:
        self._d: OrderedDict[tuple[bytes, ...], object] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # verifiers may run in several threads

    def get(self, key: tuple[bytes, ...]) -> object | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple[bytes, ...], value: object) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


_CHAINS = _Verdicts()
_JSON_SIGS = _Verdicts()
_CRLS = _Verdicts()


def clear_caches() -> None:
    """Forget every cached parse and verdict (tests, benchmarks)."""
    for f in (
        _cert,
        _pem_chain,
        _pck_extension,
        _public_key,
        _attestation_key,
        _tcb_signing_candidates,
        _crl_facts,
        _crl_obj,
    ):
        f.cache_clear()
    coll.clear_caches()
    for v in (_CHAINS, _JSON_SIGS, _CRLS):
        v.clear()


def _verify_chain_cached(
    chain: Sequence[tuple[str, bytes]], roots: Sequence[bytes], now: datetime
) -> bytes:
    """x509util.verify_chain, with the signature links remembered per exact bytes.

    Returns the anchoring root's DER. Validity at ``now`` is checked on every call.
    """
    key = (*(d for _, d in chain), b"|", *roots)
    hit = _CHAINS.get(key)
    if isinstance(hit, _ChainVerdict):
        if hit.not_before <= now <= hit.not_after:
            return hit.anchor
        # Outside the joint window: let x509util name the certificate and the reason.
        for name, der in chain:
            check_validity(_cert(der), now, name)
        root = _cert(hit.anchor)
        check_validity(root, now, subject_cn(root))
        return hit.anchor  # pragma: no cover - one of the checks above raised
    named = [(name, _cert(der)) for name, der in chain]
    anchor = verify_chain(named, [_cert(r) for r in roots], now)
    everyone = [c for _, c in named] + [anchor]
    _CHAINS.put(
        key,
        _ChainVerdict(
            anchor=anchor.public_bytes(_DER),
            not_before=max(c.not_valid_before_utc for c in everyone),
            not_after=min(c.not_valid_after_utc for c in everyone),
        ),
    )
    return anchor.public_bytes(_DER)


@dataclass(frozen=True)
class _ChainVerdict:
    """Signatures of a chain checked once; the joint validity window for later calls."""

    anchor: bytes
    not_before: datetime
    not_after: datetime


def _ecdsa_verify(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _attestation_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The quote's attestation key as an object (parsing only; cached by its bytes)."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError as e:
        raise AttestationError(
            "quote attestation key is not a valid P-256 point", code="tdx-attestation-key-invalid"
        ) from e


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcbEvaluation:
    status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform: StatusResult
    qe: StatusResult
    module: StatusResult | None
    detail: str
    tcb_date: datetime | None
    evaluation_data_number: int | None


@dataclass(frozen=True)
class VerifiedQuote:
    quote: Quote
    pck: PckExtension
    pck_issuer: str  # "platform" or "processor"
    pck_cert_der: bytes
    root_der: bytes
    vendor_rooted: bool
    tcb: TcbEvaluation
    #: which collateral items were present and verified: tcb_info, qe_identity, pck_crl,
    #: root_ca_crl
    collateral_items: tuple[str, ...]
    crl_checked: bool
    collateral_expiry: datetime | None
    collateral_sources: tuple[str, ...]


# --- collateral gathering ------------------------------------------------------------------


def _fetch(source: CollateralSource, request: CollateralRequest, optional: bool) -> bytes | None:
    try:
        return source.fetch(request)
    except UnavailableError:
        if optional:
            return None
        raise


def gather_collateral(
    attached: Collateral,
    source: CollateralSource,
    tdx: bool,
    fmspc: bytes,
    pck_ca: str,
) -> Collateral:
    """Attachments first; then the source for every item still missing."""
    got = attached
    if got.tcb_info is None or got.qe_identity is None:
        bundle = _fetch(source, coll.bundle_request(tdx, fmspc), optional=True)
        if bundle is not None:
            got = got.merged(coll.parse_bundle(bundle))
    if got.tcb_info is None:
        data = _fetch(source, coll.tcb_info_request(tdx, fmspc), optional=False)
        if data is not None:
            got = got.merged(coll.parse_pcs_response(data))
    if got.qe_identity is None:
        data = _fetch(source, coll.qe_identity_request(tdx), optional=False)
        if data is not None:
            got = got.merged(coll.parse_pcs_response(data))
    if got.pck_crl is None:
        data = _fetch(source, coll.pck_crl_request(tdx, pck_ca), optional=False)
        if data is not None:
            got = got.merged(Collateral(pck_crl=coll.parse_crl_item(data), sources=("PCK CRL",)))
    if got.root_ca_crl is None:
        data = _fetch(source, coll.root_ca_crl_request(tdx), optional=False)
        if data is not None:
            got = got.merged(
                Collateral(root_ca_crl=coll.parse_crl_item(data), sources=("root CA CRL",))
            )
    if (got.tcb_info is not None or got.qe_identity is not None) and not any(
        "TCB Signing" in subject_cn(_cert(c)) for c in got.certs
    ):
        data = _fetch(source, coll.tcb_signing_chain_request(tdx), optional=False)
        if data is not None:
            got = got.merged(Collateral(certs=coll.parse_cert_item(data)))
    return got


def _marks(c: Collateral) -> dict[str, tuple[str, SeenMark]]:
    """item name -> (series, mark) for the versioned items of ``c``."""
    out: dict[str, tuple[str, SeenMark]] = {}
    if c.tcb_info is not None:
        t = c.tcb_info
        out["tcb_info"] = (
            tcb_info_series(t.id, t.fmspc),
            SeenMark(t.tcb_evaluation_data_number, t.issue_date),
        )
    if c.qe_identity is not None:
        q = c.qe_identity
        out["qe_identity"] = (
            qe_identity_series(q.id),
            SeenMark(q.tcb_evaluation_data_number, q.issue_date),
        )
    for name, crl in (("pck_crl", c.pck_crl), ("root_ca_crl", c.root_ca_crl)):
        if crl is not None:
            issuer, this_update, _ = _crl_facts(crl)
            out[name] = (crl_series(issuer.rfc4514_string()), SeenMark(None, this_update))
    return out


_ITEMS = ("tcb_info", "qe_identity", "pck_crl", "root_ca_crl")


def choose_collateral(
    verifier: Collateral,
    presenter: Collateral,
    seen: Callable[[str], SeenMark | None],
) -> tuple[Collateral, dict[str, tuple[str, SeenMark]]]:
    """Item by item: the verifier's; else the presenter's, refused (``collateral-rollback``)
    when older than what the verifier has seen or holds for the same series. Issuer
    certificates accumulate (they only help find a chain to the verifier's root).
    Returns the collateral to use and, by item name, the (series, mark) of each item used."""
    mine, theirs = _marks(verifier), _marks(presenter)
    sources: list[str] = []
    observed: dict[str, tuple[str, SeenMark]] = {}
    for name in _ITEMS:
        if getattr(verifier, name) is not None:
            sources.append(f"{name}: verifier")
            observed[name] = mine[name]
        elif getattr(presenter, name) is not None:
            series, mark = theirs[name]
            known = seen(series)
            # The verifier's own item of the same series (a PCK CRL of the same CA held
            # under another name) counts as seen too.
            for s2, m2 in mine.values():
                if s2 == series:
                    known = m2.newer(known)
            refuse_rollback(name.replace("_", " "), series, mark, known)
            sources.append(f"{name}: presenter")
            observed[name] = (series, mark)
    # merged(): the verifier's item wins wherever it has one, certificates accumulate.
    return dataclasses.replace(verifier.merged(presenter), sources=tuple(sources)), observed


def _observed_crl(
    name: str, authentic: Callable[[str], None], check: Callable[[], datetime | None]
) -> datetime | None:
    """Run a CRL check; a CRL whose signature verified is authentic even when it revokes
    (that verdict is about the quote's certificates, not about the CRL)."""
    try:
        nu = check()
    except AttestationError as e:
        if e.code == "certificate-revoked":
            authentic(name)
        raise
    authentic(name)
    return nu


# --- collateral checks ---------------------------------------------------------------------


def _check_window(what: str, issued: datetime, next_update: datetime | None, now: datetime) -> None:
    if now < issued:
        raise AttestationError(
            f"{what} is not yet valid: issued {issued.isoformat()}, now {now.isoformat()}",
            code="tdx-collateral-not-yet-valid",
        )
    if next_update is not None and now > next_update:
        raise AttestationError(
            f"{what} expired: nextUpdate {next_update.isoformat()}, now {now.isoformat()} "
            "(fetch current collateral, or pass the evidence's time with --now)",
            code="tdx-collateral-expired",
        )


def _verify_signed_json(
    what: str, signed: coll.SignedJson, certs: Sequence[bytes], root_der: bytes, now: datetime
) -> bytes:
    """Find the TCB Signing certificate that chains to ``root_der`` at ``now`` and signed
    ``signed``. Returns its DER."""
    candidates = _tcb_signing_candidates(tuple(certs), root_der)
    if not candidates:
        raise UnavailableError(
            f"{what} cannot be checked: no Intel SGX TCB Signing certificate was supplied "
            "(pass its chain with --certs, or a collateral file that carries it)",
            code="tdx-collateral-unavailable",
        )
    first_error: AttestationError | None = None
    for der in candidates:
        try:
            _verify_chain_cached([("Intel SGX TCB Signing", der)], [root_der], now)
        except AttestationError as e:
            first_error = first_error or e
            continue
        key = (signed.body, signed.signature, der)
        if _JSON_SIGS.get(key) is None:
            if not _ecdsa_verify(_public_key(der), signed.signature, signed.body):
                first_error = first_error or AttestationError(
                    f"{what} signature does not verify with {subject_cn(_cert(der))!r}",
                    code="tdx-collateral-signature-invalid",
                )
                continue
            _JSON_SIGS.put(key, True)
        return der
    assert first_error is not None
    raise first_error


@functools.lru_cache(maxsize=64)
def _tcb_signing_candidates(certs: tuple[bytes, ...], root_der: bytes) -> tuple[bytes, ...]:
    return tuple(c for c in certs if c != root_der and "TCB Signing" in subject_cn(_cert(c)))


@functools.lru_cache(maxsize=128)
def _crl_facts(der: bytes) -> tuple[x509.Name, datetime, datetime | None]:
    crl = _crl_obj(der)
    return crl.issuer, crl.last_update_utc, crl.next_update_utc


def _check_crl_cached(
    what: str,
    crl_der: bytes,
    issuer_der: bytes,
    certs: Sequence[tuple[str, bytes]],
    now: datetime,
) -> datetime | None:
    """x509util.check_crl with the signature and revocation verdict remembered per exact
    bytes; freshness at ``now`` is checked on every call. Returns nextUpdate."""
    _, last_update, next_update = _crl_facts(crl_der)
    _check_window(what, last_update, next_update, now)
    key = (crl_der, issuer_der, *(d for _, d in certs))
    if _CRLS.get(key) is None:
        crl = _crl_obj(crl_der)
        check_crl(crl, _cert(issuer_der), [(n, _cert(d)) for n, d in certs], now, what)
        _CRLS.put(key, True)
    return next_update


@functools.lru_cache(maxsize=128)
def _crl_obj(der: bytes) -> x509.CertificateRevocationList:
    return load_crl(der, "CRL")


def _check_tcb_info(tcb: TcbInfo, quote: Quote, pck: PckExtension) -> None:
    """The TCB info describes this quote's platform (QVL 4.1.2.4.9-10).

    Intel-signed collateral about another platform (FMSPC, PCE-ID) or TEE (SGX vs TDX)
    says nothing against the quote: the verifier simply lacks the collateral for it, so
    this is UnavailableError (exit 3), never "not authentic".
    """
    want_id = "TDX" if quote.tee_type is TeeType.TDX else "SGX"
    if tcb.id != want_id:
        raise UnavailableError(
            f"TCB info id is {tcb.id}, a {want_id} quote needs {want_id} TCB info "
            f"(FMSPC {pck.fmspc.hex()}): collateral for this quote is unavailable",
            code="tdx-collateral-mismatch",
        )
    if tcb.fmspc != pck.fmspc:
        raise UnavailableError(
            f"TCB info FMSPC is {tcb.fmspc.hex()}, PCK certificate FMSPC is {pck.fmspc.hex()}: "
            f"collateral for another platform (fetch the TCB info of FMSPC {pck.fmspc.hex()})",
            code="tdx-fmspc-mismatch",
        )
    if tcb.pce_id != pck.pce_id:
        raise UnavailableError(
            f"TCB info PCE-ID is {tcb.pce_id.hex()}, PCK certificate PCE-ID is "
            f"{pck.pce_id.hex()}: collateral for another platform",
            code="tdx-collateral-mismatch",
        )


def _check_qe_identity_id(qe: QeIdentity, quote: Quote) -> None:
    want = "TD_QE" if quote.tee_type is TeeType.TDX else "QE"
    if qe.id != want:
        raise UnavailableError(
            f"QE identity id is {qe.id}, a {quote.tee_type.name} quote needs {want}: "
            "collateral for this quote is unavailable",
            code="tdx-collateral-mismatch",
        )


# --- the quote -----------------------------------------------------------------------------


def _pck_issuer_kind(ca: x509.Certificate) -> str:
    cn = subject_cn(ca)
    if "Platform CA" in cn:
        return "platform"
    if "Processor CA" in cn:
        return "processor"
    raise AttestationError(
        f"PCK issuer is {cn!r}, expected an Intel SGX PCK Platform CA or Processor CA",
        code="tdx-pck-issuer-unknown",
    )


def verify_quote(
    data: bytes | Quote,
    *,
    now: datetime,
    attached: Collateral | None = None,
    source: CollateralSource | None = None,
    extra_roots: Sequence[x509.Certificate] = (),
    verifier: Collateral | None = None,
    seen: Callable[[str], SeenMark | None] | None = None,
    observe: Callable[[str, SeenMark], None] | None = None,
) -> VerifiedQuote:
    """Steps 1-8 of the module docstring. ``now`` is the caller's, captured once.

    ``attached``: collateral carried with the evidence (the presenter's); ``verifier``:
    collateral files the verifier named; ``source``: the verifier's collateral source;
    ``seen(series)``: the newest mark the verifier has seen; ``observe(series, mark)`` is
    told each collateral item found authentic (ADR 0020)."""
    quote = data if isinstance(data, Quote) else Quote.from_bytes(data)
    attached = attached or Collateral()
    # Step 1: Intel's QE.
    if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise AttestationError(
            f"QE_VENDOR_ID is {quote.header.qe_vendor_id.hex()}, expected Intel's "
            f"{INTEL_QE_VENDOR_ID.hex()}",
            code="tdx-qe-vendor-unknown",
        )
    sig = quote.signature_data
    qe = sig.qe

    # Step 2: PCK chain.
    if qe.pck_cert_data.cert_type == CERT_DATA_PCK_CHAIN:
        chain_ders = _pem_chain(qe.pck_cert_data.data)
    elif attached.pck_chain is not None:
        chain_ders = _pem_chain(attached.pck_chain)
    else:
        raise UnavailableError(
            f"quote certification data is type {qe.pck_cert_data.cert_type}, not a PCK chain "
            "(type 5), and no PCK chain was supplied with the collateral",
            code="tdx-pck-chain-unavailable",
        )
    if len(chain_ders) < 2:
        raise AttestationError(
            f"PCK chain holds {len(chain_ders)} certificate(s), expected PCK, PCK CA and root",
            code="tdx-pck-chain-invalid",
        )
    names = ["PCK certificate", "PCK CA", "root CA"]
    chain = [(names[min(i, 2)], d) for i, d in enumerate(chain_ders[:3])]
    if len(chain_ders) > 3:
        raise AttestationError(
            f"PCK chain holds {len(chain_ders)} certificates, expected at most 3",
            code="tdx-pck-chain-invalid",
        )
    roots = [intel_root_der(), *(r.public_bytes(_DER) for r in extra_roots)]
    root_der = _verify_chain_cached(chain, roots, now)
    pck_der, ca_der = chain_ders[0], chain_ders[1]
    pck_issuer = _pck_issuer_kind(_cert(ca_der))
    pck = _pck_extension(pck_der)

    # Step 3: QE report signed by the PCK key.
    if not _ecdsa_verify(_public_key(pck_der), qe.qe_report_signature, qe.qe_report_raw):
        raise AttestationError(
            "QE report signature does not verify with the PCK certificate's key",
            code="tdx-qe-report-signature-invalid",
        )
    # Step 4: the attestation key is the one the QE vouched for.
    want = hashlib.sha256(sig.attestation_key + qe.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(qe.qe_report.report_data, want):
        raise AttestationError(
            f"QE REPORTDATA is {qe.qe_report.report_data.hex()}, expected SHA-256(attestation "
            f"key || QE authentication data) || zeros = {want.hex()}",
            code="tdx-qe-binding-invalid",
        )
    # Step 5: the quote signature.
    if not _ecdsa_verify(_attestation_key(sig.attestation_key), sig.signature, quote.signed_bytes):
        raise AttestationError(
            "quote signature does not verify with the attestation key",
            code="tdx-quote-signature-invalid",
        )

    # Step 6: collateral. The verifier's (its files, then its source) wins item by item;
    # the presenter's fills only what the verifier lacks, never older than it has seen.
    tdx = quote.tee_type is TeeType.TDX
    mine = verifier or Collateral()
    if source is not None:
        mine = gather_collateral(mine, source, tdx, pck.fmspc, pck_issuer)
    got, marks = choose_collateral(mine, attached, seen or (lambda _s: None))

    def authentic(name: str) -> None:
        """``name`` verified as Intel's: the verifier has now seen it."""
        if observe is not None and name in marks:
            observe(*marks[name])

    items: list[str] = []
    expiries: list[datetime] = []
    signer_ders: list[bytes] = []
    tcb_info = got.tcb_info
    qe_id = got.qe_identity
    if tcb_info is not None:
        _check_tcb_info(tcb_info, quote, pck)
        signer_ders.append(
            _verify_signed_json("TCB info", tcb_info.signed, got.certs, root_der, now)
        )
        authentic("tcb_info")
        _check_window("TCB info", tcb_info.issue_date, tcb_info.next_update, now)
        items.append("tcb_info")
        expiries.append(tcb_info.next_update)
    if qe_id is not None:
        _check_qe_identity_id(qe_id, quote)
        signer_ders.append(
            _verify_signed_json("QE identity", qe_id.signed, got.certs, root_der, now)
        )
        authentic("qe_identity")
        _check_window("QE identity", qe_id.issue_date, qe_id.next_update, now)
        items.append("qe_identity")
        expiries.append(qe_id.next_update)

    # Step 7: CRLs.
    if got.root_ca_crl is not None:
        listed = [("PCK CA", ca_der)] + [
            ("Intel SGX TCB Signing", d) for d in dict.fromkeys(signer_ders)
        ]
        nu = _observed_crl(
            "root_ca_crl",
            authentic,
            lambda: _check_crl_cached("root CA CRL", got.root_ca_crl or b"", root_der, listed, now),
        )
        items.append("root_ca_crl")
        if nu is not None:
            expiries.append(nu)
    if got.pck_crl is not None:
        crl_issuer = _crl_facts(got.pck_crl)[0]
        if crl_issuer != _cert(ca_der).subject:
            raise AttestationError(
                f"PCK CRL is issued by {crl_issuer.rfc4514_string()!r}, but the PCK is issued "
                f"by {_cert(ca_der).subject.rfc4514_string()!r} (pass the {pck_issuer} CA CRL)",
                code="tdx-crl-mismatch",
            )
        pck_listed = [("PCK certificate", pck_der)]
        nu = _observed_crl(
            "pck_crl",
            authentic,
            lambda: _check_crl_cached("PCK CRL", got.pck_crl or b"", ca_der, pck_listed, now),
        )
        items.append("pck_crl")
        if nu is not None:
            expiries.append(nu)
    crl_checked = "root_ca_crl" in items and "pck_crl" in items

    # Step 8: TCB.
    td = quote.body if isinstance(quote.body, TdReportBody) else None
    tcb = evaluate_tcb(tcb_info, qe_id, pck, qe.qe_report, td)
    return VerifiedQuote(
        quote=quote,
        pck=pck,
        pck_issuer=pck_issuer,
        pck_cert_der=pck_der,
        root_der=root_der,
        vendor_rooted=root_der == intel_root_der(),
        tcb=tcb,
        collateral_items=tuple(items),
        crl_checked=crl_checked,
        collateral_expiry=min(expiries) if expiries else None,
        collateral_sources=got.sources,
    )


def evaluate_tcb(
    tcb_info: TcbInfo | None,
    qe_identity: QeIdentity | None,
    pck: PckExtension,
    qe_report: EnclaveReport,
    td: TdReportBody | None,
) -> TcbEvaluation:
    qe_status = (
        _match_qe(qe_identity, qe_report)
        if qe_identity is not None
        else StatusResult.unknown("no QE identity")
    )
    if tcb_info is None:
        return TcbEvaluation(
            status=TcbStatus.UNKNOWN,
            advisory_ids=(),
            platform=StatusResult.unknown("no TCB info"),
            qe=qe_status,
            module=None,
            detail="no TCB info: the platform TCB was not evaluated",
            tcb_date=None,
            evaluation_data_number=None,
        )
    ev = _evaluate(tcb_info, qe_status, pck, td)
    platform, merged = ev.platform, ev.status
    return TcbEvaluation(
        status=merged.status,
        advisory_ids=merged.advisory_ids,
        platform=platform,
        qe=qe_status,
        module=ev.module,
        detail=merged.detail,
        tcb_date=platform.tcb_date,
        evaluation_data_number=tcb_info.tcb_evaluation_data_number,
    )


def inspect_pck_chain(pem: bytes) -> tuple[PckExtension, str | None]:
    """Parse only (for ``inspect``): the PCK extension and the issuing CA kind."""
    ders = _pem_chain(pem)
    pck = _pck_extension(ders[0])
    issuer = None
    if len(ders) > 1:
        try:
            issuer = _pck_issuer_kind(_cert(ders[1]))
        except AttestationError:
            issuer = None
    return pck, issuer


def root_fingerprint(der: bytes) -> str:
    return fingerprint(_cert(der))


__all__ = [
    "TcbEvaluation",
    "VerifiedQuote",
    "clear_caches",
    "evaluate_tcb",
    "gather_collateral",
    "inspect_pck_chain",
    "intel_root",
    "verify_quote",
]
