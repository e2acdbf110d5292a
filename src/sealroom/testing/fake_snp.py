"""A fake AMD PKI for negative tests: the sim chain issuer with per-certificate overrides,
plus CRLs signed by the fake ARK. Production code never imports this module.

Per-certificate overrides: ``FakeSnpPki(now, hwid=..., tcb=..., chip_id=...)`` shape the
VCEK at issuance; :meth:`FakeSnpPki.resign` re-issues one certificate with other signature
parameters (PSS salt, MGF1 hash, signing key) so a test can make exactly one link wrong."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.sim.authority import IssuedChain, SimAuthority, issue_chain
from sealroom.attestation.snp.abi import Report


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

    @property
    def vcek(self) -> x509.Certificate:
        return self.issued.keys.vcek

    def sign(self, report: Report) -> Report:
        """Re-sign an edited report with the VCEK (the signature is then genuine)."""
        return self.authority.sign(report)

    def evidence(self, report: Report, **certs: x509.Certificate) -> EvidenceItem:
        """The report with the VCEK and ASK, or the certificates given (``vcek=``,
        ``ask=``, ``ark=``) in their place."""
        item = self.authority.evidence(report)
        der = serialization.Encoding.DER
        return item.with_attachments({name: c.public_bytes(der) for name, c in certs.items()})

    def resign(
        self,
        cert: x509.Certificate,
        *,
        key: rsa.RSAPrivateKey | None = None,
        salt_length: int = 48,
        mgf_hash: hashes.HashAlgorithm | None = None,
        hash_alg: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
    ) -> x509.Certificate:
        """``cert`` again (same subject, key, serial, validity, extensions), signed by its
        issuer's key (or ``key``) with the RSA-PSS parameters given."""
        if key is None:
            key = self.issued.ark_key if cert.issuer == self.ark.subject else self.issued.ask_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(cert.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
        )
        for ext in cert.extensions:
            builder = builder.add_extension(ext.value, ext.critical)
        pss = padding.PSS(mgf=padding.MGF1(mgf_hash or hashes.SHA384()), salt_length=salt_length)
        return builder.sign(key, hash_alg or hashes.SHA384(), rsa_padding=pss)

    def crl(
        self,
        revoked: list[x509.Certificate] = [],  # noqa: B006 - read only
        *,
        next_update: datetime | None = None,
        this_update: datetime | None = None,
        signed_by_ask: bool = False,
        salt_length: int = 48,
    ) -> bytes:
        issuer_cert = self.ask if signed_by_ask else self.ark
        key = self.issued.ask_key if signed_by_ask else self.issued.ark_key
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer_cert.subject)
            .last_update(this_update or self.now - timedelta(hours=1))
            .next_update(next_update or self.now + timedelta(days=7))
        )
        for cert in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(self.now - timedelta(minutes=5))
                .build()
            )
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=salt_length)
        return b.sign(key, hashes.SHA384(), rsa_padding=pss).public_bytes(
            serialization.Encoding.DER
        )
