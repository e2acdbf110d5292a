"""A fake AMD KDS / Intel PCS on 127.0.0.1 serving the real vectors' collateral."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealroom.attestation.tdx.collateral import clear_caches as clear_dcap_caches
from sealroom.attestation.tdx.verify import clear_caches as clear_verify_caches
from sealroom.attestation.x509util import load_crl
from sealroom.testing.fake_vendor_services import FakeVendorServer

AMD_REPORTS = ("milan_oak", "milan_trustee", "milan_virtee", "milan_gosev_debug", "genoa_oak")


def load_amd(server: FakeVendorServer, vectors: Path) -> None:
    """Every real VCEK (KDS finds each by product, hwID and TCB) and every cert_chain."""
    for der in sorted((vectors / "amd").glob("*/vcek.der")):
        server.add_vcek(der.read_bytes())
    for pem in sorted((vectors / "amd" / "kds_cert_chains").glob("*_cert_chain.pem")):
        product, key_kind = pem.name.split("_")[:2]
        server.add_kds(f"/{key_kind}/v1/{product.capitalize()}/cert_chain", pem.read_bytes())


def pcs_response(member: str, signed_json: str, signature_hex: str) -> bytes:
    # A PCS body is {"<member>": <the signed JSON exactly>, "signature": "<hex>"}.
    return f'{{"{member}":{signed_json},"signature":"{signature_hex}"}}'.encode()


def _ca_of(crl_der: bytes) -> str:
    cn = str(load_crl(crl_der).issuer.rfc4514_string())
    return "processor" if "Processor" in cn else "platform"


def load_dcap_bundle(server: FakeVendorServer, bundle: Path) -> None:
    """Serve a dcap-qvl collateral file (the vectors' real collateral) as PCS would."""
    b = json.loads(bundle.read_text())
    tcb = json.loads(b["tcb_info"])
    tdx = tcb.get("id") == "TDX"
    server.add_tcb_info(
        tdx,
        tcb["fmspc"],
        pcs_response("tcbInfo", b["tcb_info"], b["tcb_info_signature"]),
        b["tcb_info_issuer_chain"].encode(),
    )
    server.add_qe_identity(
        tdx,
        pcs_response("enclaveIdentity", b["qe_identity"], b["qe_identity_signature"]),
        b["qe_identity_issuer_chain"].encode(),
    )
    pck_crl = bytes.fromhex(b["pck_crl"])
    server.add_pck_crl(_ca_of(pck_crl), pck_crl, b["pck_crl_issuer_chain"].encode())
    server.add_root_ca_crl(bytes.fromhex(b["root_ca_crl"]))


@pytest.fixture
def kds(vectors: Path) -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as server:
        load_amd(server, vectors)
        yield server


@pytest.fixture
def pcs() -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _cold_caches() -> None:
    clear_dcap_caches()
    clear_verify_caches()
