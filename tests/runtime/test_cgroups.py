"""Sandbox cgroups: detection from the kernel's files, v2 writes on a fake cgroupfs tree,
and the host's real hierarchies (v1 on this project's machines) for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sealroom.runtime import cgroups
from sealroom.runtime.cgroups import CgroupHost, CgroupLimits, CgroupUnavailableError

# This machine's layout: v1 controllers plus an empty unified hierarchy.
V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / {v2} rw,relatime - cgroup2 cgroup2 rw
"""
PROC_CGROUPS = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
memory\t4\t23\t1
pids\t8\t1\t1
"""
SELF_CGROUP = """\
8:pids:/
4:memory:/process_api/abc
3:cpuset:/
1:cpu:/
0::/
"""


def _fake_v2(root: Path, controllers: str, *, own: str = "") -> Path:
    """A unified hierarchy as the kernel lays it out, for the files the code reads."""
    d = root / own if own else root
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.controllers").write_text(controllers + "\n")
    (d / "cgroup.subtree_control").write_text("\n")
    (d / "cpuset.mems.effective").write_text("0\n")
    (d / "memory.swap.max").write_text("max\n")
    (d / "memory.oom.group").write_text("0\n")
    (d / "cgroup.procs").write_text("")
    return d


def test_v1_chosen_when_the_unified_hierarchy_has_no_controllers(tmp_path: Path) -> None:
    v2 = _fake_v2(tmp_path / "unified", "")
    host = cgroups.detect_from(V1_MOUNTINFO.format(v2=v2), PROC_CGROUPS, SELF_CGROUP)
    assert host.version == 1
    assert host.cpu == "cpuset"
    assert host.parents == {
        "memory": Path("/sys/fs/cgroup/memory/process_api/abc"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "cpuset": Path("/sys/fs/cgroup/cpuset"),
    }


def test_v2_chosen_when_it_offers_the_controllers(tmp_path: Path) -> None:
    v2 = tmp_path / "unified"
    own = _fake_v2(v2, "cpuset cpu io memory pids", own="system.slice/sealroom.service")
    host = cgroups.detect_from(
        V1_MOUNTINFO.format(v2=v2), PROC_CGROUPS, "0::/system.slice/sealroom.service\n"
    )
    assert host == CgroupHost(version=2, parents={"": own}, cpu="cpuset")


def test_v2_without_cpuset_limits_cpu_bandwidth(tmp_path: Path) -> None:
    v2 = tmp_path / "unified"
    _fake_v2(v2, "cpu memory pids")
    host = cgroups.detect_from(f"1 0 0:1 / {v2} rw - cgroup2 cgroup2 rw\n", "", "0::/\n")
    assert (host.version, host.cpu) == (2, "cpu")


def test_no_usable_hierarchy_is_an_error_naming_both(tmp_path: Path) -> None:
    v2 = _fake_v2(tmp_path / "unified", "memory")
    mountinfo = f"1 0 0:1 / {v2} rw - cgroup2 cgroup2 rw\n" + (
        "2 0 0:2 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    with pytest.raises(CgroupUnavailableError) as e:
        cgroups.detect_from(mountinfo, PROC_CGROUPS, "4:memory:/\n0::/\n")
    assert "offers controllers ['memory'], need memory, pids" in str(e.value)
    assert "v1 hierarchies mounted and enabled: ['memory']" in str(e.value)


def test_disabled_v1_controller_is_not_used(tmp_path: Path) -> None:
    v2 = _fake_v2(tmp_path / "unified", "")
    disabled = PROC_CGROUPS.replace("pids\t8\t1\t1", "pids\t8\t1\t0")
    with pytest.raises(CgroupUnavailableError, match="need memory, pids"):
        cgroups.detect_from(V1_MOUNTINFO.format(v2=v2), disabled, SELF_CGROUP)


def test_v2_sandbox_cgroup_file_writes(tmp_path: Path) -> None:
    own = _fake_v2(tmp_path, "cpuset cpu memory pids")
    host = CgroupHost(version=2, parents={"": own}, cpu="cpuset")
    cg = cgroups.SandboxCgroup.create(
        host, CgroupLimits(memory_bytes=512 * 2**20, max_pids=67, cpus=(1,))
    )
    d = cg.dirs[""]
    assert d.parent == own and d.name.startswith(cgroups.SANDBOX_PREFIX)
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpuset"
    assert (d / "memory.max").read_text() == str(512 * 2**20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "memory.oom.group").read_text() == "1"
    assert (d / "pids.max").read_text() == "67"
    assert (d / "cpuset.cpus").read_text() == "1"
    assert (d / "cpuset.mems").read_text() == "0"
    cg.add(4242)
    assert (d / "cgroup.procs").read_text() == "4242"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert cg.oom_kills() == 1


def test_v2_cpu_bandwidth_when_no_cpuset(tmp_path: Path) -> None:
    own = _fake_v2(tmp_path, "cpu memory pids")
    (own / "cgroup.subtree_control").write_text("memory pids\n")  # already delegated
    host = CgroupHost(version=2, parents={"": own}, cpu="cpu")
    cg = cgroups.SandboxCgroup.create(
        host, CgroupLimits(memory_bytes=2**20, max_pids=5, cpus=(0, 1))
    )
    assert (own / "cgroup.subtree_control").read_text() == "+cpu"
    assert (cg.dirs[""] / "cpu.max").read_text() == "200000 100000"


def test_v2_destroy_kills_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "DESTROY_ROUNDS", 3)
    own = _fake_v2(tmp_path, "cpuset cpu memory pids")
    host = CgroupHost(version=2, parents={"": own}, cpu="cpuset")
    cg = cgroups.SandboxCgroup.create(host, CgroupLimits(2**20, 5, (0,)))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        cg.add(sleeper.pid)
        # A fake tree keeps its files, so the directory cannot go: reported, not raised.
        assert cg.destroy() is False
        assert sleeper.wait(timeout=30) == -9
    finally:
        sleeper.kill()
        sleeper.wait()


def test_failed_set_up_leaves_nothing(tmp_path: Path) -> None:
    own = _fake_v2(tmp_path, "cpuset cpu memory pids")
    host = CgroupHost(version=2, parents={"": own / "missing"}, cpu="cpuset")
    with pytest.raises(CgroupUnavailableError, match="cannot set up the sandbox cgroup"):
        cgroups.SandboxCgroup.create(host, CgroupLimits(2**20, 5, (0,)))
    assert list(own.glob(cgroups.SANDBOX_PREFIX + "*")) == []


# ---- the host's real hierarchies -------------------------------------------------------


@pytest.fixture
def real_host() -> CgroupHost:
    if os.geteuid() != 0:
        pytest.skip("making cgroups needs root (or a delegated cgroup)")
    try:
        return cgroups.detect()
    except CgroupUnavailableError as e:
        pytest.skip(f"no usable cgroup hierarchy on this host: {e}")


def test_real_cgroup_limits_read_back_from_the_kernel(real_host: CgroupHost) -> None:
    cpu = min(os.sched_getaffinity(0))
    cg = cgroups.SandboxCgroup.create(
        real_host, CgroupLimits(memory_bytes=96 * 2**20, max_pids=7, cpus=(cpu,))
    )
    try:
        files = {
            (1, "memory"): ("memory.limit_in_bytes", str(96 * 2**20)),
            (1, "pids"): ("pids.max", "7"),
            (1, "cpuset"): ("cpuset.cpus", str(cpu)),
            (2, ""): ("memory.max", str(96 * 2**20)),
        }
        for (version, key), (name, want) in files.items():
            if version == real_host.version and key in cg.dirs:
                assert (cg.dirs[key] / name).read_text().strip() == want
        if real_host.version == 1 and (cg.dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
            memsw = (cg.dirs["memory"] / "memory.memsw.limit_in_bytes").read_text().strip()
            assert memsw == str(96 * 2**20)  # no swap on top of the memory limit
    finally:
        assert cg.destroy() is True
    assert all(not d.exists() for d in cg.dirs.values())


FORKER = """
import os, sys, time
sys.stdin.read(1)  # wait until the test has moved this process into the cgroup
made = 0
try:
    while made < 200:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        made += 1
except OSError as e:
    print(made, e.errno, flush=True)
os._exit(0)
"""


def test_pids_max_caps_a_fork_bomb_even_for_root(real_host: CgroupHost) -> None:
    """RLIMIT_NPROC does nothing for uid 0; pids.max holds for any uid."""
    cg = cgroups.SandboxCgroup.create(real_host, CgroupLimits(256 * 2**20, 6, (0,)))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        cg.add(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go")
        proc.stdin.close()
        made, err = proc.stdout.readline().split()
        assert int(made) == 5  # itself plus five children: six
        assert int(err) == 11  # EAGAIN
        assert len(cg.pids()) >= 5  # the five sleepers (the forker may have exited)
    finally:
        assert cg.destroy() is True  # kills the five sleepers first
        proc.wait()
