"""Resource responses: a flattened JWE to the attested ``tee-pubkey`` (Trustee ``kbs/src/jwe``).

Algorithms (Trustee ``jwe/mod.rs``): ``RSA-OAEP-256`` (RSAES-OAEP, SHA-256, MGF1-SHA-256)
and ``ECDH-ES+A256KW`` on P-256 or P-521 (Concat KDF SHA-256 with AlgorithmID =
``"ECDH-ES+A256KW"``, empty PartyU/PartyV, 256-bit key; RFC 3394 wrap), content
``A256GCM`` with a random 96-bit IV. The deprecated ``RSA1_5`` is not offered.

The guest (guest-components ``kbs_protocol`` ``keypair.rs::decrypt_response``) does not
use the ``protected`` string as sent: it parses it into ``ProtectedHeader {alg, enc,
#[flatten] other_fields}`` and *re-serializes* it with serde_json to rebuild the AAD, and
it reads the ephemeral key from ``other_fields["epk"]``. So the header is emitted in
exactly that serialization (compact; ``alg``, ``enc``, then ``epk`` with members
``crv, kty, x, y`` in sorted order, which is both serde_json's ``BTreeMap`` order and its
``preserve_order`` order), making ``BASE64URL(protected)`` equal to what the guest
recomputes. :func:`decrypt_like_guest` re-implements that guest procedure; tests also
decrypt with jwcrypto and joserfc.

All primitives are pyca/cryptography's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from sealroom.kbs.protocol import (
    A256GCM,
    ECDH_ES_A256KW,
    P256,
    P521,
    RSA_OAEP_256,
    JweResponse,
    TeePubKey,
    b64url_decode,
    b64url_encode,
)

_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    P256: (ec.SECP256R1(), 32),
    P521: (ec.SECP521R1(), 66),
}
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class JweFailure(Exception):
    """The key or response cannot be used (unsupported algorithm, bad key, bad tag)."""


def _compact(obj: Any) -> str:
    # serde_json::to_string: compact, non-ASCII kept as UTF-8.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def concat_kdf(z: bytes, alg: str = ECDH_ES_A256KW, length: int = 32) -> bytes:
    """NIST SP 800-56A Concat KDF as RFC 7518 §4.6.2 and Trustee use it (SHA-256,
    AlgorithmID = len||alg, PartyUInfo and PartyVInfo empty, SuppPubInfo = key bits)."""
    other = (
        len(alg).to_bytes(4, "big")
        + alg.encode()
        + (0).to_bytes(4, "big")
        + (0).to_bytes(4, "big")
        + (length * 8).to_bytes(4, "big")
    )
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=length, otherinfo=other).derive(z)


def _ec_public(key: TeePubKey) -> tuple[ec.EllipticCurvePublicKey, str, int]:
    if key.alg != ECDH_ES_A256KW:
        raise JweFailure(f"curve {key.crv} and algorithm {key.alg} is not supported")
    if key.crv not in _CURVES or key.x is None or key.y is None:
        raise JweFailure(f"curve {key.crv} and algorithm {key.alg} is not supported")
    curve, size = _CURVES[key.crv]
    x, y = b64url_decode(key.x), b64url_decode(key.y)
    if len(x) != size or len(y) != size:
        raise JweFailure(f"invalid bytes length of coordinates for {key.crv}")
    try:
        pub = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        ).public_key()
    except ValueError as e:
        raise JweFailure("invalid TEE public key") from e
    return pub, key.crv, size


def _rsa_public(key: TeePubKey) -> rsa.RSAPublicKey:
    if key.alg != RSA_OAEP_256:
        raise JweFailure(f"algorithm {key.alg} is not supported")
    if key.n is None or key.e is None:
        raise JweFailure("RSA tee-pubkey without n or e")
    try:
        return rsa.RSAPublicNumbers(
            int.from_bytes(b64url_decode(key.e), "big"), int.from_bytes(b64url_decode(key.n), "big")
        ).public_key()
    except ValueError as e:
        raise JweFailure(f"Building RSA key from modulus and exponent failed: {e}") from e


def check_supported(key: TeePubKey) -> None:
    """Raise :class:`JweFailure` now if ``key`` could never receive a resource."""
    if key.kty == "EC":
        _ec_public(key)
    else:
        pub = _rsa_public(key)
        if pub.key_size < 2048:
            raise JweFailure(f"RSA tee-pubkey of {pub.key_size} bits; at least 2048 required")


def encrypt(key: TeePubKey, payload: bytes) -> JweResponse:
    """Encrypt ``payload`` to ``key`` as Trustee's ``jwe()`` does."""
    cek = AESGCM.generate_key(bit_length=256)
    header: dict[str, Any]
    if key.kty == "EC":
        pub, crv, size = _ec_public(key)
        eph = ec.generate_private_key(pub.curve)
        z = eph.exchange(ec.ECDH(), pub)
        encrypted_key = aes_key_wrap(concat_kdf(z), cek)
        nums = eph.public_key().public_numbers()
        epk = {
            "crv": crv,
            "kty": "EC",
            "x": b64url_encode(nums.x.to_bytes(size, "big")),
            "y": b64url_encode(nums.y.to_bytes(size, "big")),
        }
        header = {"alg": ECDH_ES_A256KW, "enc": A256GCM, "epk": epk}
    else:
        rsa_pub = _rsa_public(key)
        encrypted_key = rsa_pub.encrypt(cek, _OAEP)
        header = {"alg": RSA_OAEP_256, "enc": A256GCM}
    protected = b64url_encode(_compact(header).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, payload, protected.encode("ascii"))
    return JweResponse(
        protected=protected,
        encrypted_key=b64url_encode(encrypted_key),
        iv=b64url_encode(iv),
        ciphertext=b64url_encode(sealed[:-16]),
        tag=b64url_encode(sealed[-16:]),
    )


