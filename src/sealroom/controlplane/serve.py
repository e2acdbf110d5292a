"""Run the control plane with uvicorn (``sealroom controlplane serve``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import uvicorn

from sealroom.controlplane.app import create_app
from sealroom.controlplane.config import Settings
from sealroom.controlplane.logs import configure_logging


def run(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    db_url: str | None = None,
    agent_timeout: float = 15.0,
    *,
    quota_computations: int | None = None,
    quota_vcpus: int | None = None,
    quota_memory_mb: int | None = None,
    metrics_token: str | None = None,
    log_origin: str | None = None,
    log_key: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    attestation_service: str | None = None,
) -> None:
    configure_logging()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=Path(data_dir),
        db_url=db_url,
        agent_timeout=agent_timeout,
        quota_computations=quota_computations,
        quota_vcpus=quota_vcpus,
        quota_memory_mb=quota_memory_mb,
        metrics_token=metrics_token,
        log_key=log_key,
    )
    if log_origin is not None:
        settings = replace(settings, log_origin=log_origin)
    if attestation_service is not None:
        settings = replace(settings, attestation_service=attestation_service)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
