"""The cache and the source's rules, at library level against the fake PCS on 127.0.0.1:
validity, rollback marks (real Intel PCK CRLs from 2023 and 2025), torn entries,
permissions, offline use."""

from __future__ import annotations

import json
import os
import random
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealroom.attestation.collateral import (
    ChainedCollateral,
    DirectoryCollateral,
    crl_series,
    seen_by_verifier,
)
from sealroom.attestation.snp import kds as kds_urls
from sealroom.attestation.snp.abi import Product
from sealroom.attestation.tdx import collateral as dcap
from sealroom.cli.online import RecordingCollateral
from sealroom.collateral_online import (
    CollateralCache,
    Endpoints,
    HttpFetcher,
    OnlineCollateral,
    RetryPolicy,
)
from sealroom.errors import AttestationError, InvalidInputError, UnavailableError
from sealroom.testing.fake_vendor_services import FakeVendorServer, Reply

PCK_CRL = dcap.pck_crl_request(True, "platform")
CRL_PATH = "/sgx/certification/v4/pckcrl"


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def source(
    server: FakeVendorServer, cache: CollateralCache, now: str, offline: bool = False
) -> OnlineCollateral:
    fetcher = HttpFetcher(
        retry=RetryPolicy(attempts=2),
        sleep=lambda _: None,
        rng=random.Random(3),  # noqa: S311
    )
    return OnlineCollateral(
        endpoints=Endpoints(pcs_url=server.url),
        cache=cache,
        fetcher=fetcher,
        now=t(now),
        offline=offline,
    )


@pytest.fixture
def crls(vectors: Path) -> tuple[bytes, bytes, bytes]:
    """(older 2023 PCK Platform CA CRL, newer 2025 one, the 2025 issuer chain)."""
    older = (vectors / "intel/tdx_v4_gotdx_spr/pck_platform_crl.der").read_bytes()
    b = json.loads((vectors / "intel/tdx_v4_phala/collateral.json").read_text())
    return older, bytes.fromhex(b["pck_crl"]), b["pck_crl_issuer_chain"].encode()


@pytest.fixture
def cache(tmp_path: Path) -> CollateralCache:
    return CollateralCache(tmp_path / "c")


@pytest.fixture
def newer(pcs: FakeVendorServer, crls: tuple[bytes, bytes, bytes]) -> bytes:
    """The 2025 PCK Platform CA CRL, served by the fake PCS."""
    pcs.add_pck_crl("platform", crls[1], crls[2])
    return crls[1]


def test_current_entry_is_used_without_asking(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes
) -> None:
    got = source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL)
    again = source(pcs, cache, "2025-07-10T00:00:00").fetch(PCK_CRL)
    assert got == again == newer and pcs.count(CRL_PATH) == 1


def test_older_crl_than_seen_is_refused(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes, crls: tuple[bytes, bytes, bytes]
) -> None:
    older, _, chain = crls
    assert source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL) == newer
    # Past nextUpdate the CRL is refreshed; a replayed 2023 CRL is refused, even after the
    # cached entries are gone (the marks outlive them).
    for p in (cache.root / "entries").iterdir():
        p.unlink()
    pcs.add_pck_crl("platform", older, chain)
    with pytest.raises(AttestationError) as e:
        source(pcs, cache, "2025-08-01T00:00:00").fetch(PCK_CRL)
    assert e.value.code == "collateral-rollback" and "2023-06" in e.value.message
    mark = cache.seen(
        "crl:C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX PCK Platform CA"
    )
    assert mark is not None and mark.issued is not None and mark.issued.year == 2025


def test_newer_crl_replaces_older(
    pcs: FakeVendorServer, tmp_path: Path, crls: tuple[bytes, bytes, bytes]
) -> None:
    older, newer, chain = crls
    cache = CollateralCache(tmp_path / "c")
    pcs.add_pck_crl("platform", older, chain)
    assert source(pcs, cache, "2023-06-20T00:00:00").fetch(PCK_CRL) == older
    pcs.add_pck_crl("platform", newer, chain)
    src = source(pcs, cache, "2025-07-01T00:00:00")
    assert src.fetch(PCK_CRL) == newer and [u.origin for u in src.uses][-1] == "network"


def test_torn_cache_entry_is_refetched(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes
) -> None:
    source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL)
    blob = next(p for p in (cache.root / "entries").glob("*.bin") if p.read_bytes() == newer)
    blob.write_bytes(newer[:100])  # a crash mid-write elsewhere, or a disk error
    assert source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL) == newer
    assert pcs.count(CRL_PATH) == 2
    assert not [p for p in (cache.root / "entries").iterdir() if p.name.endswith(".tmp")]


