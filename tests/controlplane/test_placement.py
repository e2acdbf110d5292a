"""Placement is a pure function: spread by free vCPUs, ties by memory then id; never
places beyond capacity; used = max(agent's report, live allocations)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.controlplane.services.placement import (
    HostCapacity,
    Resources,
    place,
    with_allocation,
)

NONE = Resources()


def host(
    hid: str,
    cpu: int,
    mem: int,
    *,
    used: Resources = NONE,
    alloc: Resources = NONE,
    online: bool = True,
    tee: frozenset[str] = frozenset({"sim"}),
) -> HostCapacity:
    return HostCapacity(hid, hid, online, tee, Resources(cpu, mem), used, alloc)


def test_spread_most_free_vcpus() -> None:
    hs = [host("a", 4, 4096), host("b", 8, 1024), host("c", 2, 65536)]
    assert place(hs, "sim", Resources(1, 512)).host_id == "b"


def test_tie_on_vcpus_broken_by_memory_then_id() -> None:
    hs = [host("b", 4, 4096), host("a", 4, 4096), host("c", 4, 8192)]
    assert place(hs, "sim", Resources(1, 512)).host_id == "c"
    assert place(hs[:2], "sim", Resources(1, 512)).host_id == "a"


def test_lost_host_and_wrong_tee_are_never_chosen() -> None:
    hs = [host("a", 64, 1 << 20, online=False), host("b", 64, 1 << 20, tee=frozenset({"snp"}))]
    p = place(hs, "sim", Resources(1, 1))
    assert p.host_id is None and "no online host offers tee sim" in p.reason


def test_used_is_the_larger_of_report_and_allocation() -> None:
    h = host("a", 4, 4096, used=Resources(3, 0), alloc=Resources(1, 3000))
    assert h.used == Resources(3, 3000)
    assert h.free == Resources(1, 1096)
    assert place([h], "sim", Resources(2, 100)).host_id is None
    assert place([h], "sim", Resources(1, 1096)).host_id == "a"


def test_reason_names_what_is_short_and_best_host() -> None:
    p = place([host("h1", 1, 2048)], "sim", Resources(2, 4096))
    assert p.reason == (
        "no host with tee sim has 2 vCPUs and 4096 MB free (best: host h1 with 1 vCPU, 2048 MB)"
    )


def test_gpu_and_disk_are_checked() -> None:
    h = host("a", 8, 8192)
    assert place([h], "sim", Resources(1, 1, gpus=1)).host_id is None
    assert place([h], "sim", Resources(1, 1, disk_mb=1)).host_id is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 16), st.integers(0, 8192)), min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 2048)), max_size=40),
)
def test_never_overcommits(hosts: list[tuple[int, int]], reqs: list[tuple[int, int]]) -> None:
    caps = [host(f"h{i}", c, m) for i, (c, m) in enumerate(hosts)]
    for c, m in reqs:
        need = Resources(c, m)
        p = place(caps, "sim", need)
        if p.host_id is None:
            assert not any(h.fits(need) for h in caps)
            continue
        caps = [with_allocation(h, need) if h.host_id == p.host_id else h for h in caps]
    for h in caps:
        assert h.allocated.vcpus <= h.total.vcpus
        assert h.allocated.memory_mb <= h.total.memory_mb