# --------------------------------------------------------------------------------------
# The guest side (guest-components kbs_protocol), for the client and for tests.


@dataclass(frozen=True)
class TeeKeyPair:
    """The guest's ephemeral key (guest-components ``TeeKeyPair``; P-256 by default)."""

    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @classmethod
    def generate(cls, algorithm: str = "ECDH-ES+A256KW-P256") -> TeeKeyPair:
        if algorithm == "ECDH-ES+A256KW-P256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "ECDH-ES+A256KW-P521":
            return cls(ec.generate_private_key(ec.SECP521R1()))
        if algorithm == RSA_OAEP_256:
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        raise ValueError(f"unknown tee key algorithm {algorithm!r}")

    def public(self) -> TeePubKey:
        k = self.private_key
        if isinstance(k, rsa.RSAPrivateKey):
            nums = k.public_key().public_numbers()
            n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
            e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
            return TeePubKey(kty="RSA", alg=RSA_OAEP_256, n=b64url_encode(n), e=b64url_encode(e))
        crv = P256 if isinstance(k.curve, ec.SECP256R1) else P521
        size = _CURVES[crv][1]
        pn = k.public_key().public_numbers()
        return TeePubKey(
            kty="EC",
            crv=crv,
            alg=ECDH_ES_A256KW,
            x=b64url_encode(pn.x.to_bytes(size, "big")),
            y=b64url_encode(pn.y.to_bytes(size, "big")),
        )


def guest_aad(protected_header: dict[str, Any]) -> bytes:
    """kbs-types ``ProtectedHeader::generate_aad``: re-serialize ``{alg, enc,
    #[flatten] other_fields}`` (a ``BTreeMap``: sorted, also nested) and base64url it."""
    others = {k: v for k, v in protected_header.items() if k not in ("alg", "enc")}
    head = {"alg": protected_header["alg"], "enc": protected_header["enc"]}
    text = _compact(head)[:-1]
    if others:
        text += (
            "," + json.dumps(others, separators=(",", ":"), ensure_ascii=False, sort_keys=True)[1:]
        )
    else:
        text += "}"
    return b64url_encode(text.encode()).encode("ascii")


def decrypt_like_guest(keypair: TeeKeyPair, response: JweResponse) -> bytes:
    """guest-components ``TeeKeyPair::decrypt_response``: unwrap the CEK by ``alg`` (the
    epk from ``protected.epk``, its ``crv`` must be the key's), rebuild the AAD from the
    parsed header, then AES-256-GCM (the guest always uses A256GCM)."""
    try:
        header = json.loads(b64url_decode(response.protected))
        if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
            raise JweFailure("Invalid JWE ProtectedHeader")
        if not isinstance(header.get("enc"), str):
            raise JweFailure("Invalid JWE ProtectedHeader. Without `enc`")
        wrapped = b64url_decode(response.encrypted_key)
        k = keypair.private_key
        alg = header["alg"]
        if alg == RSA_OAEP_256:
            if not isinstance(k, rsa.RSAPrivateKey):
                raise JweFailure("Unmatched key. Must be RSA key")
            cek = k.decrypt(wrapped, _OAEP)
        elif alg == ECDH_ES_A256KW:
            epk = header.get("epk")
            if not isinstance(epk, dict):
                raise JweFailure("Invalid JWE ProtectedHeader. Without `epk`")
            crv, x, y = epk.get("crv"), epk.get("x"), epk.get("y")
            if not (isinstance(crv, str) and isinstance(x, str) and isinstance(y, str)):
                raise JweFailure("Invalid JWE ProtectedHeader. epk crv/x/y must be strings")
            if not isinstance(k, ec.EllipticCurvePrivateKey):
                raise JweFailure("Unmatched key. Must be EC key")
            mine = P256 if isinstance(k.curve, ec.SECP256R1) else P521
            if crv != mine:
                raise JweFailure(f"Unmatched curve: {crv}")
            peer = ec.EllipticCurvePublicNumbers(
                int.from_bytes(b64url_decode(x), "big"),
                int.from_bytes(b64url_decode(y), "big"),
                k.curve,
            ).public_key()
            cek = aes_key_unwrap(concat_kdf(k.exchange(ec.ECDH(), peer)), wrapped)
        else:
            raise JweFailure(f"Unsupported algorithm: {alg}")
        aad = guest_aad(header)
        iv = b64url_decode(response.iv)
        ct = b64url_decode(response.ciphertext) + b64url_decode(response.tag)
        return AESGCM(cek).decrypt(iv, ct, aad)
    except JweFailure:
        raise
    except Exception as e:
        raise JweFailure(f"JWE decryption failed: {type(e).__name__}: {e}") from e
