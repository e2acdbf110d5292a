"""Collateral: certificates, CRLs, TCB info that evidence is checked against.

Verification is the only stage that may fetch, and it fetches through one injected
:class:`CollateralSource`. The default is :class:`NoCollateral` (no network). Each
request names the canonical vendor URL (AMD KDS, Intel PCS). This layer knows no HTTP
(ADR 0001): sealroom's HTTP source, with its cache, is ``sealroom.collateral_online``
(ADR 0023), a layer above, plugged in by the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from sealroom.errors import UnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollateralRequest:
    """One piece of collateral a verifier wants.

    ``kind``/``item`` say what it is ("snp"/"crl"); ``url`` is where the vendor serves it;
    ``filenames`` are the plain names an offline directory may hold it under (first wins).
    """

    kind: str
    item: str
    url: str
    filenames: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def describe(self) -> str:
        return f"{self.kind} {self.item} ({self.url})"


class CollateralSource(Protocol):
    def fetch(self, request: CollateralRequest) -> bytes | None:
        """The bytes, or None where this source does not have them.

        Raises :class:`UnavailableError` only when a source that should have answered
        could not (an unreachable server, an unreadable file).
        """
        ...


class NoCollateral:
    """The default: has nothing, fetches nothing."""

    def fetch(self, request: CollateralRequest) -> bytes | None:
        return None


def _url_path(url: str) -> str:
    # https://kdsintf.amd.com/vcek/v1/Milan/crl -> kdsintf.amd.com/vcek/v1/Milan/crl
    # Query strings become part of the file name with unsafe characters replaced.
    stripped = re.sub(r"^[a-z]+://", "", url)
    return re.sub(r"[^A-Za-z0-9._/=-]", "_", stripped)


class DirectoryCollateral:
    """An offline cache directory.

    Looks for, in order: the request's plain file names (``vcek.der``, ``crl.der``,
    ``Milan.crl``...) and the URL mirrored as a path (``kdsintf.amd.com/vcek/v1/Milan/crl``).
    ``store`` writes the URL form, so an online fetch can populate the cache.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise UnavailableError(f"collateral directory {root} does not exist")
        self.root = root

    def _candidates(self, request: CollateralRequest) -> list[Path]:
        paths = [self.root / n for n in request.filenames]
        paths.append(self.root / _url_path(request.url))
        return paths

    def fetch(self, request: CollateralRequest) -> bytes | None:
        for p in self._candidates(request):
            resolved = p.resolve()
            if not resolved.is_relative_to(self.root.resolve()):
                continue
            if resolved.is_file():
                try:
                    return resolved.read_bytes()
                except OSError as e:
                    raise UnavailableError(f"cannot read collateral {resolved}: {e}") from e
        return None

    def store(self, request: CollateralRequest, data: bytes) -> Path:
        target = self.root / _url_path(request.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        return target


class FetcherCollateral:
    """Adapts any ``url -> bytes`` function (an HTTP client the caller trusts) into a source.

    This layer ships no HTTP client (ADR 0001); ``sealroom.collateral_online`` is the
    production HTTP source, with validity-aware caching, retries and offline use.
    """

    def __init__(
        self, fetch_url: Callable[[str], bytes], cache: DirectoryCollateral | None = None
    ) -> None:
        self._fetch_url = fetch_url
        self._cache = cache

    def fetch(self, request: CollateralRequest) -> bytes | None:
        if self._cache is not None:
            hit = self._cache.fetch(request)
            if hit is not None:
                return hit
        try:
            data = self._fetch_url(request.url)
        except Exception as e:  # any client error is "unavailable", wrapped once here
            raise UnavailableError(f"cannot fetch {request.describe()}: {e}") from e
        if self._cache is not None:
            self._cache.store(request, data)
        return data


class ChainedCollateral:
    """First source that has the item wins."""

    def __init__(self, sources: Sequence[CollateralSource]) -> None:
        self.sources = tuple(sources)

    def fetch(self, request: CollateralRequest) -> bytes | None:
        for s in self.sources:
            data = s.fetch(request)
            if data is not None:
                return data
        return None

    def explain(self, request: CollateralRequest) -> str | None:
        notes = [n for s in self.sources if (n := explain(s, request))]
        return "; ".join(notes) or None


def explain(source: CollateralSource, request: CollateralRequest) -> str | None:
    """Why ``source`` lacks ``request``, where it can say (an online source names the URL it
    asked and the answer); sources may define an ``explain(request)`` method for this."""
    method = getattr(source, "explain", None)
    return method(request) if callable(method) else None


def require(source: CollateralSource, request: CollateralRequest) -> bytes:
    data = source.fetch(request)
    if data is None:
        why = explain(source, request)
        raise UnavailableError(
            f"collateral unavailable: {request.describe()}"
            + (f" ({why})" if why else "")
            + "; pass it with --certs/--collateral or configure a collateral source",
            code=f"{request.kind}-collateral-unavailable",
        )
    return data
