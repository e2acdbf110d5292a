"""Confidential model execution end to end (docs/adr/0040): real ONNX models built here,
the runtime process with the sim TEE, onnxruntime in the real sandbox, the CLI as a
subprocess and the client over real TLS sockets. One check per negative test: weights of
another hash, an enclave serving another model, a request sealed to another enclave, a
tampered answer, an answer signed by another enclave, SIMULATED evidence under a policy
without allow_simulated."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealroom.attestation.policy import Policy
from sealroom.client.enclave import PinnedHTTPSConnection
from sealroom.client.model import ModelClient, verify_answer_file
from sealroom.errors import AttestationError, PolicyViolationError, UnavailableError
from sealroom.hostagent.launcher import LocalEnclave, launch_local, runtime_measurement
from sealroom.protocol.model import INFER_PATH, ModelSpec, pin_model
from sealroom.testing.onnx_models import mlp, text_classifier
from tests.cli._party import cli

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

REPO = Path(__file__).resolve().parents[2]
X = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]


@dataclass
class Served:
    home: Path
    dir: Path
    weights: Path
    spec: ModelSpec
    spec_path: Path
    enclave: LocalEnclave
    env: dict[str, str]


def _serve(d: Path, weights: Path, name: str, seed_dir: str) -> Served:
    home = d / "home"
    env = {**os.environ, "SEALROOM_HOME": str(home), "COLUMNS": "200"}
    spec = pin_model(weights, name)
    spec_path = d / f"{seed_dir}.json"
    spec_path.write_text(json.dumps(spec.to_json_obj()))
    enclave = launch_local(spec_path, tee="sim", home=home, weights=weights)
    return Served(home, d, weights, spec, spec_path, enclave, env)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    """Two enclaves serving the same MLP (one answers, the other is 'another enclave')."""
    d = tmp_path_factory.mktemp("models")
    weights = mlp(d / "mlp.onnx")
    a = _serve(d, weights, "mlp", "mlp-a")
    try:
        b = _serve(d, weights, "mlp", "mlp-b")
    except BaseException:
        a.enclave.stop()
        raise
    try:
        yield a, b
    finally:
        a.enclave.stop()
        b.enclave.stop()


def _roots(home: Path) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates((home / "sim-authority" / "ark.pem").read_bytes()))


def _policy(spec: ModelSpec, allow_simulated: bool = True) -> Policy:
    return Policy.loads(json.dumps(_policy_doc(spec, allow_simulated)))


def _client(s: Served, spec: ModelSpec | None = None) -> ModelClient:
    spec = spec or s.spec
    return ModelClient(s.enclave.url, _policy(spec), spec, extra_roots=_roots(s.home))


def _direct(weights: Path, feed: dict[str, Any]) -> list[Any]:
    """The same model run by onnxruntime in this process: what the enclave must answer."""
    sess = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    return [np.asarray(r).tolist() for r in sess.run(None, feed)]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Confidential model execution", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    return [ln.split(" #", 1)[0].strip() for ln in block.splitlines() if ln.strip()]


def test_readme_model_section(tmp_path: Path) -> None:
    """The README's commands as written, in subprocesses: pin the weights, a policy,
    serve, verify the server, infer with a sealed input, verify the answer offline."""
    weights = mlp(tmp_path / "model.onnx")
    env = {**os.environ, "SEALROOM_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    commands = _readme_commands()
    serve = next(c for c in commands if c.startswith("sealroom model serve"))
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    server: subprocess.Popen[str] | None = None
    try:
        for cmd in commands:
            if cmd == serve:
                server = subprocess.Popen(
                    [sys.executable, "-m", "sealroom.cli.main", *shlex.split(cmd)[1:], "--json"],
                    cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                )  # fmt: skip
                assert server.stdout is not None
                info = json.loads(server.stdout.readline())
                assert info["simulated"] is True
                continue
            url = info["url"] if server is not None else "URL"
            r = cli(*shlex.split(cmd.replace("URL", url))[1:], env=env, cwd=tmp_path)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
            out[shlex.split(cmd)[2]] = r
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
    spec = pin_model(weights, "mlp")
    assert spec.sha256 in out["pin"].stdout
    assert json.loads((tmp_path / "model.json").read_text()) == spec.to_json_obj()
    assert info["model_spec_hash"] == spec.spec_hash.hex()
    assert "ACCEPTED" in out["verify"].stdout and "SIMULATED" in out["verify"].stdout
    assert "SIMULATED" in out["infer"].stderr
    infer = next(c for c in commands if c.startswith("sealroom model infer"))
    x = json.loads(next(w for w in shlex.split(infer) if w.startswith("{")))["x"]
    got = json.loads(out["infer"].stdout)["outputs"]["y"]
    want = _direct(weights, {"x": np.array(x, dtype=np.float32)})[0]
    assert np.allclose(got, want, rtol=1e-6)
    assert (tmp_path / "answer.json").stat().st_mode & 0o777 == 0o600
    v = out["verify-response"].stdout
    assert "VERIFIED" in v and "SIMULATED" in v
    assert json.loads(v.strip().splitlines()[-1])["outputs"]["y"] == got


def test_text_classifier_in_the_enclave(tmp_path: Path) -> None:
    weights = text_classifier(tmp_path / "txt.onnx")
    s = _serve(tmp_path, weights, "sentiment", "txt")
    try:
        c = _client(s)
        key = X25519PrivateKey.generate()
        pos = c.infer({"tokens": ["i", "love", "this", "great", "film"]}, key)
        neg = c.infer({"tokens": ["awful", "and", "bad"]}, key)
        assert pos.response["outputs"]["label"] == [1]
        assert neg.response["outputs"]["label"] == [0]
        direct = _direct(weights, {"tokens": np.array(["awful", "and", "bad"], dtype=object)})
        assert neg.response["outputs"]["scores"] == direct[1]
        bad = c.infer({"tokens": [[1, 2]], "extra": [1]}, key)  # the worker's typed refusal
        assert "error" in bad.response
    finally:
        s.enclave.stop()


def test_weights_of_another_hash_are_refused_at_load(tmp_path: Path) -> None:
    """Tampered weights (one weight changed, same size): the enclave does not serve."""
    weights = mlp(tmp_path / "good.onnx")
    spec = pin_model(weights, "mlp")
    spec_path = tmp_path / "m.json"
    spec_path.write_text(json.dumps(spec.to_json_obj()))
    tampered = mlp(tmp_path / "tampered.onnx", seed=2)
    assert tampered.stat().st_size == weights.stat().st_size
    env = {**os.environ, "SEALROOM_HOME": str(tmp_path / "home")}
    r = cli(
        "model", "serve", "--model", str(spec_path), "--weights", str(tampered), "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode != 0
    assert "model-hash-mismatch" in r.stderr or "not model mlp" in r.stderr, r.stderr
    assert spec.sha256 in r.stderr


def test_enclave_serving_another_model_is_refused(servers: tuple[Served, Served]) -> None:
    a, _ = servers
    other = pin_model(mlp(a.dir / "other.onnx", seed=3), "mlp")
    c = _client(a, other)
    with pytest.raises(AttestationError) as e:
        c.attest()
    assert e.value.code == "spec-mismatch"


def test_request_sealed_to_another_enclave_is_refused(servers: tuple[Served, Served]) -> None:
    a, b = servers
    cb = _client(b)
    _, sealed_for_b = cb.seal_request({"x": X}, X25519PrivateKey.generate())
    ca = _client(a)
    ca.attest()
    with pytest.raises(AttestationError) as e:
        ca.post_sealed(sealed_for_b)
    assert e.value.code == "request-not-for-this-enclave"


def _answer(s: Served) -> bytes:
    c = _client(s)
    try:
        return c.infer({"x": X}, X25519PrivateKey.generate()).bundle_bytes()
    finally:
        c.close()


def test_tampered_answer_fails_offline_verification(servers: tuple[Served, Served]) -> None:
    a, _ = servers
    raw = _answer(a)
    verified = verify_answer_file(raw, _policy(a.spec), a.spec, extra_roots=_roots(a.home))
    assert "y" in verified.response["outputs"]
    doc = json.loads(raw)
    response = json.loads(base64.b64decode(doc["response_b64"]))
    response["outputs"]["y"][0][0] += 1.0
    doc["response_b64"] = base64.b64encode(json.dumps(response).encode()).decode()
    with pytest.raises(AttestationError) as e:
        verify_answer_file(
            json.dumps(doc).encode(), _policy(a.spec), a.spec, extra_roots=_roots(a.home)
        )
    assert e.value.code == "answer-mismatch"
    doc = json.loads(raw)
    doc["statement"]["payload"]["response_sha256"] = "00" * 32
    with pytest.raises(AttestationError) as e:
        verify_answer_file(
            json.dumps(doc).encode(), _policy(a.spec), a.spec, extra_roots=_roots(a.home)
        )
    assert e.value.code == "signature-invalid"


def test_answer_signed_by_another_enclave_is_refused(
    servers: tuple[Served, Served], tmp_path: Path
) -> None:
    """B's genuine signed answer presented with A's evidence: the signature is not A's."""
    a, b = servers
    doc = json.loads(_answer(a))
    from_b = json.loads(_answer(b))
    doc["statement"] = from_b["statement"]
    doc["request_b64"], doc["response_b64"] = from_b["request_b64"], from_b["response_b64"]
    (tmp_path / "mixed.json").write_text(json.dumps(doc))
    (tmp_path / "p.json").write_text(json.dumps(_policy_doc(a.spec)))
    r = cli(
        "model", "verify-response", "mixed.json", "--policy", "p.json", "--model",
        str(a.spec_path), env=a.env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "signature" in r.stderr


def _policy_doc(spec: ModelSpec, allow_simulated: bool = True) -> dict[str, Any]:
    return {
        "version": 1,
        "allow_simulated": allow_simulated,
        "require": ["snp"],
        "snp": {
            "measurements": [runtime_measurement().hex()],
            "report_data": {"mode": "sealroom-v1"},
            "host_data": spec.spec_hash.hex(),
        },
    }


def test_sim_evidence_refused_without_allow_simulated(
    servers: tuple[Served, Served], tmp_path: Path
) -> None:
    a, _ = servers
    (tmp_path / "answer.json").write_bytes(_answer(a))
    (tmp_path / "strict.json").write_text(json.dumps(_policy_doc(a.spec, allow_simulated=False)))
    common = ["--policy", "strict.json", "--model", str(a.spec_path)]
    r = cli("model", "verify-response", "answer.json", *common, env=a.env, cwd=tmp_path)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "VERIFIED" not in r.stdout
    c = ModelClient(a.enclave.url, _policy(a.spec, False), a.spec, extra_roots=_roots(a.home))
    with pytest.raises(PolicyViolationError):
        c.attest()
    with pytest.raises(PolicyViolationError):  # no request is sent to an unaccepted enclave
        c.infer({"x": X}, X25519PrivateKey.generate())


def test_unsealed_or_oversized_request_refused(servers: tuple[Served, Served]) -> None:
    """The inference path takes only sealed bytes with a Content-Length it accepts."""
    a, _ = servers
    host, port = a.enclave.url.removeprefix("https://").rsplit(":", 1)
    conn = PinnedHTTPSConnection(host, int(port), None, 30)
    try:
        conn.request("POST", INFER_PATH, body=json.dumps({"inputs": {"x": X}}).encode())
        resp = conn.getresponse()
        assert resp.status == 422
        assert json.loads(resp.read())["type"] == "request-not-for-this-enclave"
    finally:
        conn.close()
    conn = PinnedHTTPSConnection(host, int(port), None, 30)
    try:
        conn.putrequest("POST", INFER_PATH)
        conn.putheader("Content-Length", str(1 << 30))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
    except (http.client.HTTPException, OSError) as e:  # pragma: no cover - diagnostic
        raise UnavailableError(f"server dropped the connection: {e}") from e
    finally:
        conn.close()


def test_raw_tensors_in_and_out(servers: tuple[Served, Served]) -> None:
    """encoding b64: inputs and outputs as little-endian bytes (what JSON floats would
    cost more than the inference); same numbers as onnxruntime in-process."""
    a, _ = servers
    x = np.array(X, dtype=np.float32)
    raw = {
        "dtype": "float32",
        "shape": list(x.shape),
        "b64": base64.b64encode(x.tobytes()).decode(),
    }
    c = _client(a)
    try:
        out = c.infer({"x": raw}, X25519PrivateKey.generate(), "b64").response["outputs"]["y"]
        bad = c.infer(
            {"x": {**raw, "dtype": "object"}}, X25519PrivateKey.generate(), "b64"
        ).response
    finally:
        c.close()
    assert out["dtype"] == "float32" and out["shape"] == [2, 3]
    got = np.frombuffer(base64.b64decode(out["b64"]), dtype="<f4").reshape(out["shape"])
    assert np.array_equal(got, np.array(_direct(a.weights, {"x": x})[0], dtype=np.float32))
    assert "raw dtype must be one of" in bad["error"]
