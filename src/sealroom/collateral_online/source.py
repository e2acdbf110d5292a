"""The online collateral source: KDS / PCS over HTTP, through a local cache.

Implements the attestation layer's ``CollateralSource``. For each request:

1. a cache entry current at ``now`` (before its nextUpdate / notAfter) is used as is;
2. offline, any cache entry is used; a stale one is reported as stale (verification then
   judges it at ``now`` like any collateral, and fails closed where it must);
3. online, the item is fetched (retries, backoff), checked to be the kind of item asked
   for, checked against rollback marks, cached, and used; if the network fails and a
   stale entry exists, that entry is used and reported;
4. 404/410 means the service does not have it: the source returns None and the caller
   decides (a required VCEK becomes "collateral unavailable", exit 3). The answer is
   remembered for ``negative_ttl`` (from ``now``), so an absent optional item (a CRL a
   test server lacks, a VCEK KDS does not know yet) neither hammers a rate-limited service
   nor stops offline use.

Every use is recorded in :attr:`OnlineCollateral.uses` for the CLI to show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from sealroom.attestation.collateral import CollateralRequest, SeenMark
from sealroom.collateral_online.cache import CachedEntry, CollateralCache, RollbackError
from sealroom.collateral_online.content import Facts, inspect
from sealroom.collateral_online.endpoints import Endpoints, Location
from sealroom.collateral_online.http import HttpFetcher
from sealroom.errors import AttestationError, UnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Use:
    """How one request was answered.

    ``origin``: ``network`` | ``cache`` (current) | ``stale-cache`` | ``missing``.
    """

    request: CollateralRequest
    url: str
    origin: str
    valid_until: datetime | None = None
    note: str = ""

    @property
    def stale(self) -> bool:
        return self.origin == "stale-cache"

    def to_dict(self) -> dict[str, object]:
        return {
            "item": f"{self.request.kind} {self.request.item}",
            "url": self.url,
            "origin": self.origin,
            "stale": self.stale,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "note": self.note,
        }

    def describe(self) -> str:
        until = f", valid until {self.valid_until.isoformat()}" if self.valid_until else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.request.kind} {self.request.item} <- {self.url}{until}{note}"


class OnlineCollateral:
    def __init__(
        self,
        *,
        endpoints: Endpoints | None = None,
        cache: CollateralCache | None = None,
        offline: bool = False,
        fetcher: HttpFetcher | None = None,
        now: datetime | Callable[[], datetime] | None = None,
        negative_ttl: timedelta = timedelta(hours=1),
    ) -> None:
        self.endpoints = endpoints or Endpoints()
        self.cache = cache
        self.offline = offline
        self._fetcher = fetcher
        self._now = now
        self.negative_ttl = negative_ttl
        self._memo: dict[str, tuple[bytes, datetime | None]] = {}
        self.uses: list[Use] = []

    @property
    def fetcher(self) -> HttpFetcher:
        if self.offline:
            raise RuntimeError("an offline collateral source never touches the network")
        if self._fetcher is None:
            self._fetcher = HttpFetcher()
        return self._fetcher

    def now(self) -> datetime:
        if self._now is None:
            return datetime.now(UTC)
        return self._now() if callable(self._now) else self._now

    # --- rollback marks, for the verifier's "never older than seen" rule --------------------

    def seen(self, series: str) -> SeenMark | None:
        """The newest item this verifier has seen in ``series`` (see CollateralCache.seen)."""
        return self.cache.seen(series) if self.cache is not None else None

    # --- CollateralSource -----------------------------------------------------------------

    def explain(self, request: CollateralRequest) -> str | None:
        for use in reversed(self.uses):
            if use.request == request and use.origin == "missing":
                return f"{use.url}: {use.note}"
        return None

    def _record(self, use: Use) -> None:
        self.uses.append(use)
        if use.stale:
            log.warning("stale collateral used: %s", use.describe())

    def _cached(self, key: str) -> CachedEntry | tuple[bytes, datetime | None] | None:
        if key in self._memo:
            return self._memo[key]
        return self.cache.get(key) if self.cache is not None else None

    def fetch(self, request: CollateralRequest) -> bytes | None:
        loc = self.endpoints.locate(request)
        if loc is None:
            return None
        now = self.now()
        absent = self.cache.absent(loc.key, now) if self.cache is not None else None
        if absent is not None:
            self._record(Use(request, loc.url, "missing", note=f"{absent} (cached answer)"))
            return None
        hit = self._cached(loc.key)
        data, until = (
            (hit.data, hit.valid_until) if isinstance(hit, CachedEntry) else hit or (None, None)
        )
        fresh = data is not None and until is not None and now <= until
        if data is not None and (fresh or self.offline):
            origin = "cache" if fresh else "stale-cache"
            note = "" if fresh else "offline: not refreshed"
            self._record(Use(request, loc.url, origin, until, note))
            return data
        if self.offline:
            self._record(Use(request, loc.url, "missing", note="offline and not in the cache"))
            return None
        try:
            got = self._download(request, loc, now)
        except UnavailableError as e:
            if data is None:
                raise
            self._record(Use(request, loc.url, "stale-cache", until, f"refresh failed: {e}"))
            return data
        if got is None:
            if data is not None:  # keep the stale entry: verification judges it at now
                self._record(Use(request, loc.url, "stale-cache", until, "refresh: not found"))
                return data
            if self.cache is not None:
                self.cache.put_absent(loc.key, self.uses[-1].note, now, now + self.negative_ttl)
            return None
        return got

    # --- network --------------------------------------------------------------------------

    def _download(self, request: CollateralRequest, loc: Location, now: datetime) -> bytes | None:
        resp = self.fetcher.get(loc.url)
        if resp.status in (404, 410):
            self._record(Use(request, loc.url, "missing", note=f"HTTP {resp.status}"))
            return None
        if not 200 <= resp.status < 300:
            raise UnavailableError(
                f"cannot fetch {request.describe()} from {loc.url}: HTTP {resp.status}",
                code="collateral-unavailable",
            )
        for header, companion in loc.companions:
            value = resp.headers.get(header.lower())
            where = self.endpoints.locate(companion)
            if value is not None and where is not None:
                # Kept where a request for the companion looks it up.
                try:
                    self._keep(companion, where.key, loc.url, unquote(value).encode(), now)
                except (UnavailableError, AttestationError) as e:
                    log.warning("ignoring %s header of %s: %s", header, loc.url, e)
        if loc.header is None:
            body = resp.body
        else:
            value = resp.headers.get(loc.header.lower())
            if value is None:
                raise UnavailableError(
                    f"{loc.url} answered without the {loc.header} header ({request.item})",
                    code="collateral-response-invalid",
                )
            body = unquote(value).encode()
        return self._keep(request, loc.key, loc.url, body, now)

    def _keep(
        self, request: CollateralRequest, key: str, url: str, data: bytes, now: datetime
    ) -> bytes:
        facts: Facts = inspect(request, data, url)
        if self.cache is not None:
            try:
                self.cache.put(key, url, request.url, data, facts, now)
            except RollbackError as e:
                raise AttestationError(
                    f"{url} served {request.item} older than this verifier has already seen "
                    f"({e}): refusing a collateral rollback",
                    code="collateral-rollback",
                ) from e
        self._memo[key] = (data, facts.valid_until)
        self._record(Use(request, url, "network", facts.valid_until))
        return data
