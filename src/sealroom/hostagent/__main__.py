"""``python -m sealroom.hostagent run --control-plane URL --join-token-file F --data-dir DIR``:
the host agent without the CLI (same options as ``sealroom agent run``; the join token
comes from a file or $SEALROOM_JOIN_TOKEN, never from argv)."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from sealroom.errors import SealroomError
from sealroom.hostagent.agent import AgentConfig, join_token_from, serve
from sealroom.hostagent.backends.process import ORPHAN_TIMEOUT, Timeouts
from sealroom.hostagent.resources import Reserve


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sealroom-agent")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the host agent in the foreground")
    run.add_argument("--control-plane", required=True)
    run.add_argument("--join-token-file", type=Path, default=None)
    run.add_argument("--data-dir", required=True, type=Path)
    run.add_argument("--name", default=None)
    run.add_argument("--reserve-cpus", type=int, default=0)
    run.add_argument("--reserve-memory-mb", type=int, default=0)
    run.add_argument("--heartbeat", type=float, default=5.0)
    run.add_argument("--input-timeout", type=float, default=Timeouts.inputs)
    run.add_argument("--run-grace", type=float, default=Timeouts.run_grace)
    run.add_argument("--backoff-max", type=float, default=30.0)
    run.add_argument("--sim-authority", type=Path, default=None)
    run.add_argument("--orphan-timeout", type=float, default=ORPHAN_TIMEOUT)
    return ap


def config_from(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        control_plane=args.control_plane,
        data_dir=args.data_dir,
        name=args.name or socket.gethostname(),
        join_token=join_token_from(args.join_token_file),
        reserve=Reserve(cpus=args.reserve_cpus, memory_mb=args.reserve_memory_mb),
        heartbeat=args.heartbeat,
        timeouts=Timeouts(inputs=args.input_timeout, run_grace=args.run_grace),
        backoff_max=args.backoff_max,
        sim_authority=args.sim_authority,
        orphan_timeout=args.orphan_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return serve(config_from(args))
    except SealroomError as e:
        print(f"sealroom agent: {e.message}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
