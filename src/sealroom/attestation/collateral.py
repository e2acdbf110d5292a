"""Collateral: certificates, CRLs, TCB info that evidence is checked against.

Verification is the only stage that may fetch, and it fetches through one injected
:class:`CollateralSource`. The default is :class:`NoCollateral` (no network). Each
request names the canonical vendor URL (AMD KDS, Intel PCS). This layer knows no HTTP
(ADR 0001): sealroom's HTTP source, with its cache, is ``sealroom.collateral_online``
(ADR 0023), a layer above, plugged in by the caller.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from sealroom.errors import AttestationError, UnavailableError
from sealroom.files import write_private

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

    def seen(self, series: str) -> SeenMark | None:
        """The newest mark any chained source remembers (the online cache's rollback marks
        behind a ``--collateral DIR``), for :func:`seen_by_verifier`."""
        mark: SeenMark | None = None
        for s in self.sources:
            got = seen_by_verifier(s, None, series)
            if got is not None:
                mark = got.newer(mark)
        return mark


def explain(source: CollateralSource, request: CollateralRequest) -> str | None:
    """Why ``source`` lacks ``request``, where it can say (an online source names the URL it
    asked and the answer); sources may define an ``explain(request)`` method for this."""
    method = getattr(source, "explain", None)
    return method(request) if callable(method) else None


# --- what the verifier has seen (ADR 0020) ------------------------------------------------
#
# Collateral that comes with the evidence (an envelope's CRL, TCB info, QE identity) is
# the presenter's choice: an old but unexpired set can hide a revoked PCK or a TCB
# recovery. So the verifier's own collateral always wins, and presenter collateral is used
# only where the verifier has none and is never older than the newest the verifier has
# seen in the same series. A series names a sequence of versions of one item:
# ``crl:<issuer DN>`` (ordered by thisUpdate), ``tcbinfo:<TDX|SGX>:<fmspc>`` and
# ``qeidentity:<id>`` (ordered by tcbEvaluationDataNumber, then issueDate).


@dataclass(frozen=True)
class SeenMark:
    """The newest item seen in one series (the rollback high-water mark)."""

    number: int | None = None
    issued: datetime | None = None

    def newer(self, other: SeenMark | None) -> SeenMark:
        if other is None:
            return self
        numbers = [n for n in (self.number, other.number) if n is not None]
        issued = [t for t in (self.issued, other.issued) if t is not None]
        return SeenMark(max(numbers) if numbers else None, max(issued) if issued else None)

    def older_than(self, seen: SeenMark) -> str | None:
        """Why an item with this mark is older than ``seen``, or None."""
        if self.number is not None and seen.number is not None and self.number < seen.number:
            return f"tcbEvaluationDataNumber {self.number} < {seen.number} already seen"
        if self.number == seen.number and self.issued and seen.issued and self.issued < seen.issued:
            return (
                f"issued {self.issued.isoformat()}, before {seen.issued.isoformat()} already seen"
            )
        return None


def crl_series(issuer_dn: str) -> str:
    return f"crl:{issuer_dn}"


def tcb_info_series(tcb_id: str, fmspc: bytes) -> str:
    return f"tcbinfo:{tcb_id}:{fmspc.hex()}"


def qe_identity_series(qe_id: str) -> str:
    return f"qeidentity:{qe_id}"


class CollateralHistory(Protocol):
    """The verifier's memory of the newest collateral it has seen, per series."""

    def seen(self, series: str) -> SeenMark | None: ...

    def observe(self, series: str, mark: SeenMark) -> None:
        """Remember authentic collateral verification accepted (never moves backwards)."""
        ...


class MemoryCollateralHistory:
    """In-process history (a long-running verifier: key broker, control plane, client)."""

    def __init__(self) -> None:
        self._marks: dict[str, SeenMark] = {}
        self._lock = threading.Lock()

    def seen(self, series: str) -> SeenMark | None:
        with self._lock:
            return self._marks.get(series)

    def observe(self, series: str, mark: SeenMark) -> None:
        with self._lock:
            self._marks[series] = mark.newer(self._marks.get(series))


class FileCollateralHistory:
    """History kept in a JSON file (the CLI's ``$SEALROOM_HOME/verifier/collateral-seen.json``,
    the online cache's ``seen.json``), so one verification remembers what earlier ones saw.
    The file is read on every use, so several processes sharing it never undo each other's
    marks. Unreadable state fails closed: losing the marks would let older collateral back
    in unnoticed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._read()  # fail closed at once on a damaged file

    def _read(self) -> dict[str, SeenMark]:
        try:
            raw = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError) as e:
            raise UnavailableError(
                f"collateral history {self.path} is unreadable ({e}); inspect or remove it"
            ) from e
        marks: dict[str, SeenMark] = {}
        for series, m in (raw if isinstance(raw, dict) else {}).items():
            number = m.get("number") if isinstance(m, dict) else None
            issued = m.get("issued") if isinstance(m, dict) else None
            marks[series] = SeenMark(
                number if isinstance(number, int) else None,
                datetime.fromisoformat(issued) if isinstance(issued, str) else None,
            )
        return marks

    def seen(self, series: str) -> SeenMark | None:
        return self._read().get(series)

    def observe(self, series: str, mark: SeenMark) -> None:
        with self._lock:
            marks = self._read()
            newest = mark.newer(marks.get(series))
            if newest == marks.get(series):
                return
            marks[series] = newest
            doc = {
                k: {"number": v.number, "issued": v.issued.isoformat() if v.issued else None}
                for k, v in sorted(marks.items())
            }
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(
                self.path,
                json.dumps(doc, indent=1).encode(),
                overwrite=True,
                what="collateral history",
            )


def seen_by_verifier(
    source: CollateralSource, history: CollateralHistory | None, series: str
) -> SeenMark | None:
    """The newest mark the verifier knows for ``series``: its history, and any source
    that remembers what it fetched (a ``seen(series)`` method, e.g. the online cache)."""
    mark = history.seen(series) if history is not None else None
    method = getattr(source, "seen", None)
    if callable(method):
        got = method(series)
        if isinstance(got, SeenMark):
            mark = got.newer(mark)
    return mark


def refuse_rollback(what: str, series: str, mark: SeenMark, seen: SeenMark | None) -> None:
    """Presenter collateral older than what the verifier has seen is refused."""
    why = mark.older_than(seen) if seen is not None else None
    if why is not None:
        raise AttestationError(
            f"{what} carried with the evidence is older than collateral this verifier has "
            f"already seen ({series}: {why}): an old set can hide a revocation or a TCB "
            "recovery; refused (give the verifier current collateral: --collateral/--online)",
            code="collateral-rollback",
        )


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
