"""Where each collateral item lives on AMD KDS and Intel PCS (or a PCCS), as HTTP URLs.

The attestation layer names every item by its *canonical* vendor URL (``kds.vcek_url``,
``tdx.collateral.tcb_info_request``...). This module maps a canonical request onto the
configured services, byte for byte as the vendors document them:

AMD "VCEK/VLEK Certificate and KDS Interface Specification" (#57230), base
``https://kdsintf.amd.com``::

    GET /vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..[&fmcSPL=..]  DER
    GET /{vcek|vlek}/v1/{product}/cert_chain                                      PEM ASK|ASVK, ARK
    GET /{vcek|vlek}/v1/{product}/crl                                             DER CRL

Intel "SGX and TDX services, PCS API v4", base ``https://api.trustedservices.intel.com``::

    GET /sgx/certification/v4/pckcrl?ca={platform|processor}&encoding=der
        body DER CRL; header SGX-PCK-CRL-Issuer-Chain
    GET /{sgx|tdx}/certification/v4/tcb?fmspc=..[&update=early|standard]
        body {"tcbInfo": .., "signature": ..}; header TCB-Info-Issuer-Chain
    GET /{sgx|tdx}/certification/v4/qe/identity[?update=early|standard]
        body {"enclaveIdentity": .., "signature": ..}; header SGX-Enclave-Identity-Issuer-Chain

The Intel SGX Root CA CRL is not a PCS resource: Intel serves it at the root
certificate's CRL distribution point (``certificates.trustedservices.intel.com``); a PCCS
serves it as hex at ``/sgx/certification/v4/rootcacrl``. Issuer-chain headers are
URL-encoded PEM.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sealroom.attestation.collateral import CollateralRequest
from sealroom.attestation.snp import kds
from sealroom.attestation.tdx import collateral as dcap
from sealroom.errors import InvalidInputError

KDS_DEFAULT = kds.KDS_BASE
PCS_DEFAULT = dcap.PCS_BASE
INTEL_ROOT_CA_CRL = dcap.ROOT_CA_CRL_URL

TCB_INFO_CHAIN = "TCB-Info-Issuer-Chain"
QE_IDENTITY_CHAIN = "SGX-Enclave-Identity-Issuer-Chain"
PCK_CRL_CHAIN = "SGX-PCK-CRL-Issuer-Chain"

UPDATE_TYPES = ("standard", "early")


def pck_crl_chain_request(tdx: bool, ca: str) -> CollateralRequest:
    """The PCK CRL's issuer chain (PCK CA + root), as PCS serves it: a response header."""
    base = dcap.pck_crl_request(tdx, ca)
    return CollateralRequest(
        kind=base.kind,
        item=f"PCK {ca} CA CRL issuer chain",
        url=f"{base.url}#{PCK_CRL_CHAIN}",
        filenames=(f"pck_{ca}_crl_issuer_chain.pem",),
        params=base.params,
    )


@dataclass(frozen=True)
class Location:
    """Where one item is fetched from.

    ``url`` is the URL actually requested; ``header`` names the response header holding the
    item (issuer chains) or is None when the body is the item; ``companions`` are other
    response headers worth keeping, each with the canonical request it answers.
    """

    url: str
    header: str | None = None
    companions: tuple[tuple[str, CollateralRequest], ...] = ()

    @property
    def key(self) -> str:
        """The cache key: the URL asked, plus the header when the item is one."""
        return self.url if self.header is None else f"{self.url}#{self.header}"


def _base(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInputError(
            f"{what} must be an http(s) URL with no query or fragment, got {url!r}"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    """The services to ask. Defaults are the vendors' own; set them for a PCCS or a test
    server. ``update`` selects Intel's TCB info / QE identity update stream."""

    kds_url: str = KDS_DEFAULT
    pcs_url: str = PCS_DEFAULT
    root_ca_crl_url: str | None = None  # default: Intel's CDP, or the PCCS's /rootcacrl
    update: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kds_url", _base(self.kds_url, "--kds-url"))
        object.__setattr__(self, "pcs_url", _base(self.pcs_url, "--pcs-url"))
        if self.update is not None and self.update not in UPDATE_TYPES:
            raise InvalidInputError(
                f"TCB update type is {self.update!r}, expected one of {', '.join(UPDATE_TYPES)}"
            )

    # --- AMD KDS --------------------------------------------------------------------------

    def _kds(self, request: CollateralRequest) -> Location:
        kds.parse_kds_url(request.url)  # a canonical KDS URL, or InvalidInputError
        return Location(self.kds_url + request.url[len(KDS_DEFAULT) :])

    # --- Intel PCS ------------------------------------------------------------------------

    def _pcs_path(self, path: str) -> str:
        return f"{self.pcs_url}{path}"

    def _with_update(self, url: str) -> str:
        if self.update is None:
            return url
        return url + ("&" if "?" in url else "?") + f"update={self.update}"

    def tcb_info_url(self, tdx: bool, fmspc: str) -> str:
        tee = "tdx" if tdx else "sgx"
        return self._with_update(self._pcs_path(f"/{tee}/certification/v4/tcb?fmspc={fmspc}"))

    def qe_identity_url(self, tdx: bool) -> str:
        tee = "tdx" if tdx else "sgx"
        return self._with_update(self._pcs_path(f"/{tee}/certification/v4/qe/identity"))

    def pck_crl_url(self, ca: str) -> str:
        if ca not in ("platform", "processor"):
            raise InvalidInputError(f"PCK CA is {ca!r}, expected platform or processor")
        return self._pcs_path(f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der")

    def root_crl_url(self) -> str:
        if self.root_ca_crl_url is not None:
            return self.root_ca_crl_url
        if self.pcs_url == PCS_DEFAULT:
            return INTEL_ROOT_CA_CRL
        return self._pcs_path("/sgx/certification/v4/rootcacrl")

    def _pcs(self, request: CollateralRequest) -> Location | None:
        tdx = request.kind == "tdx"
        chain = dcap.tcb_signing_chain_request(tdx)
        if request.url == INTEL_ROOT_CA_CRL:
            return Location(self.root_crl_url())
        if request.url == chain.url:
            # The TCB Signing chain comes as a header of TCB info and QE identity
            # responses alike; QE identity needs no FMSPC, so it is the one asked.
            return Location(self.qe_identity_url(tdx), header=QE_IDENTITY_CHAIN)
        if request.item == "TCB info":
            return Location(
                self.tcb_info_url(tdx, request.params["fmspc"]),
                companions=((TCB_INFO_CHAIN, chain),),
            )
        if request.item == "QE identity":
            return Location(self.qe_identity_url(tdx), companions=((QE_IDENTITY_CHAIN, chain),))
        if request.item.endswith("CA CRL issuer chain"):
            return Location(self.pck_crl_url(request.params["ca"]), header=PCK_CRL_CHAIN)
        if request.item.startswith("PCK ") and request.item.endswith(" CA CRL"):
            ca = request.params["ca"]
            return Location(
                self.pck_crl_url(ca), companions=((PCK_CRL_CHAIN, pck_crl_chain_request(tdx, ca)),)
            )
        return None

    def locate(self, request: CollateralRequest) -> Location | None:
        """The location of a canonical request; None for items no service serves (a local
        dcap-qvl bundle, anything unknown)."""
        if request.url.startswith(KDS_DEFAULT + "/"):
            return self._kds(request)
        if request.kind in ("sgx", "tdx") and (
            request.url.startswith(PCS_DEFAULT + "/") or request.url == INTEL_ROOT_CA_CRL
        ):
            return self._pcs(request)
        return None
