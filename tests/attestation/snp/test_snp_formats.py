"""SNP formats real users hand a verifier (issue 8 section 3).

We may not commit fetched data, so every container here is BUILT IN THE TEST around the
real, hardware-produced vectors in ../shared/vectors: the THIM JSON around Azure's real
VCEK and AMD chain, snpguest's directory from a real report and real certificates, the
text forms from a real report's bytes. Each test says which vector it wraps.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.snp.abi import REPORT_SIZE, parse_report
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.attestation.snp.foreign import load_snpguest_dir
from sealroom.attestation.verifier import load_evidence
from sealroom.attestation.x509util import load_certificates
from sealroom.errors import AttestationError, InvalidInputError, MalformedEvidenceError

from ...cli.test_attest_cli import sealroom
from .test_snp_vectors import VECS

SNP = kinds.get("snp")
AZURE_NOW = "2025-06-01T00:00:00+00:00"


@pytest.fixture
def starter(tmp_path: Path) -> Path:
    out = tmp_path / "policy.yaml"
    r = sealroom("attest", "policy", "init", "--out", str(out), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    return out


def _verify(item: EvidenceItem, now: str) -> SnpClaims:
    from datetime import datetime

    claims = SNP.verify(item, VerifyContext(now=datetime.fromisoformat(now)))
    assert isinstance(claims, SnpClaims)
    return claims


# ---- a report followed by other bytes ------------------------------------------------------


def test_report_followed_by_other_bytes_is_parsed_and_the_extra_counted(vectors: Path) -> None:
    """Real: Azure's HCL report (vtpm/azure_snp_milan_hcl/hcl_report.bin) holds the SNP
    report at 0x20, followed by the HCL's variable data (its header and runtime JSON).
    From 0x20 on, that is exactly "a report followed by a header": it was refused for not
    being 1184 bytes; now the report verifies and the claims count the extra bytes."""
    hcl = (vectors / "vtpm/azure_snp_milan_hcl/hcl_report.bin").read_bytes()
    data = hcl[0x20:]
    assert len(data) > REPORT_SIZE
    bundle = load_evidence(data)  # recognised without --kind
    item = bundle.items[0].with_attachments(
        {"cert": (vectors / "vtpm/azure_snp_milan_hcl/thim_vcek_ask_ark.pem").read_bytes()}
    )
    assert item.kind == "snp"
    claims = _verify(item, AZURE_NOW)
    assert claims.trailing_bytes == len(data) - REPORT_SIZE
    assert claims.report_version == 2 and claims.chip_id_checked


def test_report_followed_by_padding_verifies(vectors: Path) -> None:
    """Real: milan_oak's report, zero-padded to a 4 KiB page as some tools write it."""
    v = VECS["milan_oak"]
    raw = (vectors / "amd" / v.report).read_bytes()
    item = load_evidence(raw + bytes(4096 - len(raw))).items[0]
    item = item.with_attachments({"cert": (vectors / "amd" / v.vek).read_bytes()})
    assert _verify(item, v.now.isoformat()).trailing_bytes == 4096 - REPORT_SIZE


def test_trailing_bytes_are_not_accepted_by_the_exact_parser(vectors: Path) -> None:
    raw = (vectors / "amd/milan_oak/report.bin").read_bytes()
    with pytest.raises(MalformedEvidenceError):
        parse_report(raw + b"\0")
    assert parse_report(raw + b"\0", trailing_ok=True).trailing == b"\0"


def test_bytes_that_do_not_start_with_a_report_are_not_taken_for_one(vectors: Path) -> None:
    raw = bytearray((vectors / "amd/milan_oak/report.bin").read_bytes() + bytes(64))
    raw[0x4C] = 1  # reserved, must be zero: the first 1184 bytes are no report
    assert not SNP.sniff(bytes(raw))
    with pytest.raises(MalformedEvidenceError):
        load_evidence(bytes(raw))


