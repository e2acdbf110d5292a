"""Verification against a fake NVIDIA-shaped PKI: trust anchors, validity, bindings."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealroom.attestation import kinds
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.nvidia.abi import OpaqueField, OpaqueFieldId
from sealroom.attestation.nvidia.claims import NvidiaClaims
from sealroom.attestation.x509util import fingerprint
from sealroom.errors import AttestationError

from ._fakes import FWID, NONCE, NOW, FakeDevice

KIND = kinds.get("nvidia")


@pytest.fixture(scope="module")
def device() -> FakeDevice:
    return FakeDevice()


def _ctx(device: FakeDevice, **kw: object) -> VerifyContext:
    return VerifyContext(now=NOW, extra_roots=(device.root,), **kw)  # type: ignore[arg-type]


def test_fake_device_verifies_when_the_caller_trusts_its_root(device: FakeDevice) -> None:
    claims = KIND.verify(device.item(), _ctx(device))
    assert isinstance(claims, NvidiaClaims)
    assert claims.verified
    assert not claims.vendor_rooted  # anchored in a caller-supplied root, not NVIDIA's
    assert claims.root_fingerprint == fingerprint(device.root)
    assert claims.fwid == FWID.hex()
    assert claims.nonce == NONCE
    assert claims.opaque["feature_flag"] == "SPT"


def test_chain_to_a_root_the_caller_did_not_trust(device: FakeDevice) -> None:
    with pytest.raises(AttestationError) as info:
        KIND.verify(device.item(), VerifyContext(now=NOW))
    assert info.value.code == "untrusted-root"
    assert "NVIDIA Device Identity CA" in info.value.message


def test_chain_without_its_root_still_anchors_in_the_trusted_root(device: FakeDevice) -> None:
    item = device.item().with_attachments({"cert_chain": device.chain_pem(with_root=False)})
    claims = KIND.verify(item, _ctx(device))
    assert isinstance(claims, NvidiaClaims)
    assert claims.root_fingerprint == fingerprint(device.root)


def test_another_devices_root_does_not_help(device: FakeDevice) -> None:
    other = FakeDevice()
    with pytest.raises(AttestationError) as info:
        KIND.verify(device.item(), VerifyContext(now=NOW, extra_roots=(other.root,)))
    assert info.value.code in ("untrusted-root", "certificate-chain-invalid")


def test_expired_leaf_at_a_late_now() -> None:
    dev = FakeDevice(leaf_not_after=NOW - timedelta(days=1))
    with pytest.raises(AttestationError, match=r"cert\[0\].*expired") as info:
        KIND.verify(dev.item(), _ctx(dev))
    assert info.value.code == "certificate-expired"
    # The same evidence verifies at a time inside the leaf's validity.
    earlier = VerifyContext(now=NOW - timedelta(days=2), extra_roots=(dev.root,))
    assert KIND.verify(dev.item(), earlier).verified


def test_evidence_signed_by_another_key(device: FakeDevice) -> None:
    other = FakeDevice()
    forged = device.item(data=other.evidence())
    with pytest.raises(AttestationError) as info:
        KIND.verify(forged, _ctx(device))
    assert info.value.code == "nvidia-signature-invalid"


def test_fwid_in_report_differs_from_leaf_certificate(device: FakeDevice) -> None:
    opaque = (OpaqueField(OpaqueFieldId.FWID, bytes(48)),)
    with pytest.raises(AttestationError) as info:
        KIND.verify(device.item(opaque=opaque), _ctx(device))
    assert info.value.code == "nvidia-fwid-mismatch"


def test_fwid_in_report_but_leaf_certificate_has_none() -> None:
    dev = FakeDevice(fwid_in_cert=None)
    with pytest.raises(AttestationError, match="carries no tcg-dice-TcbInfo FWID"):
        KIND.verify(dev.item(), _ctx(dev))
    # Without a reported FWID there is nothing to bind.
    plain = (OpaqueField(OpaqueFieldId.DRIVER_VERSION, b"550.90.07\x00"),)
    claims = KIND.verify(dev.item(opaque=plain), _ctx(dev))
    assert isinstance(claims, NvidiaClaims)
    assert claims.fwid is None


def test_unsigned_response_is_not_authentic(device: FakeDevice) -> None:
    with pytest.raises(AttestationError) as info:
        KIND.verify(device.item(signed=False), _ctx(device))
    assert info.value.code == "nvidia-unsigned"


def test_issuer_that_is_not_a_ca() -> None:
    dev = FakeDevice(ica_is_ca=False)
    with pytest.raises(AttestationError, match="is not a CA"):
        KIND.verify(dev.item(), _ctx(dev))


def test_leaf_key_not_p384() -> None:
    dev = FakeDevice(leaf_curve=ec.SECP256R1())
    # A P-256 signature is 64 bytes; pad so the parser finds 96 and the key check decides.
    data = dev.evidence(trailing=bytes(32))
    with pytest.raises(AttestationError, match="expected ECDSA P-384") as info:
        KIND.verify(dev.item(data=data), _ctx(dev))
    assert info.value.code == "nvidia-leaf-invalid"


def test_trailing_bytes_are_reported_not_signed(device: FakeDevice) -> None:
    item = device.item(trailing=b"\x00\x00\x00")
    claims = KIND.verify(item, _ctx(device))
    assert isinstance(claims, NvidiaClaims)
    assert claims.trailing_bytes == 3
    changed = replace(item, data=item.data[:-1] + b"\xff")
    assert KIND.verify(changed, _ctx(device)).verified


def test_leaf_naming_another_chip_than_its_provisioned_identity() -> None:
    dev = FakeDevice(leaf_cn="LS_10 A01 FSP FMC LF")
    with pytest.raises(AttestationError, match="names chip 'LS_10'") as info:
        KIND.verify(dev.item(), _ctx(dev))
    assert info.value.code == "nvidia-leaf-invalid"


def test_fake_device_claims_name_the_chip(device: FakeDevice) -> None:
    claims = KIND.verify(device.item(), _ctx(device))
    assert isinstance(claims, NvidiaClaims)
    assert (claims.chip, claims.arch, claims.device_kind) == ("GH100", "HOPPER", "gpu")
    assert len(claims.cert_chain) == 4
