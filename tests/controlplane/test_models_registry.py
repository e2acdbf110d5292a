"""The model registry (docs/adr/0040): `sealroom model register|list` against a control
plane served by uvicorn on 127.0.0.1, `available_models` in the public status answer, and
the registry's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealroom.cli.main import run
from sealroom.protocol.model import pin_model
from sealroom.testing.onnx_models import mlp
from tests.controlplane.conftest import Env


def sh(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = run(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_register_list_and_status(
    live: tuple[Env, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, url = live
    assert env.client.get("/api/v1/compute/status").json()["available_models"] == []
    _, key = env.user("modeller")
    monkeypatch.setenv("SEALROOM_URL", url)
    monkeypatch.setenv("SEALROOM_API_KEY", key)
    spec = pin_model(mlp(tmp_path / "mlp.onnx"), "mlp", "2", "MIT")
    (tmp_path / "m.json").write_text(json.dumps(spec.to_json_obj()))
    rc, out, err = sh(capsys, "model", "register", str(tmp_path / "m.json"))
    assert rc == 0, err
    assert "registered mlp:2" in out and spec.sha256 in out
    rc, out, err = sh(capsys, "model", "list", "--json")
    assert rc == 0, err
    [m] = json.loads(out)
    assert (m["name"], m["model_version"], m["sha256"], m["size"]) == (
        "mlp", "2", spec.sha256, spec.size,
    )  # fmt: skip
    assert m["owner"] == "modeller" and m["licence"] == "MIT"
    assert m["spec_hash"] == spec.spec_hash.hex()
    # the public status names registered models (name:version only)
    status = env.client.get("/api/v1/compute/status").json()
    assert status["available_models"] == ["mlp:2"]
    # registering the same spec again is idempotent
    rc, out, err = sh(capsys, "model", "register", str(tmp_path / "m.json"), "--json")
    assert rc == 0, err
    assert json.loads(out)["id"] == m["id"]


def test_registry_refusals(env: Env, tmp_path: Path) -> None:
    _, key = env.user("modeller")
    h = env.h(key)
    spec = pin_model(mlp(tmp_path / "a.onnx"), "mlp")
    assert env.client.post("/api/v1/models", json=spec.to_json_obj(), headers=h).status_code == 201
    # the same name and version with other weights: a version never changes its weights
    other = pin_model(mlp(tmp_path / "b.onnx", seed=5), "mlp")
    r = env.client.post("/api/v1/models", json=other.to_json_obj(), headers=h)
    assert r.status_code == 409 and r.json()["type"] == "model-version-taken"
    bad = {**spec.to_json_obj(), "sha256": "xyz"}
    r = env.client.post("/api/v1/models", json=bad, headers=h)
    assert r.status_code == 400 and r.json()["type"] == "bad-model-spec"
    assert env.client.post("/api/v1/models", json=spec.to_json_obj()).status_code == 401
    assert env.client.get("/api/v1/models").status_code == 401
    listed = env.client.get("/api/v1/models", headers=h).json()["models"]
    assert [(m["name"], m["sha256"]) for m in listed] == [("mlp", spec.sha256)]
