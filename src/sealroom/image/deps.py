"""The Python distributions the enclave side needs: sealroom's core requirements (no extra)
and everything they require in turn, resolved against an installed environment.

The guest image installs exactly this set, and a test runs the runtime in an environment
holding only it, so the control-plane stack can never creep back into the enclave.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sealroom.errors import UnavailableError

DIST_NAME = "sealroom"


def _wanted(req: Requirement, extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in ("", *extras))


def core_distributions(root: str = DIST_NAME) -> list[md.Distribution]:
    """The installed distributions ``root`` needs without any extra, transitively, sorted
    by name (``root`` itself excluded)."""
    try:
        top = md.distribution(root)
    except md.PackageNotFoundError as e:
        raise UnavailableError(f"{root} is not installed in this environment") from e
    todo: list[tuple[Requirement, tuple[str, ...]]] = [
        (Requirement(r), ()) for r in (top.requires or [])
    ]
    found: dict[str, md.Distribution] = {}
    extras_seen: dict[str, set[str]] = {}
    while todo:
        req, parent_extras = todo.pop()
        if not _wanted(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        new_extras = set(req.extras) - extras_seen.get(name, set())
        if name in found and not new_extras:
            continue
        try:
            dist = found.get(name) or md.distribution(req.name)
        except md.PackageNotFoundError as e:
            raise UnavailableError(
                f"{req.name} (needed by {root}) is not installed in this environment"
            ) from e
        found[name] = dist
        extras_seen.setdefault(name, set()).update(req.extras)
        for r in dist.requires or []:
            todo.append((Requirement(r), tuple(sorted(extras_seen[name]))))
    return [found[k] for k in sorted(found)]


def distribution_paths(dist: md.Distribution) -> list[Path]:
    """The top-level entries (packages, modules, .dist-info, .libs) a distribution placed in
    its site-packages directory, as absolute paths."""
    base = Path(str(dist.locate_file("")))
    tops: set[str] = set()
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if not parts or parts[0] in ("..", "__pycache__") or Path(str(f)).is_absolute():
            continue  # console scripts live in bin/, outside site-packages
        tops.add(parts[0])
    return [base / t for t in sorted(tops) if (base / t).exists()]
