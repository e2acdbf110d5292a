"""URL building, checked against the vendors' documented URLs (AMD #57230 via the Turin
VCEK URL recorded with the vectors, go-sev-guest's KDS paths; Intel PCS API v4 examples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealroom.attestation.collateral import CollateralRequest
from sealroom.attestation.snp import kds
from sealroom.attestation.snp.abi import Product, Report, parse_report
from sealroom.attestation.tdx import collateral as dcap
from sealroom.collateral_online.endpoints import Endpoints, pck_crl_chain_request
from sealroom.errors import InvalidInputError

# /work/shared/vectors/README.md: "The VCEK came from KDS vcek/v1/Turin/3b42092f69c656d3?
# ucodeSPL=71&snpSPL=2&teeSPL=0&blSPL=1&fmcSPL=0" (oak's test data).
TURIN_DOCUMENTED = (
    "https://kdsintf.amd.com/vcek/v1/Turin/3b42092f69c656d3"
    "?ucodeSPL=71&snpSPL=2&teeSPL=0&blSPL=1&fmcSPL=0"
)


def _report(vectors: Path, name: str) -> Report:
    return parse_report((vectors / "amd" / name / "report.bin").read_bytes())


def test_kds_url_turin_matches_amd_spec(vectors: Path) -> None:
    report = _report(vectors, "turin_oak")
    req = kds.vcek_request(Product.TURIN, report.chip_id, report.tcb("reported", Product.TURIN))
    loc = Endpoints().locate(req)
    assert loc is not None and loc.header is None
    # Same resource as the documented URL: product, 8-byte hwID, and every SPL incl. fmcSPL.
    assert kds.parse_kds_url(loc.url) == kds.parse_kds_url(TURIN_DOCUMENTED)
    assert loc.url.startswith("https://kdsintf.amd.com/vcek/v1/Turin/3b42092f69c656d3?")
    assert "fmcSPL=" in loc.url


def test_kds_url_milan_uses_the_whole_chip_id_and_no_fmc_spl(vectors: Path) -> None:
    report = _report(vectors, "milan_oak")
    req = kds.vcek_request(Product.MILAN, report.chip_id, report.tcb("reported", Product.MILAN))
    loc = Endpoints().locate(req)
    assert loc is not None
    parsed = kds.parse_kds_url(loc.url)
    assert parsed.hwid == report.chip_id and len(report.chip_id) == 64
    assert dict(parsed.spls) == {"blSPL": 4, "teeSPL": 0, "snpSPL": 24, "ucodeSPL": 219}
    assert "fmcSPL" not in loc.url


@pytest.mark.parametrize(
    ("key_kind", "resource", "want"),
    [
        # go-sev-guest verify/trust: "source: https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"
        ("vcek", "cert_chain", "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"),
        ("vlek", "cert_chain", "https://kdsintf.amd.com/vlek/v1/Milan/cert_chain"),
        ("vcek", "crl", "https://kdsintf.amd.com/vcek/v1/Milan/crl"),
        ("vlek", "crl", "https://kdsintf.amd.com/vlek/v1/Milan/crl"),
    ],
)
def test_kds_chain_and_crl_urls(key_kind: str, resource: str, want: str) -> None:
    req = (kds.chain_request if resource == "cert_chain" else kds.crl_request)(
        Product.MILAN, key_kind
    )
    loc = Endpoints().locate(req)
    assert loc is not None and loc.url == want
    moved = Endpoints(kds_url="http://127.0.0.1:8080/").locate(req)
    assert moved is not None
    assert moved.url == want.replace("https://kdsintf.amd.com", "http://127.0.0.1:8080")


FMSPC = bytes.fromhex("b0c06f000000")


@pytest.mark.parametrize(
    ("request_", "update", "want"),
    [
        # PCS API v4 "Get Revocation List V4", with encoding=der (DER body).
        (
            dcap.pck_crl_request(True, "platform"),
            None,
            "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        ),
        (
            dcap.pck_crl_request(False, "processor"),
            "early",  # update does not apply to CRLs
            "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
        ),
        # "Get TDX TCB Info V4": .../tdx/certification/v4/tcb?fmspc={fmspc}&update=early
        (
            dcap.tcb_info_request(True, FMSPC),
            "early",
            "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=b0c06f000000&update=early",
        ),
        (
            dcap.tcb_info_request(False, FMSPC),
            None,
            "https://api.trustedservices.intel.com/sgx/certification/v4/tcb?fmspc=b0c06f000000",
        ),
        # "Enclave Identity V4": .../sgx/certification/v4/qe/identity?update=early
        (
            dcap.qe_identity_request(False),
            "early",
            "https://api.trustedservices.intel.com/sgx/certification/v4/qe/identity?update=early",
        ),
        (
            dcap.qe_identity_request(True),
            "standard",
            "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity?update=standard",
        ),
        # The root CA CRL lives at the Intel SGX Root CA's CRL distribution point.
        (
            dcap.root_ca_crl_request(True),
            None,
            "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der",
        ),
    ],
    ids=lambda x: x.item if hasattr(x, "item") else str(x),
)
def test_pcs_urls_match_intel_api_v4(
    request_: CollateralRequest, update: str | None, want: str
) -> None:
    loc = Endpoints(update=update).locate(request_)
    assert loc is not None and loc.url == want and loc.header is None


def test_issuer_chains_come_from_response_headers() -> None:
    ep = Endpoints()
    chain = ep.locate(dcap.tcb_signing_chain_request(True))
    assert chain is not None and chain.header == "SGX-Enclave-Identity-Issuer-Chain"
    assert chain.url == "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity"
    tcb = ep.locate(dcap.tcb_info_request(True, FMSPC))
    assert tcb is not None
    assert [h for h, _ in tcb.companions] == ["TCB-Info-Issuer-Chain"]
    crl_chain = ep.locate(pck_crl_chain_request(True, "platform"))
    assert crl_chain is not None and crl_chain.header == "SGX-PCK-CRL-Issuer-Chain"


def test_pccs_serves_the_root_ca_crl_itself() -> None:
    loc = Endpoints(pcs_url="https://pccs.example:8081").locate(dcap.root_ca_crl_request(True))
    assert loc is not None
    assert loc.url == "https://pccs.example:8081/sgx/certification/v4/rootcacrl"


def test_local_bundle_is_not_fetched_online() -> None:
    assert Endpoints().locate(dcap.bundle_request(True, FMSPC)) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"update": "latest"},
        {"kds_url": "ftp://kds.example"},
        {"pcs_url": "https://pcs.example/?x=1"},
        {"kds_url": "kdsintf.amd.com"},
    ],
)
def test_bad_endpoint_configuration_is_bad_input(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError):
        Endpoints(**kwargs)