# ---- text forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda b: base64.encodebytes(b), id="base64-wrapped-76"),
        pytest.param(lambda b: base64.b64encode(b) + b"\n", id="base64-one-line"),
        pytest.param(lambda b: base64.urlsafe_b64encode(b).rstrip(b"="), id="base64url-unpadded"),
        pytest.param(lambda b: b.hex().upper().encode(), id="hex-upper"),
        pytest.param(
            lambda b: b"\n".join(b.hex().encode()[i : i + 64] for i in range(0, 2 * len(b), 64)),
            id="hex-wrapped",
        ),
    ],
)
def test_report_as_text_verifies(vectors: Path, encode: object) -> None:
    """Real: genoa_oak's v5 report, written as base64 or hex text."""
    v = VECS["genoa_oak"]
    raw = (vectors / "amd" / v.report).read_bytes()
    text = encode(raw)  # type: ignore[operator]
    item = load_evidence(text).items[0]
    assert item.data == raw
    item = item.with_attachments({"cert": (vectors / "amd" / v.vek).read_bytes()})
    assert _verify(item, v.now.isoformat()).report_version == 5


def test_text_that_is_not_a_report_is_refused() -> None:
    with pytest.raises(MalformedEvidenceError):
        SNP.load(base64.b64encode(b"\x07\0\0\0" + bytes(REPORT_SIZE)))  # VERSION 7


# ---- Azure THIM certificate JSON ---------------------------------------------------------


def _thim_json(vectors: Path) -> bytes:
    """Azure IMDS's THIM answer, rebuilt around the real VCEK + ASK + ARK that Azure served
    (vtpm/azure_snp_milan_hcl/thim_vcek_ask_ark.pem): field names as IMDS returns them."""
    pem = serialization.Encoding.PEM
    vcek, ask, ark = load_certificates(
        (vectors / "vtpm/azure_snp_milan_hcl/thim_vcek_ask_ark.pem").read_bytes()
    )
    return json.dumps(
        {
            "vcekCert": vcek.public_bytes(pem).decode(),
            "tcbm": "7308000000000003",
            "certificateChain": (ask.public_bytes(pem) + ark.public_bytes(pem)).decode(),
            "cacheControl": "Public, max-age=86400",
        }
    ).encode()


def test_thim_json_as_certs(vectors: Path, tmp_path: Path, starter: Path) -> None:
    """Real report (the SNP report inside Azure's HCL report) + THIM JSON as --certs."""
    hcl = (vectors / "vtpm/azure_snp_milan_hcl/hcl_report.bin").read_bytes()
    report = tmp_path / "report.bin"
    report.write_bytes(hcl[0x20 : 0x20 + REPORT_SIZE])
    thim = tmp_path / "thim.json"
    thim.write_bytes(_thim_json(vectors))
    r = sealroom(
        "attest", "verify", str(report), "--certs", str(thim), "--policy", str(starter),
        "--now", AZURE_NOW, "--json", home=tmp_path / "home",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] is True


def test_thim_json_on_the_azure_hcl_evidence(vectors: Path) -> None:
    """The same THIM JSON serves the az-snp-vtpm kind's SNP report."""
    hcl = (vectors / "vtpm/azure_snp_milan_hcl/hcl_report.bin").read_bytes()
    item = EvidenceItem("snp", hcl[0x20 : 0x20 + REPORT_SIZE], {"cert": _thim_json(vectors)})
    assert _verify(item, AZURE_NOW).chip_id_checked


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda o: o.pop("vcekCert"), "'vcekCert' must be a PEM string"),
        (lambda o: o.update(certificateChain=42), "'certificateChain' must be a PEM string"),
        (lambda o: o.update(tcbm="not hex"), "'tcbm' must be a hex string"),
    ],
)
def test_malformed_thim_json_rejected(vectors: Path, edit: object, needle: str) -> None:
    obj = json.loads(_thim_json(vectors))
    edit(obj)  # type: ignore[operator]
    hcl = (vectors / "vtpm/azure_snp_milan_hcl/hcl_report.bin").read_bytes()
    item = EvidenceItem("snp", hcl[0x20 : 0x20 + REPORT_SIZE], {"cert": json.dumps(obj).encode()})
    with pytest.raises(MalformedEvidenceError) as e:
        _verify(item, AZURE_NOW)
    assert needle in e.value.message


# ---- snpguest's files --------------------------------------------------------------------


