"""The enclave side installs without the control-plane stack (issue 14, ADR 0034): an
environment holding only sealroom's core dependencies runs a computation through the
runtime, and a control-plane command there names the extra it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from sealroom.image.deps import core_distributions, distribution_paths

SRC = Path(__file__).resolve().parents[1] / "src"
CONTROL_PLANE = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg")


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (no system site-packages, no pip) whose site-packages links only the core
    distributions of this environment, plus sealroom's sources."""
    root = tmp_path_factory.mktemp("core-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(root)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    for dist in core_distributions():
        for entry in distribution_paths(dist):
            (purelib / entry.name).symlink_to(entry)
    (purelib / "sealroom-src.pth").write_text(f"{SRC}\n")
    return root / "bin" / "python"


def _run(
    python: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_core_set_has_no_control_plane_distribution() -> None:
    names = {d.metadata["Name"].lower() for d in core_distributions()}
    # httpx is core: the runtime fetches KBS-sourced datasets with it
    assert {"cryptography", "pydantic", "wasmtime", "pyhpke", "httpx"} <= names
    assert not names & {"fastapi", "sqlalchemy", "uvicorn", "alembic", "psycopg"}


def test_core_environment_lacks_the_control_plane(core_python: Path) -> None:
    for mod in CONTROL_PLANE:
        r = _run(core_python, "-c", f"import {mod}")
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, mod


RUN_SUM = r"""
import hashlib, json, sys, time
from pathlib import Path
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.manifest import Manifest

tmp = Path(sys.argv[1]); home = tmp / "home"
algo, dp1, dp2, alice = (PartyKeys.generate(n) for n in ("algo", "dp1", "dp2", "alice"))
files = {"main.py": b"import pathlib\na = int(pathlib.Path('/inputs/a').read_text())\n"
         b"b = int(pathlib.Path('/inputs/b').read_text())\n"
         b"pathlib.Path('/results/answer.txt').write_text(str(a + b))\n",
         "a.txt": b"20", "b.txt": b"22"}
for n, b in files.items():
    (tmp / n).write_bytes(b)
h = lambda n: hashlib.sha256(files[n]).hexdigest()
doc = {"version": 1, "id": "core", "name": "core-only",
       "algorithm": {"kind": "python", "sha256": h("main.py"),
                     "provider": algo.public.to_json_obj(), "entrypoint": "main.py", "args": []},
       "datasets": [{"name": "a", "sha256": h("a.txt"), "provider": dp1.public.to_json_obj(),
                     "max_size": 1024},
                    {"name": "b", "sha256": h("b.txt"), "provider": dp2.public.to_json_obj(),
                     "max_size": 1024}],
       "consumers": [alice.public.to_json_obj()],
       "policy": {"version": 1, "allow_simulated": True, "require": ["snp"],
                  "snp": {"measurements": [runtime_measurement().hex()], "vmpl": [0]}},
       "limits": {"vcpus": 1, "memory_mb": 256, "wall_seconds": 60,
                  "max_result_bytes": 1 << 20}}
(tmp / "m.json").write_text(json.dumps(doc))
enc = launch_local(tmp / "m.json", tee="sim", home=home)
try:
    root = SimAuthority.load_or_create(home / "sim-authority").root
    c = EnclaveClient(enc.url, Manifest.load(tmp / "m.json"), extra_roots=(root,))
    c.attest()
    c.upload("algorithm", tmp / "main.py", algo)
    c.upload("a", tmp / "a.txt", dp1)
    c.upload("b", tmp / "b.txt", dp2)
    seq, done, deadline = 0, False, time.monotonic() + 300
    while not done and time.monotonic() < deadline:
        for ev in c.events(seq, wait=5):
            seq = ev.seq
            done = done or ev.type in ("completed", "failed")
    c.fetch_result(alice, tmp / "out")
finally:
    enc.stop()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {sys.argv[2:]!r})
print(json.dumps({"answer": (tmp / "out" / "answer.txt").read_text(), "loaded": heavy}))
"""


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_runtime_computes_with_only_core_dependencies(core_python: Path, tmp_path: Path) -> None:
    script = RUN_SUM.replace("{sys.argv[2:]!r}", repr(set(CONTROL_PLANE)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = _run(core_python, "-c", script, str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()[-1]
    assert '"answer": "42"' in out and '"loaded": []' in out


def test_control_plane_command_names_its_extra(core_python: Path) -> None:
    r = _run(core_python, "-m", "sealroom.cli.main", "controlplane", "serve", "--help")
    assert r.returncode == 3, r.stderr
    assert "sealroom[controlplane]" in r.stderr and "Traceback" not in r.stderr


def test_up_names_the_all_extra(core_python: Path) -> None:
    r = _run(core_python, "-m", "sealroom.cli.main", "up")
    assert r.returncode == 3 and "sealroom[all]" in r.stderr, r.stderr


def test_core_cli_commands_work_without_extras(core_python: Path) -> None:
    r = _run(core_python, "-m", "sealroom.cli.main", "--help")
    assert r.returncode == 0, r.stderr
    assert "sealroom[controlplane]" in r.stdout  # the listing says what is missing
    for group in ("keys", "manifest", "enclave", "sim"):
        r = _run(core_python, "-m", "sealroom.cli.main", group, "--help")
        assert r.returncode == 0, (group, r.stderr)


def test_full_environment_lists_no_missing_extra() -> None:
    from typer.testing import CliRunner

    from sealroom.cli.main import app

    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0 and "needs: pip install" not in r.stdout


def test_models_modules_name_the_models_extra() -> None:
    from sealroom.extras import missing_extra

    for mod in ("onnxruntime", "numpy.linalg", "onnx"):
        err = missing_extra(ModuleNotFoundError("x", name=mod))
        assert err is not None and err.extra == "models", mod


def test_missing_module_of_no_extra_stays_a_bug() -> None:
    from sealroom.extras import missing_extra

    assert missing_extra(ModuleNotFoundError("x", name="no_such_thing")) is None
    err = missing_extra(ModuleNotFoundError("x", name="sqlalchemy.orm"))
    assert err is not None and err.extra == "controlplane" and err.exit_code == 3


def test_in_process_interpreter_is_not_the_core_one(core_python: Path) -> None:
    # guards the fixture itself: the core venv must not be this (full) environment
    assert Path(sys.prefix) != core_python.parents[1]


def test_groups_added_since_the_split_load_in_core_and_name_their_extras(
    core_python: Path, tmp_path: Path
) -> None:
    """The rebase onto main's new groups (kms, data, service, federation, model, log,
    account): they load without extras (httpx is core); the KMS's PKCS#11 path names
    [hsm] instead of a traceback; the control plane still names [controlplane]."""
    env = {**os.environ, "SEALROOM_HOME": str(tmp_path / "home")}
    for k in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(k, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(core_python, "-m", "sealroom.cli.main", *args, env=env)

    groups = ("kms", "data", "service", "federation", "model", "log", "account", "attest", "kbs")
    for group in groups:
        r = cli(group, "--help")
        assert r.returncode == 0 and "needs: pip install" not in r.stdout, (group, r.stderr)
    r = cli("controlplane", "--help")
    assert r.returncode == 3 and "sealroom[controlplane]" in r.stderr, r.stderr
    # the key broker's group loads (its client side is core); serving it needs the web stack
    r = cli("kbs", "serve", "--data-dir", str(tmp_path / "kbs"), "--listen", "127.0.0.1:0")
    assert r.returncode == 3 and "sealroom[controlplane]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    pin = tmp_path / "pin"
    pin.write_text("1234")
    pin.chmod(0o600)
    r = cli("kms", "init", "--data-dir", str(tmp_path / "hsm-kms"),
            "--pkcs11-module", "/nonexistent/libsofthsm2.so", "--pkcs11-token", "t",
            "--pkcs11-pin-file", str(pin))  # fmt: skip
    assert r.returncode == 3 and "sealroom[hsm]" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "hsm-kms" / "kms.json").exists()
    r = cli("kms", "init", "--data-dir", str(tmp_path / "kms"))
    assert r.returncode == 0 and "(file)" in r.stdout, r.stderr
