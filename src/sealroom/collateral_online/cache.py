"""The local collateral cache: one directory, entries written atomically, validity kept.

Layout (the directory is 0700, files 0600)::

    entries/<sha256(key)[:40]>.bin    the bytes exactly as served
    entries/<sha256(key)[:40]>.json   {key, url, request, fetched_at, valid_until, sha256...}
    seen.json                         per series, the newest item ever seen (rollback marks)

An entry's key is the URL it was fetched from (plus the header name for issuer chains),
so a PCCS and Intel's PCS never overwrite each other's answers. ``seen.json`` survives
entry replacement and deletion: an older CRL (earlier ``thisUpdate``) or TCB info / QE
identity (lower ``tcbEvaluationDataNumber``) than one already seen is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sealroom.attestation.collateral import FileCollateralHistory, SeenMark
from sealroom.collateral_online.content import Facts
from sealroom.errors import InvalidInputError, UnavailableError
from sealroom.files import exclusive_lock, write_private


@dataclass(frozen=True)
class CachedEntry:
    key: str
    url: str
    request: str
    data: bytes
    fetched_at: datetime
    valid_until: datetime | None

    def fresh(self, now: datetime) -> bool:
        """Current at ``now``: before its nextUpdate / notAfter. Items with no stated
        validity are never fresh (they are refreshed whenever the network is allowed)."""
        return self.valid_until is not None and now <= self.valid_until


class RollbackError(Exception):
    """An item older than one already seen in its series (internal: the source decides)."""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _time(s: Any) -> datetime | None:
    return datetime.fromisoformat(s) if isinstance(s, str) else None


class CollateralCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            if not root.exists():
                root.mkdir(mode=0o700, parents=True)
                os.chmod(root, 0o700)  # mkdir's mode is filtered by the umask
            mode = root.stat().st_mode
            (root / "entries").mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise UnavailableError(f"collateral cache {root} is not usable: {e}") from e
        if not stat.S_ISDIR(mode):
            raise InvalidInputError(f"collateral cache {root} is not a directory")
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InvalidInputError(
                f"collateral cache {root} is writable by other users (mode {mode & 0o777:o}); "
                "its rollback marks could be reset: chmod 700 it"
            )
        self.marks = FileCollateralHistory(root / "seen.json")

    # --- entries --------------------------------------------------------------------------

    def _paths(self, key: str) -> tuple[Path, Path]:
        h = hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.root / "entries" / f"{h}.bin", self.root / "entries" / f"{h}.json"

    def get(self, key: str) -> CachedEntry | None:
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            data = data_path.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable or torn: as if absent; the next fetch rewrites it
        if (
            not isinstance(meta, dict)
            or meta.get("key") != key
            or meta.get("sha256") != hashlib.sha256(data).hexdigest()
        ):
            return None
        fetched = _time(meta.get("fetched_at"))
        if fetched is None:
            return None
        return CachedEntry(
            key=key,
            url=str(meta.get("url")),
            request=str(meta.get("request")),
            data=data,
            fetched_at=fetched,
            valid_until=_time(meta.get("valid_until")),
        )

    def put(
        self, key: str, url: str, request: str, data: bytes, facts: Facts, now: datetime
    ) -> CachedEntry:
        """Store ``data``; RollbackError when it is older than its series' mark."""
        with self._locked():
            if facts.series is not None:
                self._advance(facts)
            data_path, meta_path = self._paths(key)
            meta = {
                "key": key,
                "url": url,
                "request": request,
                "form": facts.form,
                "fetched_at": now.isoformat(),
                "valid_until": _iso(facts.valid_until),
                "series": facts.series,
                "issued": _iso(facts.issued),
                "number": facts.number,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            write_private(data_path, data, overwrite=True, what="collateral cache entry")
            write_private(
                meta_path,
                json.dumps(meta, indent=1).encode(),
                overwrite=True,
                what="collateral cache entry",
            )
        return CachedEntry(key, url, request, data, now, facts.valid_until)

    # --- remembered "not found" answers ---------------------------------------------------

    def put_absent(self, key: str, why: str, now: datetime, until: datetime) -> None:
        data_path, meta_path = self._paths(key)
        meta = {"key": key, "absent": why, "fetched_at": now.isoformat(), "until": _iso(until)}
        with contextlib.suppress(FileNotFoundError):
            data_path.unlink()
        write_private(
            meta_path,
            json.dumps(meta, indent=1).encode(),
            overwrite=True,
            what="collateral cache entry",
        )

    def absent(self, key: str, now: datetime) -> str | None:
        """The remembered "not found" answer for ``key`` while current at ``now``, else None."""
        try:
            meta = json.loads(self._paths(key)[1].read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key or "absent" not in meta:
            return None
        since, until = _time(meta.get("fetched_at")), _time(meta.get("until"))
        if since is None or until is None or not since <= now <= until:
            return None
        return str(meta["absent"])

    # --- rollback marks -------------------------------------------------------------------

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.root / ".lock")

    def _advance(self, facts: Facts) -> None:
        assert facts.series is not None
        seen = self.marks.seen(facts.series)
        why = facts.older_than(seen) if seen is not None else None
        if why is not None:
            raise RollbackError(why)
        self.marks.observe(facts.series, SeenMark(facts.number, facts.issued))

    def seen(self, series: str) -> SeenMark | None:
        """The newest item seen in ``series`` (``crl:<issuer DN>``, ``tcbinfo:TDX:<fmspc>``,
        ``qeidentity:TD_QE``), or None."""
        return self.marks.seen(series)
