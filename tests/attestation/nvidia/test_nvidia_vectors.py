"""Every NVIDIA vector gives the verdict the vectors README states, at its pinned time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealroom.attestation import kinds, verifier
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem, parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.nvidia import certs
from sealroom.attestation.nvidia.abi import parse_evidence
from sealroom.attestation.nvidia.claims import NvidiaClaims
from sealroom.attestation.policy import Policy
from sealroom.attestation.x509util import fingerprint
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError

from ._support import CHAIN_NOT_BEFORE, NOW, read_vector, vector

pytestmark = pytest.mark.vectors

KIND = kinds.get("nvidia")
NVTRUST_HEX = "h100_nvtrust/attestation_report.hex"
NVTRUST_CHAIN = "h100_nvtrust/cert_chain.pem"
COCO_HEX = "h100_trustee_coco/attestation_report_trailing_byte.hex"
COCO_CHAIN = "h100_trustee_coco/cert_chain.pem"
GPUS = "hgx_ppcie/gpu_evidence_8xH100.json"
SWITCHES = "hgx_ppcie/switch_evidence_4xLS10.json"
PPCIE_NONCE = bytes.fromhex("4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e")


def _ctx(vec: str, **kw: object) -> VerifyContext:
    return VerifyContext(now=NOW[vec], **kw)  # type: ignore[arg-type]


def _hex_item(hex_rel: str, chain_rel: str) -> EvidenceItem:
    """As the CLI builds it: load the hex file, then --certs FILE -> attachment "cert"."""
    bundle = KIND.load(read_vector(hex_rel))
    assert len(bundle.items) == 1
    return bundle.items[0].with_attachments({"cert": read_vector(chain_rel)})


def _verify(item: EvidenceItem, ctx: VerifyContext) -> NvidiaClaims:
    claims = KIND.verify(item, ctx)
    assert isinstance(claims, NvidiaClaims)
    return claims


# --- positive verdicts -----------------------------------------------------------------


def test_embedded_root_equals_the_vectors_copy() -> None:
    (root,) = certs.embedded_roots()
    theirs = x509.load_pem_x509_certificate(read_vector("NVIDIA_Device_Identity_CA.pem"))
    assert root == theirs
    assert fingerprint(root) == "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"


def test_h100_nvtrust_signature_and_five_cert_chain_verify() -> None:
    assert KIND.sniff(read_vector(NVTRUST_HEX))
    claims = _verify(_hex_item(NVTRUST_HEX, NVTRUST_CHAIN), _ctx("h100_nvtrust"))
    assert claims.verified
    assert not claims.simulated
    assert claims.vendor_rooted
    assert (claims.device_kind, claims.arch, claims.chip) == ("gpu", "HOPPER", "GH100")
    assert len(claims.cert_chain) == 5
    assert "GH100 A01 GSP FMC LF" in claims.cert_chain[0]
    assert "NVIDIA Device Identity CA" in claims.cert_chain[-1]
    assert claims.driver_version == "550.90.07"
    assert claims.vbios_version == "96.00.9F.00.01"
    assert (claims.project, claims.project_sku, claims.chip_sku) == ("1010", "0200", "882")
    assert claims.nonce is not None
    assert claims.nonce.hex().startswith("931d8dd0")
    assert len(claims.measurements) == 64
    # The leaf's tcg-dice-TcbInfo FWID is the one the device reports in its opaque data.
    assert claims.fwid == claims.opaque["fwid"]
    assert claims.fwid_alg == "sha384"
    assert claims.device_name == "NVIDIA:GH100:48B02D92494BADF4"


def test_h100_nvtrust_chain_as_separate_cert_attachments() -> None:
    """--certs given once per certificate: cert, cert.1, ... in chain order."""
    pems = read_vector(NVTRUST_CHAIN).split(b"-----END CERTIFICATE-----")
    parts = [p + b"-----END CERTIFICATE-----\n" for p in pems if b"BEGIN" in p]
    names = ["cert"] + [f"cert.{i}" for i in range(1, len(parts))]
    item = (
        KIND.load(read_vector(NVTRUST_HEX))
        .items[0]
        .with_attachments(dict(zip(names, parts, strict=True)))
    )
    assert _verify(item, _ctx("h100_nvtrust")).vendor_rooted


def test_h100_trustee_coco_verifies_only_when_parsed_by_structure() -> None:
    item = _hex_item(COCO_HEX, COCO_CHAIN)
    claims = _verify(item, _ctx("h100_trustee_coco"))
    assert claims.trailing_bytes == 1
    assert claims.driver_version == "580.95.05"
    assert claims.opaque["opaque_data_version"] == "1"
    # The naive reading (signature = last 96 bytes) does not verify: the structure matters.
    raw = item.data
    leaf = x509.load_pem_x509_certificates(read_vector(COCO_CHAIN))[0]
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    naive = raw[-96:]
    der = encode_dss_signature(int.from_bytes(naive[:48], "big"), int.from_bytes(naive[48:], "big"))
    with pytest.raises(InvalidSignature):
        key.verify(der, raw[:-96], ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize(
    ("rel", "count", "base", "kind"),
    [
        (GPUS, 8, "gpu", "gpu"),
        (SWITCHES, 4, "switch", "nvswitch"),
    ],
)
def test_ppcie_every_device_verifies_with_its_nonce(
    rel: str, count: int, base: str, kind: str
) -> None:
    data = read_vector(rel)
    assert KIND.sniff(data)
    bundle = verifier.load_evidence(data, kind="nvidia")
    assert [i.name for i in bundle.items] == [f"{base}{n}" for n in range(count)]
    ctx = _ctx("hgx_ppcie", nonce=PPCIE_NONCE)
    verified = verifier.verify_bundle(bundle, ctx)
    assert len(verified) == count
    policy = Policy.from_dict({"version": 1, "id": "ppcie", "nvidia": {}})
    result = verifier.appraise(verified, policy, ctx)
    assert result.ok, [r.describe() for r in result.failures()]
    assert len(result.submods) == count
    for v in verified:
        assert isinstance(v.claims, NvidiaClaims)
        assert v.claims.device_kind == kind
        assert v.claims.nonce == PPCIE_NONCE
        assert v.claims.vendor_rooted
    devices = {v.claims.device_name for v in verified if isinstance(v.claims, NvidiaClaims)}
    assert len(devices) == count  # distinct devices, not one evidence repeated


def test_ppcie_gpu_claims() -> None:
    bundle = KIND.load(read_vector(GPUS))
    claims = _verify(bundle.items[0], _ctx("hgx_ppcie"))
    assert (claims.arch, claims.driver_version, claims.vbios_version) == (
        "HOPPER",
        "590.12",
        "96.00.A5.00.01",
    )
    assert claims.project == "G520"
    assert claims.opaque["feature_flag"] == "PPCIE"


def test_envelope_with_cert_chain_attachment_verifies() -> None:
    """Our own envelope: an nvidia item whose attachment cert_chain is the PEM bundle."""
    item = EvidenceItem(
        "nvidia",
        KIND.load(read_vector(NVTRUST_HEX)).items[0].data,
        {"cert_chain": read_vector(NVTRUST_CHAIN)},
        name="gpu0",
    )
    text = EvidenceBundle.single(item).to_json().encode()
    loaded = KIND.load(text)
    assert loaded == parse_envelope(text)
    assert _verify(loaded.items[0], _ctx("h100_nvtrust")).verified


# --- negative verdicts on the real vectors -----------------------------------------------


@pytest.mark.parametrize(
    ("neg", "code"),
    [
        # One CA certificate and no device leaf: nothing here can have signed the response.
        ("NEG_root_only.pem", "nvidia-leaf-invalid"),
        # FMC LF <- BROM, then BROM's issuer (Provisioner ICA) is absent: a broken link.
        ("NEG_missing_intermediate.pem", "certificate-chain-invalid"),
        # BROM first: a CA certificate where the signing leaf belongs.
        ("NEG_missing_leaf.pem", "nvidia-leaf-invalid"),
    ],
)
def test_broken_chain_is_not_authentic(neg: str, code: str) -> None:
    """The chains parse (MalformedEvidenceError would be wrong); they fail authenticity."""
    item = _hex_item(NVTRUST_HEX, f"negative_chains/{neg}")
    with pytest.raises(AttestationError) as info:
        KIND.verify(item, _ctx("h100_nvtrust"))
    assert info.value.code == code


def test_missing_chain_is_unavailable_collateral() -> None:
    item = KIND.load(read_vector(NVTRUST_HEX)).items[0]
    with pytest.raises(UnavailableError, match="--certs"):
        KIND.verify(item, _ctx("h100_nvtrust"))


def _flip(item: EvidenceItem, offset: int) -> EvidenceItem:
    data = bytearray(item.data)
    data[offset] ^= 0x01
    return replace(item, data=bytes(data))


def test_flipped_signature_byte_is_rejected() -> None:
    item = _hex_item(NVTRUST_HEX, NVTRUST_CHAIN)
    with pytest.raises(AttestationError) as info:
        KIND.verify(_flip(item, len(item.data) - 5), _ctx("h100_nvtrust"))
    assert info.value.code == "nvidia-signature-invalid"


def test_flipped_measurement_byte_is_rejected() -> None:
    item = _hex_item(NVTRUST_HEX, NVTRUST_CHAIN)
    # request 37 + response head 8 + block header 4 + DMTF header 3 -> first value byte.
    offset = 37 + 8 + 4 + 3 + 10
    flipped = _flip(item, offset)
    assert (
        parse_evidence(flipped.data).response.blocks[0].value
        != parse_evidence(item.data).response.blocks[0].value
    )
    with pytest.raises(AttestationError, match="does not verify"):
        KIND.verify(flipped, _ctx("h100_nvtrust"))


def test_flipped_request_nonce_is_rejected() -> None:
    item = _hex_item(NVTRUST_HEX, NVTRUST_CHAIN)
    with pytest.raises(AttestationError, match="does not verify"):
        KIND.verify(_flip(item, 4), _ctx("h100_nvtrust"))


def test_chain_from_another_device_is_rejected() -> None:
    """The coco device's chain cannot vouch for the nvtrust device's signature."""
    item = _hex_item(NVTRUST_HEX, COCO_CHAIN)
    with pytest.raises(AttestationError) as info:
        KIND.verify(item, _ctx("h100_nvtrust"))
    assert info.value.code == "nvidia-signature-invalid"


def test_expired_leaf_at_a_late_now() -> None:
    """Every certificate's notAfter is 9999-12-31 23:59:59; a moment later it is expired."""
    late = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    item = _hex_item(NVTRUST_HEX, NVTRUST_CHAIN)
    with pytest.raises(AttestationError, match=r"cert\[0\].*expired") as info:
        KIND.verify(item, VerifyContext(now=late))
    assert info.value.code == "certificate-expired"


