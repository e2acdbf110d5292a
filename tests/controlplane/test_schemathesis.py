"""Schemathesis against the control plane's own OpenAPI document (in-process ASGI),
authenticated with an admin key: no input makes the API answer 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from sealroom.controlplane.app import create_app
from sealroom.controlplane.config import Settings

ADMIN_KEY = "srk_schemathesis-admin-key-0123456789abcdef"
# The schema is loaded at collection time (schemathesis parametrizes from it), so the app
# lives in a temporary directory removed when the module's tests end.
_DIR = Path(tempfile.mkdtemp(prefix="sealroom-st-"))
atexit.register(shutil.rmtree, _DIR, True)  # also when the module's tests are deselected
_APP = create_app(
    Settings(data_dir=_DIR, admin_key=ADMIN_KEY, tick_interval=0, print_bootstrap_key=False)
)
_state: dict[str, Any] = {}
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _registered_host() -> Iterator[None]:
    client = TestClient(_APP)
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    tok = client.post("/api/v1/hosts/join-tokens", headers=h).json()["token"]
    reg = client.post(
        "/api/v1/agent/register",
        json={
            "join_token": tok,
            "name": "st",
            "tee_kinds": ["sim"],
            "resources": {"cpu_total": 4, "memory_mb_total": 4096},
        },
    ).json()
    _state["agent"] = reg["credential"]
    yield
    _APP.state.cp.close()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_server_errors(case: Any) -> None:
    path = case.operation.path
    key = _state["agent"] if path.startswith("/api/v1/agent/") else ADMIN_KEY
    headers = dict(case.headers or {})
    if path != "/api/v1/agent/register":
        headers["Authorization"] = f"Bearer {key}"
    response = case.call(headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {path} -> {response.status_code}: {response.text[:500]}"
    )
