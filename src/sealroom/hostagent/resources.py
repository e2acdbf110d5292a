"""What this machine offers to enclaves: real CPU count, memory, disk, GPUs, minus a
configurable reserve for the host itself. "Used" is the sum of the limits of the
enclaves the agent runs (the control plane takes the larger of that and its own count).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reserve:
    cpus: int = 0
    memory_mb: int = 0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemTotal in MiB (0 when unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def gpu_count(nvidia_smi: str = "nvidia-smi") -> int:
    """GPUs as nvidia-smi lists them; 0 when the tool is absent or fails."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return 0
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, the tool found on PATH
            [exe, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.strip())


def machine_resources(
    data_dir: Path,
    reserve: Reserve,
    running: Iterable[tuple[int, int]] = (),
    gpus: int | None = None,
) -> dict[str, int]:
    """The resources block of a heartbeat (contract: cpu/memory/gpu/disk total and used).
    ``running``: (vcpus, memory_mb) limits of each live enclave."""
    disk = shutil.disk_usage(data_dir)
    used = list(running)
    return {
        "cpu_total": max(0, cpu_count() - reserve.cpus),
        "cpu_used": sum(v for v, _ in used),
        "memory_mb_total": max(0, memory_mb() - reserve.memory_mb),
        "memory_mb_used": sum(m for _, m in used),
        "gpu_total": gpu_count() if gpus is None else gpus,
        "gpu_used": 0,
        "disk_mb_total": disk.total // 2**20,
        "disk_mb_used": disk.used // 2**20,
    }
