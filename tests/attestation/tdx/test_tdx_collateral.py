"""Collateral: exact signed JSON bytes, the accepted file forms, CollateralRequests (Intel
PCS URLs and plain file names) and the sources that answer them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.collateral import (
    CollateralRequest,
    DirectoryCollateral,
    FetcherCollateral,
)
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tdx import collateral as coll
from sealroom.attestation.tdx.claims import DcapClaims
from sealroom.attestation.tdx.tcb import TcbStatus
from sealroom.errors import MalformedEvidenceError, UnavailableError
from sealroom.testing.fake_intel import FakeIntelPki

from ._helpers import PINNED, at

NOW = at("2026-01-15T00:00:00")


def test_top_level_members_gives_exact_spans() -> None:
    text = ' { "a" : {"x": [1, 2,  3]} ,"b":"s\\"q" , "c" : null }  '
    spans = coll.top_level_members(text, "t")
    assert {k: text[s:e] for k, (s, e) in spans.items()} == {
        "a": '{"x": [1, 2,  3]}',
        "b": '"s\\"q"',
        "c": "null",
    }


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2}', '{"a":1} x', "[1]", '{"a" 1}', '{"a":1,}', "", '{"a":01}'],
)
def test_top_level_members_rejects(text: str) -> None:
    with pytest.raises(MalformedEvidenceError):
        coll.top_level_members(text, "t")


def test_pcs_response_signed_bytes_are_the_served_substring(intel: Path) -> None:
    raw = (intel / "tdx_v4_gotdx_spr" / "tcbinfo_response.json").read_bytes()
    parsed = coll.parse_pcs_response(raw)
    tcb = parsed.tcb_info
    assert tcb is not None
    assert raw.startswith(b'{"tcbInfo":' + tcb.signed.body + b',"signature":"')
    assert tcb.id == "TDX"
    assert tcb.version == 3
    assert tcb.fmspc == bytes.fromhex("50806f000000")
    assert tcb.tcb_evaluation_data_number == 15
    assert tcb.next_update == at("2023-07-18T08:42:58")
    assert tcb.tdx_module is not None
    qe = coll.parse_pcs_response(
        (intel / "tdx_v4_gotdx_spr" / "qe_identity_response.json").read_bytes()
    ).qe_identity
    assert qe is not None
    assert qe.id == "TD_QE"
    assert qe.isvprodid == 2
    assert qe.tcb_levels[0].isvsvn == 4


def test_bundle_signed_bytes_are_the_json_string(intel: Path) -> None:
    raw = (intel / "tdx_v4_phala" / "collateral.json").read_bytes()
    bundle = coll.parse_bundle(raw)
    assert bundle.tcb_info is not None
    assert bundle.tcb_info.signed.body == json.loads(raw)["tcb_info"].encode()
    assert bundle.pck_crl is not None
    assert bundle.root_ca_crl is not None
    assert len(bundle.certs) == 3  # TCB Signing, root, PCK Platform CA (deduplicated)


def test_tcb_info_v2_sgx_layout() -> None:
    levels = [
        {
            "tcb": {**{f"sgxtcbcomp{i:02d}svn": i for i in range(1, 17)}, "pcesvn": 10},
            "tcbDate": "2023-01-01T00:00:00Z",
            "tcbStatus": "SWHardeningNeeded",
            "advisoryIDs": ["INTEL-SA-00615"],
        }
    ]
    info = {
        "version": 2,
        "issueDate": "2023-01-01T00:00:00Z",
        "nextUpdate": "2023-02-01T00:00:00Z",
        "fmspc": "00906ea10000",
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 12,
        "tcbLevels": levels,
    }
    body = json.dumps(info).encode()
    tcb = coll.parse_tcb_info(coll.SignedJson(body, bytes(64)))
    assert tcb.id == "SGX"
    assert tcb.tcb_levels[0].sgx_components == tuple(range(1, 17))
    assert tcb.tcb_levels[0].tcb_status is TcbStatus.SW_HARDENING_NEEDED


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(surprise=1), "unknown keys"),
        (lambda d: d.update(tcb_info_signature="00"), "64 bytes"),
        (lambda d: d.update(pck_crl="zz"), "CRL"),
        (
            lambda d: d.update(tcb_info=d["tcb_info"].replace('"UpToDate"', '"Fine"')),
            "unknown TCB status",
        ),
    ],
)
def test_bad_bundles(intel: Path, mutate: object, match: str) -> None:
    obj = json.loads((intel / "tdx_v4_phala" / "collateral.json").read_text())
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(MalformedEvidenceError, match=match):
        coll.parse_bundle(json.dumps(obj).encode())


def test_collateral_file_forms(intel: Path) -> None:
    spr = intel / "tdx_v4_gotdx_spr"
    root_crl = coll.parse_collateral_file((spr / "root_ca_crl.der").read_bytes())
    assert root_crl.root_ca_crl is not None
    assert root_crl.pck_crl is None
    pck_crl = coll.parse_collateral_file((spr / "pck_platform_crl.der").read_bytes())
    assert pck_crl.pck_crl is not None
    chain = coll.parse_collateral_file((intel / "Intel_SGX_TCB_Signing_chain.pem").read_bytes())
    assert len(chain.certs) == 2
    with pytest.raises(MalformedEvidenceError):
        coll.parse_collateral_file(b"hello")


def test_separate_attachments_equal_directory(intel: Path, tcb_signing_2018: bytes) -> None:
    spr = intel / "tdx_v4_gotdx_spr"
    quote = (spr / "quote_with_trailing_text.bin").read_bytes()
    atts = {
        "tcb_info": (spr / "tcbinfo_response.json").read_bytes(),
        "qe_identity": (spr / "qe_identity_response.json").read_bytes(),
        "pck_crl": (spr / "pck_platform_crl.der").read_bytes(),
        "root_ca_crl": (spr / "root_ca_crl.der").read_bytes(),
        "cert": tcb_signing_2018,
    }
    c = kinds.get("tdx").verify(
        EvidenceItem("tdx", quote, atts), VerifyContext(now=PINNED["tdx_v4_gotdx_spr"])
    )
    assert isinstance(c, DcapClaims)
    assert c.collateral == ("tcb_info", "qe_identity", "root_ca_crl", "pck_crl")
    assert c.tcb_status is TcbStatus.NO_MATCHING_LEVEL


def test_requests_name_intel_pcs_urls() -> None:
    fmspc = bytes.fromhex("b0c06f000000")
    r = coll.tcb_info_request(True, fmspc)
    assert (
        r.url == "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=b0c06f000000"
    )
    assert "tcbinfo_response.json" in r.filenames
    assert coll.tcb_info_request(False, fmspc).url.startswith(
        "https://api.trustedservices.intel.com/sgx/certification/v4/tcb?fmspc="
    )
    assert coll.qe_identity_request(True).url.endswith("/tdx/certification/v4/qe/identity")
    assert coll.qe_identity_request(False).url.endswith("/sgx/certification/v4/qe/identity")
    assert coll.pck_crl_request(True, "platform").url.endswith(
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
    )
    assert "pck_processor_crl.der" in coll.pck_crl_request(False, "processor").filenames
    assert coll.root_ca_crl_request(True).url == (
        "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
    )
    assert "Intel_SGX_TCB_Signing_chain.pem" in coll.tcb_signing_chain_request(True).filenames


def _pcs_files(pki: FakeIntelPki) -> dict[str, bytes]:
    """URL -> body, as a PCS client would receive them."""
    tcb_body, tcb_sig = pki.sign_json(pki.tcb_info())
    qe_body, qe_sig = pki.sign_json(pki.qe_identity())
    f = pki.platform.fmspc
    return {
        coll.tcb_info_request(
            True, f
        ).url: f'{{"tcbInfo":{tcb_body},"signature":"{tcb_sig}"}}'.encode(),
        coll.qe_identity_request(
            True
        ).url: f'{{"enclaveIdentity":{qe_body},"signature":"{qe_sig}"}}'.encode(),
        coll.pck_crl_request(True, "platform").url: pki.pck_crl(),
        coll.root_ca_crl_request(True).url: pki.root_crl(),
        coll.tcb_signing_chain_request(True).url: pki.signing_chain_pem,
    }


def test_fetcher_and_directory_cache(tmp_path: Path) -> None:
    """An online source (any url -> bytes function) fills a DirectoryCollateral cache;
    a later verification reads the cache alone."""
    pki = FakeIntelPki(NOW)
    served = _pcs_files(pki)
    asked: list[str] = []

    def fetch_url(url: str) -> bytes:
        asked.append(url)
        if url not in served:
            raise OSError(f"404 {url}")
        return served[url]

    cache = DirectoryCollateral(tmp_path)
    quote = pki.quote()
    ctx = VerifyContext(
        now=NOW, collateral=FetcherCollateral(fetch_url, cache), extra_roots=(pki.root.cert,)
    )
    with pytest.raises(UnavailableError):
        # The local-only bundle request is optional; every PCS item is required of a
        # source that should answer, so an unknown URL is "unavailable", not "absent".
        FetcherCollateral(fetch_url).fetch(
            CollateralRequest("tdx", "x", "https://api.trustedservices.intel.com/nope")
        )
    c = kinds.get("tdx").verify(EvidenceItem("tdx", quote), ctx)
    assert isinstance(c, DcapClaims)
    assert c.crl_checked
    assert c.tcb_status is TcbStatus.UP_TO_DATE
    assert set(served) <= set(asked)
    offline = VerifyContext(
        now=NOW, collateral=DirectoryCollateral(tmp_path), extra_roots=(pki.root.cert,)
    )
    c2 = kinds.get("tdx").verify(EvidenceItem("tdx", quote), offline)
    assert c2.to_dict() == c.to_dict()


def test_directory_with_plain_file_names(tmp_path: Path) -> None:
    pki = FakeIntelPki(NOW)
    tcb_body, tcb_sig = pki.sign_json(pki.tcb_info())
    qe_body, qe_sig = pki.sign_json(pki.qe_identity())
    (tmp_path / "tcbinfo_response.json").write_text(
        f'{{"tcbInfo":{tcb_body},"signature":"{tcb_sig}"}}'
    )
    (tmp_path / "td_qe_identity_response.json").write_text(
        f'{{"enclaveIdentity":{qe_body},"signature":"{qe_sig}"}}'
    )
    (tmp_path / "pck_platform_crl.der").write_bytes(pki.pck_crl())
    (tmp_path / "root_ca_crl.der").write_bytes(pki.root_crl())
    (tmp_path / "Intel_SGX_TCB_Signing_chain.pem").write_bytes(pki.signing_chain_pem)
    ctx = VerifyContext(
        now=NOW, collateral=DirectoryCollateral(tmp_path), extra_roots=(pki.root.cert,)
    )
    c = kinds.get("tdx").verify(EvidenceItem("tdx", pki.quote()), ctx)
    assert isinstance(c, DcapClaims)
    assert c.collateral == ("tcb_info", "qe_identity", "root_ca_crl", "pck_crl")
