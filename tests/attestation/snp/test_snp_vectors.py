"""Every real AMD SEV-SNP vector verifies (at a pinned time) and yields the claims its
README states."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.snp.certs import amd_chains
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.attestation.x509util import load_certificates

SNP = kinds.get("snp")


@dataclass(frozen=True)
class Vec:
    report: str
    vek: str
    now: datetime
    product: str
    version: int
    signing_key: str
    reported_tcb: int
    firmware: str
    policy: int


VECS = {
    "milan_gosev_debug": Vec(
        "milan_gosev_debug/report.bin",
        "milan_gosev_debug/vcek.der",
        datetime(2024, 1, 1, tzinfo=UTC),
        "Milan",
        2,
        "vcek",
        0x4405000000000002,
        "1.49.3",
        0xB0000,
    ),
    "milan_virtee": Vec(
        "milan_virtee/report.hex",
        "milan_virtee/vcek.der",
        datetime(2024, 1, 1, tzinfo=UTC),
        "Milan",
        2,
        "vcek",
        0x7308000000000003,
        "1.52.4",
        0x30000,
    ),
    "milan_trustee": Vec(
        "milan_trustee/report.bin",
        "milan_trustee/vcek.der",
        datetime(2024, 6, 1, tzinfo=UTC),
        "Milan",
        2,
        "vcek",
        0x7308000000000003,
        "1.52.4",
        0x3001F,
    ),
    "milan_vlek_aws": Vec(
        "milan_vlek_aws_trustee/report.bin",
        "milan_vlek_aws_trustee/vlek.der",
        datetime(2025, 6, 1, tzinfo=UTC),
        "Milan",
        3,
        "vlek",
        0xD918000000000004,
        "1.55.29",
        0x30000,
    ),
    "milan_oak": Vec(
        "milan_oak/report.bin",
        "milan_oak/vcek.der",
        datetime(2025, 6, 1, tzinfo=UTC),
        "Milan",
        3,
        "vcek",
        0xDB18000000000004,
        "1.55.29",
        0x30000,
    ),
    "genoa_trustee_e2e": Vec(
        "genoa_trustee_e2e/report.bin",
        "genoa_trustee_e2e/vcek.der",
        datetime(2025, 6, 1, tzinfo=UTC),
        "Genoa",
        3,
        "vcek",
        0x191700000000000A,
        "1.55.40",
        0x30000,
    ),
    "genoa_oak": Vec(
        "genoa_oak/report.bin",
        "genoa_oak/vcek.der",
        datetime(2025, 9, 1, tzinfo=UTC),
        "Genoa",
        5,
        "vcek",
        0x541900000000000A,
        "1.55.43",
        0x30000,
    ),
    "turin_oak": Vec(
        "turin_oak/report.bin",
        "turin_oak/vcek.der",
        datetime(2025, 9, 1, tzinfo=UTC),
        "Turin",
        5,
        "vcek",
        0x4700000002000100,
        "1.55.61",
        0x30000,
    ),
}


def load_vector(vectors: Path, v: Vec) -> EvidenceItem:
    item = SNP.load((vectors / "amd" / v.report).read_bytes()).items[0]
    return item.with_attachments({"cert": (vectors / "amd" / v.vek).read_bytes()})


def verify_vector(vectors: Path, name: str) -> SnpClaims:
    v = VECS[name]
    claims = SNP.verify(load_vector(vectors, v), VerifyContext(now=v.now))
    assert isinstance(claims, SnpClaims)
    return claims


@pytest.mark.parametrize("name", sorted(VECS))
def test_vector_verifies_with_stated_claims(vectors: Path, name: str) -> None:
    v = VECS[name]
    c = verify_vector(vectors, name)
    assert c.verified and not c.simulated
    assert c.product == v.product
    assert c.report_version == v.version
    assert c.signing_key == v.signing_key
    assert c.reported_tcb.raw == v.reported_tcb
    assert str(c.current_firmware) == v.firmware
    assert c.policy.raw == v.policy
    assert c.root == f"ARK-{v.product}"
    assert c.crl_checked is False  # no AMD CRL among the vectors


def test_milan_gosev_debug_claims(vectors: Path) -> None:
    c = verify_vector(vectors, "milan_gosev_debug")
    assert c.policy.debug is True
    assert c.report_data.startswith(bytes(range(1, 6)))
    assert (
        c.reported_tcb.bootloader,
        c.reported_tcb.tee,
        c.reported_tcb.snp,
        c.reported_tcb.microcode,
    ) == (2, 0, 5, 68)
    assert c.chip_id_checked


def test_milan_trustee_current_differs_from_reported(vectors: Path) -> None:
    c = verify_vector(vectors, "milan_trustee")
    assert c.policy.abi_minor == 31
    assert c.current_tcb.raw >> 56 == 0xCE and c.reported_tcb.raw >> 56 == 0x73
    assert c.reported_tcb.microcode == 115


def test_vlek_claims(vectors: Path) -> None:
    c = verify_vector(vectors, "milan_vlek_aws")
    assert c.vmpl == 1
    assert c.csp_id == "CN=cc-us-east-2.amazonaws.com"
    assert c.current_tcb.raw >> 56 == 0xDC and c.committed_tcb.raw >> 56 == 0xDB
    assert c.chip_id_checked is False  # VLEKs carry no hwID


def test_genoa_v5_mitigation_vectors(vectors: Path) -> None:
    c = verify_vector(vectors, "genoa_oak")
    assert (c.cpuid_fam_id, c.cpuid_mod_id, c.cpuid_step) == (0x19, 0x11, 1)
    assert (c.launch_mit_vector, c.current_mit_vector) == (1, 1)


def test_genoa_trustee_cpuid_model_a0(vectors: Path) -> None:
    c = verify_vector(vectors, "genoa_trustee_e2e")
    assert (c.cpuid_fam_id, c.cpuid_mod_id, c.cpuid_step) == (0x19, 0xA0, 2)


def test_turin_layout_and_short_hwid(vectors: Path) -> None:
    c = verify_vector(vectors, "turin_oak")
    t = c.reported_tcb
    assert (t.fmc, t.bootloader, t.tee, t.snp, t.microcode) == (0, 1, 0, 2, 71)
    assert c.platform_info.raw == 0x67
    assert any(c.chip_id[:8]) and not any(c.chip_id[8:])
    assert c.chip_id_checked


def test_trustee_json_evidence_is_the_same_report(vectors: Path) -> None:
    """The JSON field dump re-serialises to bytes whose signature verifies."""
    bundle = SNP.load((vectors / "amd/genoa_trustee_e2e/snp_evidence.json").read_bytes())
    item = bundle.items[0]
    assert item.data == (vectors / "amd/genoa_trustee_e2e/report.bin").read_bytes()
    claims = SNP.verify(item, VerifyContext(now=VECS["genoa_trustee_e2e"].now))
    assert isinstance(claims, SnpClaims) and claims.product == "Genoa"


def test_inspect_parses_without_verifying(vectors: Path) -> None:
    claims = SNP.inspect(SNP.load((vectors / "amd/turin_oak/report.bin").read_bytes()).items[0])
    assert isinstance(claims, SnpClaims)
    assert claims.verified is False and claims.product == "Turin"


@pytest.mark.parametrize(
    "chain", ["milan_vcek", "milan_vlek", "genoa_vcek", "genoa_vlek", "turin_vcek", "turin_vlek"]
)
def test_embedded_amd_chains_equal_the_vectors(vectors: Path, chain: str) -> None:
    product, kind = chain.split("_")
    embedded = next(
        c for c in amd_chains() if c.product.value.lower() == product and c.vek_kind.value == kind
    )
    theirs = load_certificates(
        (vectors / f"amd/kds_cert_chains/{chain}_cert_chain.pem").read_bytes()
    )
    assert [embedded.intermediate, embedded.ark] == theirs


def test_turin_vcek_only_chains_to_embedded_turin_ask(vectors: Path) -> None:
    from sealroom.attestation.x509util import load_certificate, verify_issued_by

    vcek = load_certificate((vectors / "amd/turin_virtee_vcek_only/vcek.der").read_bytes())
    ask = next(
        c.intermediate
        for c in amd_chains()
        if c.product.value == "Turin" and c.vek_kind.value == "vcek"
    )
    verify_issued_by(vcek, ask, "VCEK <- ASK-Turin")
    assert isinstance(vcek, x509.Certificate)
