"""``python -m sealroom.controlplane --data-dir DIR [--host H] [--port P] [--db URL]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sealroom.controlplane.serve import run


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m sealroom.controlplane")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--db", default=None)
    p.add_argument(
        "--agent-timeout", type=float, default=float(os.environ.get("SEALROOM_AGENT_TIMEOUT", 15))
    )
    p.add_argument("--quota-computations", type=int, default=None)
    p.add_argument("--quota-vcpus", type=int, default=None)
    p.add_argument("--quota-memory-mb", type=int, default=None)
    a = p.parse_args()
    run(
        a.data_dir,
        a.host,
        a.port,
        a.db,
        a.agent_timeout,
        quota_computations=a.quota_computations,
        quota_vcpus=a.quota_vcpus,
        quota_memory_mb=a.quota_memory_mb,
    )


if __name__ == "__main__":
    main()
