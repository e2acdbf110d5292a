"""Placement: a pure function over host capacities and one request.

Rule (ADR 0013): among online hosts offering the TEE kind with room for every resource,
pick the one with the MOST free vCPUs (spread), ties broken by most free memory, then by
host id. "Used" is the larger of what the agent reports and the sum of the limits of the
live computations placed on the host, so a stopped computation frees capacity at once
and the agent's word alone can never cause overcommit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Resources:
    vcpus: int = 0
    memory_mb: int = 0
    gpus: int = 0
    disk_mb: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.vcpus + other.vcpus,
            self.memory_mb + other.memory_mb,
            self.gpus + other.gpus,
            self.disk_mb + other.disk_mb,
        )

    def __neg__(self) -> Resources:
        return Resources(-self.vcpus, -self.memory_mb, -self.gpus, -self.disk_mb)


@dataclass(frozen=True)
class HostCapacity:
    host_id: str
    name: str
    online: bool
    tee_kinds: frozenset[str]
    total: Resources
    reported_used: Resources
    allocated: Resources  # sum of limits of live computations placed here
    # derived once (placement looks at every host for every request)
    used: Resources = field(init=False, compare=False)
    free: Resources = field(init=False, compare=False)

    def __post_init__(self) -> None:
        r, a, t = self.reported_used, self.allocated, self.total
        used = Resources(
            max(r.vcpus, a.vcpus),
            max(r.memory_mb, a.memory_mb),
            max(r.gpus, a.gpus),
            max(r.disk_mb, a.disk_mb),
        )
        free = Resources(
            max(0, t.vcpus - used.vcpus),
            max(0, t.memory_mb - used.memory_mb),
            max(0, t.gpus - used.gpus),
            max(0, t.disk_mb - used.disk_mb),
        )
        object.__setattr__(self, "used", used)
        object.__setattr__(self, "free", free)

    def fits(self, need: Resources) -> bool:
        f = self.free
        return (
            f.vcpus >= need.vcpus
            and f.memory_mb >= need.memory_mb
            and f.gpus >= need.gpus
            and f.disk_mb >= need.disk_mb
        )


@dataclass(frozen=True)
class Placement:
    host_id: str | None
    # why nothing fits (names what is short), empty when placed
    reason: str = ""


def _describe_need(tee: str, need: Resources) -> str:
    parts = [f"{need.vcpus} vCPU{'s' if need.vcpus != 1 else ''}", f"{need.memory_mb} MB"]
    if need.gpus:
        parts.append(f"{need.gpus} GPU{'s' if need.gpus != 1 else ''}")
    if need.disk_mb:
        parts.append(f"{need.disk_mb} MB disk")
    return f"no host with tee {tee} has {' and '.join(parts)} free"


def _describe_free(h: HostCapacity) -> str:
    f = h.free
    s = f"host {h.name} with {f.vcpus} vCPU{'s' if f.vcpus != 1 else ''}, {f.memory_mb} MB"
    if f.gpus:
        s += f", {f.gpus} GPUs"
    return s


def _rank(h: HostCapacity) -> tuple[int, int, str]:
    f = h.free
    return (-f.vcpus, -f.memory_mb, h.host_id)


def place(hosts: Iterable[HostCapacity], tee: str, need: Resources) -> Placement:
    """Choose a host for ``need`` on TEE kind ``tee``, or say what is short."""
    candidates = [h for h in hosts if h.online and tee in h.tee_kinds]
    fitting = [h for h in candidates if h.fits(need)]
    if fitting:
        return Placement(min(fitting, key=_rank).host_id)
    msg = _describe_need(tee, need)
    if not candidates:
        return Placement(None, f"{msg} (no online host offers tee {tee})")
    best = min(candidates, key=_rank)
    return Placement(None, f"{msg} (best: {_describe_free(best)})")


def with_allocation(h: HostCapacity, need: Resources) -> HostCapacity:
    """The host after ``need`` was placed on it (negative: released)."""
    return replace(h, allocated=h.allocated + need)


class CapacityIndex:
    """Host capacities by id, plus, per TEE kind, the online hosts offering it sorted by
    the placement rank (docs/adr/0039). ``place`` walks a kind's hosts best first and
    takes the first that fits: the same answer (and the same reason when nothing fits)
    as ``place(index.values(), ...)``, without looking at every host for every request.
    Updates keep the order (a host that changes is moved; O(log n) search and a short
    memmove)."""

    def __init__(self, hosts: Iterable[HostCapacity] = ()) -> None:
        self._hosts: dict[str, HostCapacity] = {}
        self._ranked: dict[str, list[tuple[int, int, str]]] = {}
        for h in hosts:
            self[h.host_id] = h

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, host_id: object) -> bool:
        return host_id in self._hosts

    def __getitem__(self, host_id: str) -> HostCapacity:
        return self._hosts[host_id]

    def get(self, host_id: str) -> HostCapacity | None:
        return self._hosts.get(host_id)

    def keys(self) -> Iterable[str]:
        return self._hosts.keys()

    def values(self) -> Iterable[HostCapacity]:
        return self._hosts.values()

    def __setitem__(self, host_id: str, h: HostCapacity) -> None:
        if h.host_id != host_id:
            raise ValueError(f"capacity of {h.host_id} stored under {host_id}")
        old = self._hosts.get(host_id)
        if old is not None and old.online:
            key = _rank(old)
            for kind in old.tee_kinds:
                ranked = self._ranked[kind]
                i = bisect.bisect_left(ranked, key)
                if i < len(ranked) and ranked[i] == key:
                    del ranked[i]
        self._hosts[host_id] = h
        if h.online:
            key = _rank(h)
            for kind in h.tee_kinds:
                bisect.insort(self._ranked.setdefault(kind, []), key)

    def place(self, tee: str, need: Resources) -> Placement:
        ranked = self._ranked.get(tee, ())
        for _, _, hid in ranked:
            if self._hosts[hid].fits(need):
                return Placement(hid)
        msg = _describe_need(tee, need)
        if not ranked:
            return Placement(None, f"{msg} (no online host offers tee {tee})")
        best = self._hosts[ranked[0][2]]
        return Placement(None, f"{msg} (best: {_describe_free(best)})")
