"""A fake AMD PKI for negative tests: the sim chain issuer with per-certificate overrides,
plus CRLs signed by the fake ARK. Production code never imports this module."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sealroom.attestation.sim.authority import IssuedChain, SimAuthority, issue_chain

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


class FakeSnpPki:
    """Issue with ``FakeSnpPki(now, hwid=..., tcb=..., product_name=...)``; sign reports
    with ``.authority``; make CRLs with ``.crl(...)``. 2048-bit RSA keeps tests quick."""

    def __init__(self, now: datetime, **overrides: Any) -> None:
        overrides.setdefault("rsa_bits", 2048)
        self.now = now
        self.issued: IssuedChain = issue_chain(now, **overrides)
        self.authority = SimAuthority(self.issued.keys)

    @property
    def ark(self) -> x509.Certificate:
        return self.issued.keys.ark

    @property
    def ask(self) -> x509.Certificate:
        return self.issued.keys.ask

    def crl(
        self,
        revoked: list[x509.Certificate] = [],  # noqa: B006 - read only
        *,
        next_update: datetime | None = None,
        signed_by_ask: bool = False,
    ) -> bytes:
        issuer_cert = self.ask if signed_by_ask else self.ark
        key = self.issued.ask_key if signed_by_ask else self.issued.ark_key
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer_cert.subject)
            .last_update(self.now - timedelta(hours=1))
            .next_update(next_update or self.now + timedelta(days=7))
        )
        for cert in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(self.now - timedelta(minutes=5))
                .build()
            )
        return b.sign(key, hashes.SHA384(), rsa_padding=_PSS).public_bytes(
            serialization.Encoding.DER
        )
