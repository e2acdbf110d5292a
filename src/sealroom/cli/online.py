"""CLI plumbing for online collateral: ``--online``/``--offline`` options, the source they
build, and how the collateral used is shown."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from sealroom import paths
from sealroom.attestation.collateral import (
    ChainedCollateral,
    CollateralRequest,
    CollateralSource,
    DirectoryCollateral,
    SeenMark,
    explain,
    seen_by_verifier,
)
from sealroom.cli.common import console, err_console
from sealroom.collateral_online import CollateralCache, Endpoints, OnlineCollateral, Use
from sealroom.collateral_online.endpoints import KDS_DEFAULT, PCS_DEFAULT
from sealroom.errors import InvalidInputError

OnlineOpt = Annotated[
    bool,
    typer.Option(
        "--online", help="Fetch missing collateral from AMD KDS / Intel PCS, through the cache."
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", help="Use the collateral cache only; never touch the network."),
]
KdsUrlOpt = Annotated[
    str | None, typer.Option("--kds-url", help=f"AMD KDS base URL (default {KDS_DEFAULT}).")
]
PcsUrlOpt = Annotated[
    str | None,
    typer.Option("--pcs-url", help=f"Intel PCS or PCCS base URL (default {PCS_DEFAULT})."),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Collateral cache directory (default SEALROOM_HOME/collateral)."),
]
TcbUpdateOpt = Annotated[
    str | None,
    typer.Option("--tcb-update", help="Intel TCB info / QE identity stream: standard or early."),
]


def default_cache_dir() -> Path:
    return paths.collateral_cache()


def online_source(
    *,
    online: bool,
    offline: bool,
    kds_url: str | None,
    pcs_url: str | None,
    cache: Path | None,
    tcb_update: str | None,
    now: datetime,
) -> OnlineCollateral | None:
    """The source ``--online``/``--offline`` ask for, or None when neither was given."""
    if online and offline:
        raise InvalidInputError("--online and --offline exclude each other")
    if not (online or offline):
        extra = [
            n
            for n, v in (
                ("--kds-url", kds_url),
                ("--pcs-url", pcs_url),
                ("--cache", cache),
                ("--tcb-update", tcb_update),
            )
            if v is not None
        ]
        if extra:
            raise InvalidInputError(f"{', '.join(extra)} need --online (or --offline)")
        return None
    endpoints = Endpoints(
        kds_url=kds_url or KDS_DEFAULT, pcs_url=pcs_url or PCS_DEFAULT, update=tcb_update
    )
    return OnlineCollateral(
        endpoints=endpoints,
        cache=CollateralCache(cache or default_cache_dir()),
        offline=offline,
        now=now,
    )


def chain(directory: Path | None, online: OnlineCollateral | None) -> CollateralSource | None:
    """The verifier's own files first (``--collateral DIR``), then the online source."""
    sources: list[CollateralSource] = []
    if directory is not None:
        sources.append(DirectoryCollateral(directory))
    if online is not None:
        sources.append(online)
    if not sources:
        return None
    return sources[0] if len(sources) == 1 else ChainedCollateral(sources)


def report_stale(source: OnlineCollateral | None) -> None:
    """Stale entries are always reported, on stderr, whatever the verdict."""
    if source is None:
        return
    for use in source.uses:
        if use.stale:
            err_console.print(f"[yellow]STALE collateral used:[/] {use.describe()}")


def render_uses(uses: Sequence[Use]) -> None:
    if not uses:
        return
    console.print("[bold]Collateral[/]")
    for use in uses:
        colour = "yellow" if use.stale else "red" if use.origin == "missing" else "green"
        console.print(f"  [{colour}]{use.origin:11}[/] {use.describe()}")


class RecordingCollateral:
    """Passes requests through and keeps what each returned (``sealroom attest fetch``)."""

    def __init__(self, inner: CollateralSource) -> None:
        self.inner = inner
        self._got: dict[str, tuple[CollateralRequest, bytes]] = {}

    @property
    def got(self) -> list[tuple[CollateralRequest, bytes]]:
        return list(self._got.values())

    def fetch(self, request: CollateralRequest) -> bytes | None:
        data = self.inner.fetch(request)
        if data is not None:
            self._got[request.url] = (request, data)
        return data

    def explain(self, request: CollateralRequest) -> str | None:
        return explain(self.inner, request)

    def seen(self, series: str) -> SeenMark | None:
        return seen_by_verifier(self.inner, None, series)
