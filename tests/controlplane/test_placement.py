"""Placement is a pure function: spread by free vCPUs, ties by memory then id; never
places beyond capacity; used = max(agent's report, live allocations)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.controlplane.services.placement import (
    CapacityIndex,
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


# The capacity index (docs/adr/0039) must give exactly place()'s answer, reason included,
# while hosts come, go offline, change TEE kinds, report usage and take allocations.
_host_change = st.tuples(
    st.integers(0, 5),  # which host
    st.integers(0, 8),  # vCPUs
    st.integers(0, 4096),  # memory
    st.integers(0, 3),  # reported used vCPUs
    st.booleans(),  # online
    st.sampled_from([frozenset({"sim"}), frozenset({"snp"}), frozenset({"sim", "snp"})]),
)
_request = st.tuples(
    st.sampled_from(["sim", "snp", "tdx"]), st.integers(0, 4), st.integers(0, 2048)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_host_change, _request), max_size=60))
def test_capacity_index_answers_as_place(ops: list[tuple[object, ...]]) -> None:
    plain: dict[str, HostCapacity] = {}
    index = CapacityIndex()
    for op in ops:
        if len(op) == 6:
            i, cpu, mem, used, online, tee = op
            hid = f"h{i}"
            old = plain.get(hid)
            h = HostCapacity(
                hid,
                hid,
                bool(online),
                tee,  # type: ignore[arg-type]
                Resources(int(cpu), int(mem)),  # type: ignore[call-overload]
                Resources(int(used)),  # type: ignore[call-overload]
                old.allocated if old else NONE,
            )
            plain[hid] = h
            index[hid] = h
            continue
        tee_kind, c, m = op
        need = Resources(int(c), int(m))  # type: ignore[call-overload]
        want = place(plain.values(), str(tee_kind), need)
        got = index.place(str(tee_kind), need)
        assert got == want
        if got.host_id is not None:
            plain[got.host_id] = with_allocation(plain[got.host_id], need)
            index[got.host_id] = with_allocation(index[got.host_id], need)
    assert {h.host_id: h for h in index.values()} == plain


def test_capacity_index_forgets_a_host_that_went_offline() -> None:
    index = CapacityIndex([host("a", 8, 8192), host("b", 4, 4096)])
    assert index.place("sim", Resources(1, 1)).host_id == "a"
    index["a"] = host("a", 8, 8192, online=False)
    assert index.place("sim", Resources(1, 1)).host_id == "b"
    index["b"] = host("b", 4, 4096, tee=frozenset({"snp"}))
    p = index.place("sim", Resources(1, 1))
    assert p.host_id is None and "no online host offers tee sim" in p.reason
    assert index.place("snp", Resources(1, 1)).host_id == "b"