def test_offline_source_never_touches_the_network(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes
) -> None:
    src = source(pcs, cache, "2025-07-01T00:00:00", offline=True)
    assert src.fetch(PCK_CRL) is None and pcs.count() == 0
    assert src.explain(PCK_CRL) is not None and "offline" in str(src.explain(PCK_CRL))


def test_network_failure_falls_back_to_a_stale_entry_and_says_so(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes
) -> None:
    source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL)
    pcs.script(CRL_PATH, Reply(503), Reply(503))
    src = source(pcs, cache, "2025-08-01T00:00:00")
    assert src.fetch(PCK_CRL) == newer
    use = src.uses[-1]
    assert use.stale and "refresh failed" in use.note and "HTTP 503" in use.note


def test_network_failure_without_cache_names_the_url(tmp_path: Path) -> None:
    with FakeVendorServer() as gone:
        pass
    src = source(gone, CollateralCache(tmp_path / "c"), "2025-07-01T00:00:00")
    with pytest.raises(UnavailableError) as e:
        src.fetch(PCK_CRL)
    assert f"{gone.url}{CRL_PATH}?ca=platform&encoding=der" in e.value.message


def test_cache_directory_is_private(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path / "new" / "cache")
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o770)  # noqa: S103 - the defect under test: a group-writable cache
    with pytest.raises(InvalidInputError, match="writable by other users"):
        CollateralCache(shared)


def test_unreadable_rollback_marks_fail_closed(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes
) -> None:
    (cache.root / "seen.json").write_text("{not json")
    with pytest.raises(UnavailableError, match=r"seen\.json"):
        source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL)


@pytest.mark.parametrize("key_kind", ["vcek", "vlek"])
def test_kds_cert_chain_is_fetched_and_cached(
    key_kind: str, kds: FakeVendorServer, tmp_path: Path, vectors: Path
) -> None:
    req = kds_urls.chain_request(Product.GENOA, key_kind)
    src = OnlineCollateral(
        endpoints=Endpoints(kds_url=kds.url),
        cache=CollateralCache(tmp_path / "c"),
        now=t("2025-06-01T00:00:00"),
    )
    want = (vectors / f"amd/kds_cert_chains/genoa_{key_kind}_cert_chain.pem").read_bytes()
    assert src.fetch(req) == want and src.fetch(req) == want
    assert kds.count(f"/{key_kind}/v1/Genoa/cert_chain") == 1
    assert [u.origin for u in src.uses] == ["network", "cache"]


def test_not_found_is_remembered_for_a_while(pcs: FakeVendorServer, cache: CollateralCache) -> None:
    # KDS is rate-limited: a 404 is not asked again within the hour (from --now), then is.
    for now in ("2025-07-01T00:00:00", "2025-07-01T00:30:00"):
        assert source(pcs, cache, now).fetch(PCK_CRL) is None
    assert pcs.count(CRL_PATH) == 1
    assert source(pcs, cache, "2025-07-01T02:00:00").fetch(PCK_CRL) is None
    assert pcs.count(CRL_PATH) == 2


def test_not_found_on_refresh_keeps_the_stale_entry(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes
) -> None:
    source(pcs, cache, "2025-07-01T00:00:00").fetch(PCK_CRL)
    pcs.set(f"{CRL_PATH}?ca=platform", Reply(404))
    for _ in range(2):
        src = source(pcs, cache, "2025-08-01T00:00:00")
        assert src.fetch(PCK_CRL) == newer and src.uses[-1].stale


def test_online_cache_marks_count_behind_a_collateral_directory(
    pcs: FakeVendorServer, cache: CollateralCache, newer: bytes, tmp_path: Path
) -> None:
    """`--collateral DIR --online` chains the directory before the online source: the
    cache's rollback marks must still reach the verifier's "never older than seen" rule."""
    online = source(pcs, cache, "2025-07-01T00:00:00")
    online.fetch(PCK_CRL)
    (tmp_path / "dir").mkdir()
    chained = ChainedCollateral([DirectoryCollateral(tmp_path / "dir"), online])
    series = crl_series("C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX PCK Platform CA")
    mark = seen_by_verifier(chained, None, series)
    assert mark is not None and mark.issued is not None and mark.issued.year == 2025
    recorder = RecordingCollateral(chained)  # `attest fetch` wraps the same chain
    assert seen_by_verifier(recorder, None, series) == mark
