"""Online collateral: AMD KDS and Intel PCS over HTTP, with a local cache (ADR 0023).

This package sits above ``attestation`` (which knows no HTTP, ADR 0001) and implements its
``CollateralSource`` seam. Nothing in ``attestation`` or ``runtime`` imports it.
"""

from sealroom.attestation.collateral import SeenMark
from sealroom.collateral_online.cache import CachedEntry, CollateralCache
from sealroom.collateral_online.content import Facts
from sealroom.collateral_online.endpoints import Endpoints, Location
from sealroom.collateral_online.http import HttpFetcher, RetryPolicy
from sealroom.collateral_online.source import OnlineCollateral, Use

__all__ = [
    "CachedEntry",
    "CollateralCache",
    "Endpoints",
    "Facts",
    "HttpFetcher",
    "Location",
    "OnlineCollateral",
    "RetryPolicy",
    "SeenMark",
    "Use",
]