def _snpguest_dir(vectors: Path, out: Path, vector: str, chain: str, enc: str) -> Path:
    """What `snpguest report report.bin req.txt` + `snpguest certificates|fetch ca/vcek
    <enc> certs/` leave behind, rebuilt from a real report, its real VEK and AMD's real
    cert_chain: report.bin (raw 1184 bytes), certs/{ark,ask|asvk,vcek|vlek}.<enc>."""
    v = VECS[vector]
    (out / "report.bin").write_bytes((vectors / "amd" / v.report).read_bytes())
    certs = out / "certs"
    certs.mkdir()
    encoding = serialization.Encoding.PEM if enc == "pem" else serialization.Encoding.DER
    inter, ark = load_certificates((vectors / "amd/kds_cert_chains" / chain).read_bytes())
    (vek,) = load_certificates((vectors / "amd" / v.vek).read_bytes())
    vek_name = "vlek" if v.signing_key == "vlek" else "vcek"
    inter_name = "asvk" if v.signing_key == "vlek" else "ask"
    for name, cert in ((vek_name, vek), (inter_name, inter), ("ark", ark)):
        (certs / f"{name}.{enc}").write_bytes(cert.public_bytes(encoding))
    return out


@pytest.mark.parametrize("enc", ["pem", "der"])
def test_snpguest_report_and_certs_directory(
    vectors: Path, tmp_path: Path, starter: Path, enc: str
) -> None:
    """Real: milan_oak's report and VCEK, AMD's Milan cert_chain."""
    d = _snpguest_dir(vectors, tmp_path, "milan_oak", "milan_vcek_cert_chain.pem", enc)
    r = sealroom(
        "attest", "verify", str(d / "report.bin"), "--certs", str(d / "certs"),
        "--policy", str(starter), "--now", VECS["milan_oak"].now.isoformat(),
        home=tmp_path / "home",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ACCEPTED" in r.stdout


def test_snpguest_vlek_directory(vectors: Path, tmp_path: Path) -> None:
    """Real: AWS's VLEK-signed report, its VLEK, AMD's Milan VLEK chain (asvk.pem)."""
    d = _snpguest_dir(vectors, tmp_path, "milan_vlek_aws", "milan_vlek_cert_chain.pem", "pem")
    item = SNP.load((d / "report.bin").read_bytes()).items[0]
    item = item.with_attachments(load_snpguest_dir(d / "certs"))
    claims = _verify(item, VECS["milan_vlek_aws"].now.isoformat())
    assert claims.signing_key == "vlek" and claims.csp_id


def test_snpguest_directory_without_certificates_refused(tmp_path: Path) -> None:
    (tmp_path / "other-1234.pem").write_text("not ours")
    with pytest.raises(InvalidInputError) as e:
        load_snpguest_dir(tmp_path)
    assert "vcek.pem" in e.value.message


def test_snpguest_directory_with_crl_checks_revocation(tmp_path: Path) -> None:
    """`snpguest fetch crl der certs/` adds crl.der. No real AMD CRL is among the vectors,
    so this one uses the fake AMD PKI (real layout, production verification)."""
    from datetime import UTC, datetime

    from sealroom.testing.fake_snp import FakeSnpPki

    now = datetime(2026, 11, 1, tzinfo=UTC)
    pki = FakeSnpPki(now)
    pem = serialization.Encoding.PEM
    for name, cert in (("vcek", pki.vcek), ("ask", pki.ask), ("ark", pki.ark)):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "crl.der").write_bytes(pki.crl())
    report = pki.authority.report(measurement=bytes(48))
    item = EvidenceItem("snp", report.raw, load_snpguest_dir(tmp_path))
    claims = SNP.verify(item, VerifyContext(now=now, extra_roots=(pki.ark,)))
    assert isinstance(claims, SnpClaims) and claims.crl_checked
    (tmp_path / "crl.der").write_bytes(pki.crl([pki.ask]))  # the ARK's CRL revokes ASKs
    item = EvidenceItem("snp", report.raw, load_snpguest_dir(tmp_path))
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=now, extra_roots=(pki.ark,)))
    assert e.value.code == "certificate-revoked"
