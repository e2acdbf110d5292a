"""Shared by the benchmark scripts: paired measurement and the house output format
(ours, the peer's figure from the same run, the ratio)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Row = tuple[str, float, str, float]


def paired_rates(
    ours: Callable[[], object],
    peer: Callable[[], object],
    seconds: float = 3.0,
    *,
    warmup: int = 20,
    batch: int = 25,
) -> tuple[float, float]:
    """Calls per second of both, measured in alternating slices of the same wall time so
    that background load on the machine hits both figures alike."""
    for _ in range(warmup):
        ours()
        peer()
    counts, spent = [0, 0], [0.0, 0.0]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for i, fn in enumerate((ours, peer)):
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            spent[i] += time.perf_counter() - start
            counts[i] += batch
    return counts[0] / spent[0], counts[1] / spent[1]


def print_rows(rows: Sequence[Row]) -> None:
    width = max(len(r[0]) for r in rows)
    for ours_label, ours, peer_label, peer in rows:
        print(f"{ours_label:<{width}}  ours {ours:>10.1f}/s")
        print(f"{'':<{width}}  peer {peer:>10.1f}/s  ({peer_label})")
        print(f"{'':<{width}}  ratio {ours / peer:>8.2f}x")


def self_signed(d: Path) -> None:
    """A P-256 self-signed certificate for 127.0.0.1: ``d/cert.pem`` and ``d/key.pem`` (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (d / "key.pem").chmod(0o600)
