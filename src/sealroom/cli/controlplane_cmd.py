"""``sealroom controlplane serve``: run the control plane (mounted by cli/main.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

controlplane_app = typer.Typer(help="Run the control plane (REST API, scheduler, blob store).")


@controlplane_app.command("serve")
def serve(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="state directory")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    db: Annotated[
        str | None,
        typer.Option("--db", help="database URL (default: SEALROOM_DB_URL or SQLite in DIR)"),
    ] = None,
    agent_timeout: Annotated[
        float, typer.Option("--agent-timeout", help="seconds before a silent host is lost")
    ] = float(os.environ.get("SEALROOM_AGENT_TIMEOUT", "15")),
    quota_computations: Annotated[
        int | None,
        typer.Option(
            "--quota-computations",
            min=0,
            help="Default per-account limit: unfinished computations.",
        ),
    ] = None,
    quota_vcpus: Annotated[
        int | None,
        typer.Option("--quota-vcpus", min=0, help="Default per-account limit: vCPUs held."),
    ] = None,
    quota_memory_mb: Annotated[
        int | None,
        typer.Option("--quota-memory-mb", min=0, help="Default per-account limit: memory MiB."),
    ] = None,
) -> None:
    """Serve the control plane API on HOST:PORT (SQLite in DATA_DIR unless --db).
    Quotas (unset: unlimited) bound what one account's unfinished computations hold; an
    admin sets an account's own with PUT /api/v1/accounts/{id}/quota."""
    from sealroom.controlplane.serve import run

    run(
        data_dir,
        host,
        port,
        db,
        agent_timeout,
        quota_computations=quota_computations,
        quota_vcpus=quota_vcpus,
        quota_memory_mb=quota_memory_mb,
    )
