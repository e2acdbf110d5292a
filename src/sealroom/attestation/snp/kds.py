"""AMD Key Distribution Service (KDS) URLs: build and parse.

From AMD #57230 ("VCEK Certificate and KDS Interface Specification"):

    GET {base}/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..[&fmcSPL=..]
    GET {base}/{vcek|vlek}/v1/{product}/cert_chain     PEM: ASK (or ASVK), then ARK
    GET {base}/{vcek|vlek}/v1/{product}/crl            DER CRL signed by the ARK

``hwid`` is CHIP_ID in lowercase hex (Turin: its first 8 bytes). sealroom never calls
these URLs itself: a :class:`~sealroom.attestation.collateral.CollateralSource` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from sealroom.attestation.collateral import CollateralRequest
from sealroom.attestation.snp.abi import Product, TcbVersion
from sealroom.errors import InvalidInputError

KDS_BASE = "https://kdsintf.amd.com"
_SPL_KEYS = ("blSPL", "teeSPL", "snpSPL", "ucodeSPL", "fmcSPL")


@dataclass(frozen=True)
class KdsRequest:
    """A parsed KDS URL."""

    key_kind: str  # "vcek" | "vlek"
    product: str
    resource: str  # "vek" | "cert_chain" | "crl"
    hwid: bytes | None = None
    spls: tuple[tuple[str, int], ...] = ()


def hwid_for(product: Product, chip_id: bytes) -> bytes:
    return chip_id[:8] if product is Product.TURIN else chip_id


def vcek_url(product: Product, chip_id: bytes, tcb: TcbVersion, base: str = KDS_BASE) -> str:
    c = tcb.components()
    q = f"blSPL={c['bootloader']:02d}&teeSPL={c['tee']:02d}&snpSPL={c['snp']:02d}"
    q += f"&ucodeSPL={c['microcode']:02d}"
    if "fmc" in c:
        q += f"&fmcSPL={c['fmc']:02d}"
    return f"{base}/vcek/v1/{product.value}/{hwid_for(product, chip_id).hex()}?{q}"


def chain_url(product: Product, key_kind: str = "vcek", base: str = KDS_BASE) -> str:
    return f"{base}/{key_kind}/v1/{product.value}/cert_chain"


def crl_url(product: Product, key_kind: str = "vcek", base: str = KDS_BASE) -> str:
    return f"{base}/{key_kind}/v1/{product.value}/crl"


_PATH = re.compile(r"^/(vcek|vlek)/v1/([A-Za-z0-9-]+)/([0-9a-fA-F]+|cert_chain|crl)$")


def parse_kds_url(url: str) -> KdsRequest:
    parts = urlsplit(url)
    m = _PATH.match(parts.path)
    if parts.scheme not in ("https", "http") or m is None:
        raise InvalidInputError(f"not an AMD KDS URL: {url!r}")
    key_kind, product, last = m.groups()
    if last in ("cert_chain", "crl"):
        return KdsRequest(key_kind, product, last)
    if key_kind != "vcek":
        raise InvalidInputError(f"KDS serves VLEKs only to cloud providers: {url!r}")
    query = parse_qs(parts.query, strict_parsing=False)
    spls = []
    for key, values in query.items():
        if key not in _SPL_KEYS or len(values) != 1 or not values[0].isdigit():
            raise InvalidInputError(f"KDS URL has a bad query parameter {key!r}: {url!r}")
        spls.append((key, int(values[0])))
    return KdsRequest("vcek", product, "vek", bytes.fromhex(last), tuple(sorted(spls)))


def vcek_request(product: Product, chip_id: bytes, tcb: TcbVersion) -> CollateralRequest:
    return CollateralRequest(
        kind="snp",
        item="vcek",
        url=vcek_url(product, chip_id, tcb),
        filenames=("vcek.der", "vcek.pem"),
    )


def chain_request(product: Product, key_kind: str) -> CollateralRequest:
    name = product.value.lower()
    return CollateralRequest(
        kind="snp",
        item=f"{key_kind} cert_chain",
        url=chain_url(product, key_kind),
        filenames=(f"{name}_{key_kind}_cert_chain.pem", "cert_chain.pem"),
    )


def crl_request(product: Product, key_kind: str) -> CollateralRequest:
    name = product.value.lower()
    return CollateralRequest(
        kind="snp",
        item=f"{key_kind} crl",
        url=crl_url(product, key_kind),
        filenames=(f"{name}_{key_kind}.crl", f"{name}.crl", "crl.der", "crl.pem"),
    )