def test_chain_not_yet_valid_before_the_provisioner_ica() -> None:
    item = _hex_item(NVTRUST_HEX, NVTRUST_CHAIN)
    with pytest.raises(AttestationError, match=r"Provisioner ICA 1.*not yet valid"):
        KIND.verify(item, VerifyContext(now=CHAIN_NOT_BEFORE - timedelta(seconds=1)))
    assert _verify(item, VerifyContext(now=CHAIN_NOT_BEFORE)).verified


def test_declared_nonce_disagreeing_with_signed_nonce_is_rejected() -> None:
    item = KIND.load(read_vector(GPUS)).items[3]
    lying = item.with_attachments({"declared.nonce": bytes(32)})
    with pytest.raises(AttestationError) as info:
        KIND.verify(lying, _ctx("hgx_ppcie"))
    assert info.value.code == "nvidia-declared-mismatch"


def test_declared_driver_version_disagreeing_is_rejected() -> None:
    item = KIND.load(read_vector(GPUS)).items[0]
    lying = item.with_attachments({"declared.driver_version": b"999.99"})
    with pytest.raises(AttestationError, match=r"driver_version is 999\.99"):
        KIND.verify(lying, _ctx("hgx_ppcie"))


def test_both_cert_chain_and_certs_is_ambiguous() -> None:
    item = (
        KIND.load(read_vector(GPUS)).items[0].with_attachments({"cert": read_vector(NVTRUST_CHAIN)})
    )
    with pytest.raises(MalformedEvidenceError, match="both"):
        KIND.verify(item, _ctx("hgx_ppcie"))


def test_inspect_parses_without_checking() -> None:
    item = _flip(_hex_item(NVTRUST_HEX, NVTRUST_CHAIN), 200)
    claims = KIND.inspect(item)
    assert isinstance(claims, NvidiaClaims)
    assert not claims.verified
    assert claims.root_fingerprint == ""
    assert claims.arch == "HOPPER"


def test_vectors_folder_is_where_the_tests_expect() -> None:
    assert vector("").is_dir()
