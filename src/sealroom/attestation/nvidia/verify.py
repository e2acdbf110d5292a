"""Verify NVIDIA SPDM evidence: device chain, response signature, bindings.

Steps, in order (each failure is an AttestationError naming what failed):

1. The request asked for a signature (Param1 bit 0), else the response is unsigned.
2. The leaf (cert[0]) is an end-entity certificate allowed to sign (not a CA; keyUsage
   digitalSignature where present) with an ECDSA P-384 key.
3. Every issuer in the chain is a CA (basicConstraints cA=TRUE).
4. The chain verifies link by link, every certificate is valid at ``ctx.now``, and it ends
   at (or is signed by) the embedded NVIDIA Device Identity CA or a root in
   ``ctx.extra_roots`` (``--device-root``).
5. The signature (raw r || s) verifies with the leaf key over SHA-384(request ||
   response-without-signature), DSP0274 1.1 "MEASUREMENTS signature".
6. When the response's opaque data carries a FWID, it equals the FWID in the leaf's
   tcg-dice-TcbInfo extension (the firmware the device key was derived for).
7. Fields a presenter declared next to the evidence (nvtrust JSON: arch, nonce,
   driver_version, vbios_version) agree with the signed evidence.

The verifier's nonce is not checked here: appraisal compares it with ``ctx.nonce`` and
records the rule (see policy.py), so a missing or wrong nonce is a policy verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.nvidia import certs
from sealroom.attestation.nvidia.abi import (
    ECDSA_P384_SIGNATURE_SIZE,
    OpaqueFieldId,
    SpdmEvidence,
    decode_opaque,
    parse_evidence,
)
from sealroom.attestation.nvidia.claims import NvidiaClaims
from sealroom.attestation.nvidia.formats import DECLARED_PREFIX, KIND_NAME
from sealroom.attestation.x509util import fingerprint, public_key, subject_cn, verify_chain
from sealroom.errors import AttestationError, UnavailableError


def _claims(
    ev: SpdmEvidence,
    chain: Sequence[x509.Certificate] | None,
    *,
    verified: bool,
    root: x509.Certificate | None = None,
    vendor_rooted: bool = False,
) -> NvidiaClaims:
    opaque = decode_opaque(ev.response.opaque)
    chip = certs.chip_of(list(chain)) if chain else ""
    arch, device_kind = certs.CHIPS.get(chip, ("unknown", "unknown"))
    info = certs.leaf_info(chain[0]) if chain else certs.LeafInfo(None, None, None)
    v = ev.request.version
    return NvidiaClaims(
        kind=KIND_NAME,
        simulated=False,
        verified=verified,
        device_kind=device_kind,
        arch=arch,
        chip=chip,
        spdm_version=f"{v >> 4}.{v & 0xF}",
        measurements={b.index: b.value.hex() for b in ev.response.blocks},
        nonce=ev.request.nonce,
        responder_nonce=ev.response.nonce,
        driver_version=opaque.get("driver_version"),
        vbios_version=opaque.get("vbios_version"),
        project=opaque.get("project"),
        project_sku=opaque.get("project_sku"),
        chip_sku=opaque.get("chip_sku"),
        opaque=opaque,
        cert_chain=tuple(c.subject.rfc4514_string() for c in chain or ()),
        leaf_fingerprint=fingerprint(chain[0]) if chain else "",
        root_fingerprint=fingerprint(root) if root is not None else "",
        vendor_rooted=vendor_rooted,
        fwid=info.fwid.hex() if info.fwid is not None else None,
        fwid_alg=info.fwid_alg,
        device_name=info.device_name,
        trailing_bytes=len(ev.trailing),
    )


def inspect(item: EvidenceItem) -> NvidiaClaims:
    """Parse only (no signature, chain or binding checks)."""
    return _claims(
        parse_evidence(item.data), certs.chain_from_attachments(item.attachments), verified=False
    )


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_leaf(leaf: x509.Certificate) -> ec.EllipticCurvePublicKey:
    what = f"cert[0] {subject_cn(leaf)!r}"
    bc = _ext(leaf, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        raise AttestationError(
            f"{what} is a CA certificate, expected the device's attestation (leaf) "
            "certificate first in the chain",
            code="nvidia-leaf-invalid",
        )
    ku = _ext(leaf, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        raise AttestationError(
            f"{what} keyUsage lacks digitalSignature, so it cannot sign SPDM responses",
            code="nvidia-leaf-invalid",
        )
    key = public_key(leaf, what)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        got = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise AttestationError(
            f"{what} key is {got}, expected ECDSA P-384 (secp384r1)", code="nvidia-leaf-invalid"
        )
    return key


def _check_issuers(chain: Sequence[x509.Certificate]) -> None:
    for i, cert in enumerate(chain[1:], start=1):
        bc = _ext(cert, x509.BasicConstraints)
        if not (isinstance(bc, x509.BasicConstraints) and bc.ca):
            raise AttestationError(
                f"cert[{i}] {subject_cn(cert)!r} issues cert[{i - 1}] but is not a CA "
                "(basicConstraints cA is not TRUE)",
                code="certificate-chain-invalid",
            )


def _check_signature(ev: SpdmEvidence, key: ec.EllipticCurvePublicKey) -> None:
    sig = ev.signature
    if len(sig) != ECDSA_P384_SIGNATURE_SIZE:
        raise AttestationError(
            f"signature is {len(sig)} bytes, expected {ECDSA_P384_SIGNATURE_SIZE} (P-384 r || s)",
            code="nvidia-signature-invalid",
        )
    half = ECDSA_P384_SIGNATURE_SIZE // 2
    der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
    try:
        key.verify(der, ev.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise AttestationError(
            "MEASUREMENTS signature does not verify with the leaf key over "
            "SHA-384(request || response)",
            code="nvidia-signature-invalid",
        ) from e


def _check_fwid(ev: SpdmEvidence, info: certs.LeafInfo) -> None:
    reported = ev.response.opaque_value(OpaqueFieldId.FWID)
    if not reported:
        return
    if info.fwid is None:
        raise AttestationError(
            f"opaque data FWID is {reported.hex()}, but the leaf certificate carries no "
            "tcg-dice-TcbInfo FWID",
            code="nvidia-fwid-mismatch",
        )
    if reported != info.fwid:
        raise AttestationError(
            f"opaque data FWID is {reported.hex()}, leaf certificate FWID is {info.fwid.hex()}",
            code="nvidia-fwid-mismatch",
        )


def _check_declared(item: EvidenceItem, claims: NvidiaClaims) -> None:
    def mismatch(name: str, got: str, want: str) -> AttestationError:
        return AttestationError(
            f"declared {name} is {got}, the signed evidence says {want}",
            code="nvidia-declared-mismatch",
        )

    atts = item.attachments
    declared_nonce = atts.get(DECLARED_PREFIX + "nonce")
    if declared_nonce is not None and declared_nonce != claims.nonce:
        signed = claims.nonce.hex() if claims.nonce is not None else "(none)"
        raise mismatch("nonce", declared_nonce.hex(), signed)
    for name, signed_value in (
        ("arch", claims.arch if claims.arch != "unknown" else None),
        ("driver_version", claims.driver_version),
        ("vbios_version", claims.vbios_version),
    ):
        raw = atts.get(DECLARED_PREFIX + name)
        if raw is None:
            continue
        got = raw.decode("utf-8", "replace").strip()
        if name == "arch" and signed_value is None:
            continue  # a chip sealroom does not map to an arch: nothing to compare
        if signed_value is None or got.upper() != signed_value.upper():
            raise mismatch(name, got, signed_value or "(absent)")


def verify(item: EvidenceItem, ctx: VerifyContext) -> NvidiaClaims:
    ev = parse_evidence(item.data)
    if not ev.request.signature_requested:
        raise AttestationError(
            "GET_MEASUREMENTS request did not ask for a signature (Param1 bit 0 clear), so "
            "the response is unsigned",
            code="nvidia-unsigned",
        )
    chain = certs.chain_from_attachments(item.attachments)
    if not chain:
        raise UnavailableError(
            "NVIDIA evidence needs the device certificate chain (leaf first); pass it with "
            "--certs, or use evidence that embeds it (nvtrust JSON, sealroom envelope)",
            code="nvidia-cert-chain-unavailable",
        )
    key = _check_leaf(chain[0])
    _check_issuers(chain)
    embedded = certs.embedded_roots()
    named = [(f"cert[{i}] {subject_cn(c)!r}", c) for i, c in enumerate(chain)]
    root = verify_chain(named, [*embedded, *ctx.extra_roots], ctx.now)
    root_der = root.public_bytes(serialization.Encoding.DER)
    vendor = any(r.public_bytes(serialization.Encoding.DER) == root_der for r in embedded)
    mismatch = certs.leaf_chip_mismatch(chain)
    if mismatch is not None:
        raise AttestationError(
            f"device certificate names chip {mismatch!r}, the provisioned identity "
            f"names {certs.chip_of(chain)!r}",
            code="nvidia-leaf-invalid",
        )
    _check_signature(ev, key)
    _check_fwid(ev, certs.leaf_info(chain[0]))
    claims = _claims(ev, chain, verified=True, root=root, vendor_rooted=vendor)
    _check_declared(item, claims)
    return claims
