"""``sealroom controlplane serve``: run the control plane (mounted by cli/main.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sealroom.errors import InvalidInputError


def read_secret_file(path: Path, what: str) -> str:
    """The first line of ``path``: secrets come from files, never from argv."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InvalidInputError(f"{what} file {path}: cannot read ({e.strerror or e})") from e
    if not lines or not lines[0].strip():
        raise InvalidInputError(f"{what} file {path} is empty")
    return lines[0].strip()


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
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-token-file",
            help="/metrics then needs 'Authorization: Bearer <the file's token>' "
            "(or SEALROOM_METRICS_TOKEN).",
        ),
    ] = None,
    log_origin: Annotated[
        str | None,
        typer.Option(
            "--log-origin",
            help="Transparency log origin, e.g. cp.example.org/log (or SEALROOM_LOG_ORIGIN).",
        ),
    ] = None,
    log_key: Annotated[
        Path | None,
        typer.Option(
            "--log-key",
            help="Transparency log Ed25519 key file (created 0600 if absent); replicas "
            "sharing a database must share it. Default: SEALROOM_LOG_KEY or DIR/tlog-ed25519.pem.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="... and this private key (PEM, 0600).")
    ] = None,
    attestation_service: Annotated[
        str | None,
        typer.Option(
            "--attestation-service",
            help="Attestation service URL that GET /api/v1/compute/attestation names as its "
            "verification_service (or SEALROOM_ATTESTATION_SERVICE; `sealroom up` sets its own).",
        ),
    ] = None,
) -> None:
    """Serve the control plane API on HOST:PORT (SQLite in DATA_DIR unless --db).
    Quotas (unset: unlimited) bound what one account's unfinished computations hold; an
    admin sets an account's own with PUT /api/v1/accounts/{id}/quota."""
    from sealroom.controlplane.serve import run

    if (tls_cert is None) != (tls_key is None):
        raise InvalidInputError("--tls-cert and --tls-key go together")
    token = os.environ.get("SEALROOM_METRICS_TOKEN") or None
    if metrics_token_file is not None:
        token = read_secret_file(metrics_token_file, "metrics token")

    run(
        data_dir,
        host,
        port,
        db,
        agent_timeout,
        quota_computations=quota_computations,
        quota_vcpus=quota_vcpus,
        quota_memory_mb=quota_memory_mb,
        metrics_token=token,
        log_origin=log_origin,
        log_key=log_key,
        tls_cert=tls_cert,
        tls_key=tls_key,
        attestation_service=attestation_service,
    )
