"""Apply the host's limits to this process, then become the enclave runtime (exec).

    python -m sealroom.hostagent.limitexec [--cpus 0,1] [--data BYTES] [--as BYTES] -- ARGV...

Run by the process backend in place of the runtime, so the limits hold from the runtime's
first instruction and are inherited by everything it starts (its sandbox included): CPU
affinity (sched_setaffinity), RLIMIT_DATA and RLIMIT_AS (soft = hard: the runtime cannot
raise them). Standard library only; the pid stays the same across the exec.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sealroom-limitexec")
    ap.add_argument("--cpus", default="", help="comma-separated CPU numbers")
    ap.add_argument("--data", type=int, default=0, help="RLIMIT_DATA in bytes (0: none)")
    ap.add_argument("--as", dest="as_", type=int, default=0, help="RLIMIT_AS in bytes (0: none)")
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv
    if not cmd:
        ap.error("no command after --")
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.data:
        resource.setrlimit(resource.RLIMIT_DATA, (args.data, args.data))
    if args.as_:
        resource.setrlimit(resource.RLIMIT_AS, (args.as_, args.as_))
    os.execv(cmd[0], cmd)  # noqa: S606 - the backend's fixed argv (this interpreter)
    return 127  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
