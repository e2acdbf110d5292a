"""X.509 helpers shared by every evidence kind: loading, issuer signatures, validity, CRLs.

Certificates are parsed by pyca/cryptography; nothing here does its own cryptography.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import pairwise

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.utils import CryptographyDeprecationWarning

from sealroom.errors import AttestationError, MalformedEvidenceError

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """Load one certificate, DER or PEM.

    Every AMD VCEK/VLEK/ASK carries serial number 0, which RFC 5280 forbids and
    cryptography reports with a CryptographyDeprecationWarning. sealroom accepts it on
    purpose (the certificates are AMD's, we cannot change them) and silences exactly
    that warning here, rather than globally. The dependency pin keeps a future
    cryptography release that raises instead from being installed unnoticed.

    Parsed certificates are memoised by their exact bytes (they are immutable), so a
    verifier that sees the same VCEK again does not parse it again.
    """
    try:
        return _load_certificate_cached(bytes(data))
    except ValueError as e:
        raise MalformedEvidenceError(f"{what} is not a valid X.509 certificate: {e}") from e


@lru_cache(maxsize=512)
def _load_certificate_cached(data: bytes) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*serial number.*", category=CryptographyDeprecationWarning
        )
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)


def load_certificates(data: bytes, what: str = "certificate bundle") -> list[x509.Certificate]:
    """All certificates in a PEM bundle, or the single DER certificate."""
    pems = _PEM_CERT.findall(data)
    if pems:
        return [load_certificate(p, f"{what}[{i}]") for i, p in enumerate(pems)]
    return [load_certificate(data, what)]


@lru_cache(maxsize=1024)
def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER, hex (memoised: certificates are immutable and hash by DER)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def public_key(cert: x509.Certificate, what: str = "certificate") -> CertificatePublicKeyTypes:
    """The certificate's public key; a key that does not decode (an unknown curve or
    algorithm OID, a bad point) is malformed evidence, never a library exception."""
    try:
        return _public_key_cached(cert)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise MalformedEvidenceError(
            f"{what} public key does not decode: {e}", code="certificate-key-malformed"
        ) from e


@lru_cache(maxsize=1024)
def _public_key_cached(cert: x509.Certificate) -> CertificatePublicKeyTypes:
    return cert.public_key()


@lru_cache(maxsize=1024)
def subject_cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


# Signatures already verified, keyed by the SHA-256 of both certificates' DER. Only the
# (time-independent) signature is cached; names and validity are checked on every call.
_VERIFIED_LINKS: OrderedDict[tuple[str, str], None] = OrderedDict()
_VERIFIED_LINKS_MAX = 1024
_LINKS_LOCK = threading.Lock()


#: Every name the sim authority issues carries this word (sim/authority.py); a root whose
#: subject does is a simulated root whatever else it says.
SIMULATED_MARKER = "SIMULATED"


def is_simulated_root(cert: x509.Certificate) -> bool:
    """True for a root named as simulated (the sealroom sim authority, or any root whose
    organisation or common name says SIMULATED). Marking too much simulated only makes a
    policy reject more; evidence anchored in such a root must never read as hardware."""
    for oid in (x509.NameOID.ORGANIZATION_NAME, x509.NameOID.COMMON_NAME):
        for attr in cert.subject.get_attributes_for_oid(oid):
            if SIMULATED_MARKER in str(attr.value):
                return True
    return False


def verify_issued_by(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """Check that ``issuer`` signed ``child`` (RSA PKCS#1 v1.5, RSA-PSS, ECDSA, Ed25519).

    RSA-PSS parameters (hash, MGF1 hash, salt length) come from the child's
    signatureAlgorithm field, as AMD's certificates use explicit PSS parameters.
    """
    link = (fingerprint(child), fingerprint(issuer))
    with _LINKS_LOCK:
        if link in _VERIFIED_LINKS:  # same two certificates (by DER) already checked
            _VERIFIED_LINKS.move_to_end(link)
            return
    if child.issuer != issuer.subject:
        raise AttestationError(
            f"{what}: issuer name {child.issuer.rfc4514_string()!r} does not match signer "
            f"subject {issuer.subject.rfc4514_string()!r}",
            code="certificate-chain-invalid",
        )
    _verify_signature(child, issuer, what)
    with _LINKS_LOCK:
        _VERIFIED_LINKS[link] = None
        if len(_VERIFIED_LINKS) > _VERIFIED_LINKS_MAX:
            _VERIFIED_LINKS.popitem(last=False)


def _verify_signature(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    key = public_key(issuer)
    data = child.tbs_certificate_bytes
    sig = child.signature
    try:
        hash_alg = child.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey):
            params = child.signature_algorithm_parameters
            if not isinstance(params, padding.PSS | padding.PKCS1v15) or hash_alg is None:
                raise AttestationError(
                    f"{what}: unsupported RSA signature parameters",
                    code="certificate-chain-invalid",
                )
            key.verify(sig, data, params, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if hash_alg is None:
                raise AttestationError(
                    f"{what}: ECDSA without hash", code="certificate-chain-invalid"
                )
            key.verify(sig, data, ec.ECDSA(hash_alg))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, data)
        else:
            raise AttestationError(
                f"{what}: unsupported issuer key type {type(key).__name__}",
                code="certificate-chain-invalid",
            )
    except InvalidSignature as e:
        raise AttestationError(
            f"{what}: signature by {subject_cn(issuer)!r} does not verify",
            code="certificate-chain-invalid",
        ) from e
    except UnsupportedAlgorithm as e:
        raise AttestationError(f"{what}: {e}", code="certificate-chain-invalid") from e


def check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise AttestationError(
            f"{what} is not yet valid: notBefore {cert.not_valid_before_utc.isoformat()}, "
            f"now {now.isoformat()}",
            code="certificate-not-yet-valid",
        )
    if now > cert.not_valid_after_utc:
        raise AttestationError(
            f"{what} expired: notAfter {cert.not_valid_after_utc.isoformat()}, "
            f"now {now.isoformat()} (pass the evidence's time with --now to check old evidence)",
            code="certificate-expired",
        )


def verify_chain(
    chain: Sequence[tuple[str, x509.Certificate]],
    roots: Sequence[x509.Certificate],
    now: datetime | None,
) -> x509.Certificate:
    """Verify ``chain`` (leaf first, named for messages) up to one of ``roots``.

    The last element must be a root itself (compared by exact DER) or be signed by one.
    Returns the root that anchored it. ``now=None`` checks signatures only, for callers
    that memoise the (time-independent) result and check validity on every call.
    """
    if not chain:
        raise ValueError("empty chain")
    for (name, cert), (iname, issuer) in pairwise(chain):
        verify_issued_by(cert, issuer, f"{name} <- {iname}")
    if now is not None:
        for name, cert in chain:
            check_validity(cert, now, name)
    top_name, top = chain[-1]
    for root in roots:
        if root == top:  # certificates compare by DER
            verify_issued_by(top, top, f"{top_name} (self-signed)")
            return root
    for root in roots:
        if root.subject == top.issuer:
            verify_issued_by(top, root, f"{top_name} <- {subject_cn(root)}")
            if now is not None:
                check_validity(root, now, subject_cn(root))
            return root
    raise AttestationError(
        f"{top_name} ({subject_cn(top)!r}) does not chain to a trusted root "
        f"(trusted: {', '.join(subject_cn(r) for r in roots) or 'none'})",
        code="untrusted-root",
    )


def load_crl(data: bytes, what: str = "CRL") -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise MalformedEvidenceError(f"{what} is not a valid X.509 CRL: {e}") from e


CRL_CLOCK_SKEW = timedelta(minutes=5)


def check_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    certs: Sequence[tuple[str, x509.Certificate]],
    now: datetime,
    what: str,
) -> None:
    """CRL signed by ``issuer``, current at ``now``; none of ``certs`` revoked.

    Current means thisUpdate no later than ``now`` (plus :data:`CRL_CLOCK_SKEW`, as the
    issuer's clock and ours differ) and nextUpdate, when present, not passed. A CRL from
    the future says nothing about the certificates' state at ``now``."""
    if crl.issuer != issuer.subject:
        raise AttestationError(
            f"{what}: issued by {crl.issuer.rfc4514_string()!r}, expected "
            f"{issuer.subject.rfc4514_string()!r}",
            code="crl-invalid",
        )
    pub = public_key(issuer, what)
    if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise AttestationError(f"{what}: unsupported issuer key", code="crl-invalid")
    if not crl.is_signature_valid(pub):
        raise AttestationError(f"{what}: signature does not verify", code="crl-invalid")
    if crl.last_update_utc > now + CRL_CLOCK_SKEW:
        raise AttestationError(
            f"{what} is not yet valid: thisUpdate {crl.last_update_utc.isoformat()} is after "
            f"now {now.isoformat()} (tolerance {CRL_CLOCK_SKEW}); use a CRL current at the "
            "evidence's time",
            code="crl-not-yet-valid",
        )
    if crl.next_update_utc is not None and now > crl.next_update_utc:
        raise AttestationError(
            f"{what} is stale: nextUpdate {crl.next_update_utc.isoformat()}, now {now.isoformat()}",
            code="crl-stale",
        )
    for name, cert in certs:
        if cert.issuer != crl.issuer:
            continue
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None:
            raise AttestationError(
                f"{name} (serial {cert.serial_number:#x}) is revoked by {what} since "
                f"{revoked.revocation_date_utc.isoformat()}",
                code="certificate-revoked",
            )
