"""``sealroom agent run``: the host agent in the foreground (see sealroom/hostagent/agent.py).

Registers once with a one-time join token (``sealroom host join-token`` / the control
plane's ``POST /api/v1/hosts/join-tokens``) read from ``--join-token-file`` or
$SEALROOM_JOIN_TOKEN, never from argv; keeps its credential in DATA_DIR/agent.json (0600)
and reuses it on restart. Enclaves it launched keep running when the agent process alone
dies (a restarted agent re-adopts them); signalling its process group (Ctrl-C) ends them.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from sealroom.errors import InvalidInputError
from sealroom.hostagent.agent import AgentConfig, join_token_from, serve
from sealroom.hostagent.backends.process import ORPHAN_TIMEOUT, RelayAddress, Timeouts
from sealroom.hostagent.resources import Reserve

agent_app = typer.Typer(help="The host agent: launches enclaves for the control plane.")


@agent_app.command("run")
def run_cmd(
    control_plane: Annotated[
        str, typer.Option("--control-plane", help="Control plane URL, e.g. http://127.0.0.1:8000")
    ],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Agent state and enclaves.")],
    join_token_file: Annotated[
        Path | None,
        typer.Option(
            "--join-token-file",
            help="File holding the one-time join token (first start only; or set "
            "SEALROOM_JOIN_TOKEN). Never on the command line: `ps` shows argv to everyone.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Host name to register.")] = None,
    reserve_cpus: Annotated[
        int, typer.Option("--reserve-cpus", help="CPUs kept for the host itself.")
    ] = 0,
    reserve_memory_mb: Annotated[
        int, typer.Option("--reserve-memory-mb", help="Memory (MiB) kept for the host.")
    ] = 0,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between rounds.")] = 5.0,
    input_timeout: Annotated[
        float, typer.Option("--input-timeout", help="Destroy enclaves awaiting inputs longer.")
    ] = Timeouts.inputs,
    run_grace: Annotated[
        float, typer.Option("--run-grace", help="Seconds past limits.wall_seconds before TTL.")
    ] = Timeouts.run_grace,
    sim_authority: Annotated[
        Path | None,
        typer.Option(
            "--sim-authority", help="Sim authority dir (default $SEALROOM_HOME/sim-authority)."
        ),
    ] = None,
    orphan_timeout: Annotated[
        float,
        typer.Option("--orphan-timeout", help="Stop enclaves whose agent is gone this long."),
    ] = ORPHAN_TIMEOUT,
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            help="Address enclaves' endpoints listen on (default 127.0.0.1: this machine "
            "only); e.g. 0.0.0.0 or one interface's address for parties elsewhere.",
        ),
    ] = "127.0.0.1",
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="Address or name parties are given for enclaves (default: --listen; "
            "required with a wildcard --listen).",
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            help="The control plane's certificate (or CA) to trust for an https URL "
            "(default: the system's store, or SEALROOM_CA_CERT).",
        ),
    ] = None,
) -> None:
    """Run the host agent until SIGTERM/Ctrl-C."""
    if listen in ("0.0.0.0", "::") and not advertise:  # noqa: S104 - checking, not binding
        raise InvalidInputError(
            f"--listen {listen} listens on every interface: say with --advertise which "
            "address parties should use"
        )
    logging.getLogger("sealroom.hostagent").setLevel(logging.INFO)
    config = AgentConfig(
        control_plane=control_plane,
        data_dir=data_dir,
        name=name or socket.gethostname(),
        join_token=join_token_from(join_token_file),
        reserve=Reserve(cpus=reserve_cpus, memory_mb=reserve_memory_mb),
        heartbeat=heartbeat,
        timeouts=Timeouts(inputs=input_timeout, run_grace=run_grace),
        sim_authority=sim_authority,
        orphan_timeout=orphan_timeout,
        relay_address=RelayAddress(listen=listen, advertise=advertise),
        ca_cert=ca_cert,
    )
    raise typer.Exit(serve(config))
