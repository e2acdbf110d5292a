"""A software AK that signs real-layout TPM quotes (for negative tests and fuzz seeds)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.tpm.abi import (
    OBJ_FIXED_PARENT,
    OBJ_FIXED_TPM,
    OBJ_RESTRICTED,
    OBJ_SENSITIVE_DATA_ORIGIN,
    OBJ_SIGN,
    OBJ_USER_WITH_AUTH,
    Alg,
    Attest,
    ClockInfo,
    EccCurve,
    PcrSelection,
    Public,
    Scheme,
    Signature,
    SymDef,
    crypto_hash,
    digest,
    hash_name,
)
from sealroom.attestation.tpm.formats import pcrs_json

AK_ATTRS = (
    OBJ_FIXED_TPM | OBJ_FIXED_PARENT | OBJ_SENSITIVE_DATA_ORIGIN | OBJ_USER_WITH_AUTH
    | OBJ_RESTRICTED | OBJ_SIGN
)  # fmt: skip


@dataclass
class FakeAk:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    scheme: int  # Alg.RSASSA, Alg.RSAPSS or Alg.ECDSA
    hash_alg: int = Alg.SHA256

    @classmethod
    def rsa(cls, scheme: int = Alg.RSASSA, hash_alg: int = Alg.SHA256) -> FakeAk:
        return cls(rsa.generate_private_key(65537, 2048), scheme, hash_alg)

    @classmethod
    def ecc(cls, curve: int = EccCurve.NIST_P256, hash_alg: int = Alg.SHA256) -> FakeAk:
        c = ec.SECP256R1() if curve == EccCurve.NIST_P256 else ec.SECP384R1()
        return cls(ec.generate_private_key(c), Alg.ECDSA, hash_alg)

    def public(self) -> Public:
        pub = self.key.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            n = pub.public_numbers().n
            return Public(
                Alg.RSA, Alg.SHA256, AK_ATTRS, b"", SymDef(Alg.NULL),
                Scheme(self.scheme, self.hash_alg), rsa_bits=2048, exponent=0,
                modulus=n.to_bytes(256, "big"),
            )  # fmt: skip
        nums = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        curve = EccCurve.NIST_P256 if size == 32 else EccCurve.NIST_P384
        return Public(
            Alg.ECC, Alg.SHA256, AK_ATTRS, b"", SymDef(Alg.NULL),
            Scheme(Alg.ECDSA, self.hash_alg), curve=curve,
            x=nums.x.to_bytes(size, "big"), y=nums.y.to_bytes(size, "big"),
        )  # fmt: skip

    def sign(self, message: bytes) -> Signature:
        h = crypto_hash(self.hash_alg)
        if isinstance(self.key, rsa.RSAPrivateKey):
            if self.scheme == Alg.RSAPSS:
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH
                )
            else:
                pad = padding.PKCS1v15()
            return Signature(self.scheme, self.hash_alg, sig=self.key.sign(message, pad, h))
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(h)))
        size = (self.key.curve.key_size + 7) // 8
        return Signature(
            Alg.ECDSA, self.hash_alg, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big")
        )


def pcr_values(bank: int = Alg.SHA256, count: int = 24) -> dict[int, bytes]:
    return {i: digest(bank, f"pcr {i}".encode()) for i in range(count)}


def make_quote(
    ak: FakeAk,
    *,
    nonce: bytes = b"fresh nonce",
    pcrs: dict[int, bytes] | None = None,
    bank: int = Alg.SHA256,
    indices: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7),
    firmware: int = 0x2016051100162800,
) -> tuple[Attest, dict[int, bytes]]:
    values = pcrs if pcrs is not None else pcr_values(bank)
    pcr_digest = digest(ak.hash_alg, b"".join(values[i] for i in indices))
    attest = Attest(
        qualified_signer=b"\x00\x0b" + bytes(range(32)),
        extra_data=nonce,
        clock_info=ClockInfo(123456, 2, 0, True),
        firmware_version=firmware,
        pcr_select=(PcrSelection.of(bank, indices),),
        pcr_digest=pcr_digest,
    )
    return attest, values


def make_item(
    ak: FakeAk,
    *,
    nonce: bytes = b"fresh nonce",
    signer: FakeAk | None = None,
    pcrs: dict[int, bytes] | None = None,
    bank: int = Alg.SHA256,
    indices: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7),
    carry_ak: bool = True,
) -> EvidenceItem:
    """A ``tpm`` item whose quote is signed by ``signer`` (default: ``ak``)."""
    attest, values = make_quote(ak, nonce=nonce, pcrs=pcrs, bank=bank, indices=indices)
    raw = attest.to_bytes()
    sig = (signer or ak).sign(raw)
    att = {"signature": sig.to_bytes(), "pcrs": pcrs_json({bank: values})}
    if carry_ak:
        att["ak_pub"] = ak.public().to_bytes()
    return EvidenceItem("tpm", raw, att)


def pcrs_attachment(bank: int, values: dict[int, bytes]) -> bytes:
    return json.dumps({hash_name(bank): {str(k): v.hex() for k, v in values.items()}}).encode()
