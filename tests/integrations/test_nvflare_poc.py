"""The NVFlare plugin inside real NVFlare 2.9.0 in POC mode on 127.0.0.1.

One server and two clients, each with ``SealroomAuthorizer`` and ``SealroomCCManager`` in
its ``local/resources.json`` and its own sim TEE (a SimTeeService the test runs, standing in
for the host that fixes each site's MEASUREMENT). Three federations in turn:

- healthy: both clients register (the server accepts their tokens) and the periodic
  cross-site check re-verifies everyone;
- site-2 runs a wrong measurement: the server refuses it at registration, site-1 still
  registers and re-verifies, the server keeps running (no federation shutdown);
- site-2 replays its first token: accepted at registration, refused by the server's
  cross-site check as a replay.

Every process the test starts is in its own process group and killed in a ``finally``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("nvflare", reason="the nvflare extra is not installed")

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.sim.service import SimTeeService

pytestmark = pytest.mark.nvflare

SITES = ("server", "site-1", "site-2")
GOOD = hashlib.sha384(b"the agreed training runtime").digest()
BAD = hashlib.sha384(b"a modified training runtime").digest()
WAIT = 90.0


@dataclass
class Poc:
    root: Path
    prod: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]

    def verdicts(self, site: str) -> list[dict[str, Any]]:
        path = self.root / f"verdicts-{site}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log(self, site: str) -> str:
        path = self.prod / site / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""


def _nvflare() -> str:
    return str(Path(sys.executable).parent / "nvflare")


def _wait(what: str, cond: Callable[[], bool], poc: Poc) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if cond():
            return
        for name, p in poc.procs.items():
            if p.poll() is not None and name == "server":
                break
        time.sleep(1)
    logs = {s: poc.log(s)[-3000:] for s in SITES}
    raise AssertionError(
        f"timed out waiting for {what}; verdicts: "
        f"{ {s: poc.verdicts(s) for s in SITES} }; logs: {logs}"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_only(prod: Path) -> None:
    """POC kits name the server 'server:8002', which NVFlare binds on every interface; a
    loopback target makes it bind 127.0.0.1 only (and a free port avoids collisions)."""
    port = _free_port()
    for path in prod.glob("*/startup/fed_*.json"):
        doc = json.loads(path.read_text())
        for server in doc.get("servers", []):
            server["service"]["target"] = f"127.0.0.1:{port}"
            if "admin_port" in server:
                server["admin_port"] = port
        if "admin" in doc:
            doc["admin"]["host"] = "127.0.0.1"
            doc["admin"]["port"] = port
        path.write_text(json.dumps(doc, indent=2))


def _configure(poc: Poc, sock: dict[str, Path], sim_root: Path, policy: Path, replay: bool) -> None:
    _loopback_only(poc.prod)
    for site in SITES:
        kit = poc.prod / site
        res = json.loads((kit / "local" / "resources.json.default").read_text())
        authorizer = (
            "sealroom.testing.nvflare_replay.ReplayingAuthorizer"
            if replay and site == "site-2"
            else "sealroom.integrations.nvflare.SealroomAuthorizer"
        )
        manager = "sealroom.integrations.nvflare.SealroomCCManager"
        if "class_allow_list" in res:
            res["class_allow_list"] += [authorizer, manager]
        cert = kit / "startup" / ("server.crt" if site == "server" else "client.crt")
        res["components"] += [
            {
                "id": "sealroom_authorizer",
                "path": authorizer,
                "args": {
                    "federation": "example_project",
                    "policy": str(policy),
                    "tee": f"sim:{sock[site]}",
                    "certificate": str(cert),
                    "root_ca": str(kit / "startup" / "rootCA.pem"),
                    "extra_roots": [str(sim_root)],
                    "window": 60,
                    "token_lifetime": 120,
                    "verdict_log": str(poc.root / f"verdicts-{site}.jsonl"),
                },
            },
            {
                "id": "cc_manager",
                "path": manager,
                "args": {
                    "cc_issuers_conf": [
                        {"issuer_id": "sealroom_authorizer", "token_expiration": 120}
                    ],
                    "cc_verifier_ids": ["sealroom_authorizer"],
                    "verify_frequency": 5,
                    "cc_enabled_sites": list(SITES),
                    "on_failure": "exclude",
                },
            },
        ]
        (kit / "local" / "resources.json").write_text(json.dumps(res, indent=2))


def _start(poc: Poc, site: str) -> None:
    out = open(poc.root / f"{site}.out", "wb")  # noqa: SIM115  # closed with the process
    poc.procs[site] = subprocess.Popen(
        ["bash", str(poc.prod / site / "startup" / "sub_start.sh")],
        cwd=poc.prod / site,
        env=poc.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()


def _live_members(pgid: int) -> list[str]:
    """Processes of a group that are not zombies (a zombie awaits its reaper, it runs nothing)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(
                f"{stat.parent.name} {fields[0]} "
                + (stat.parent / "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")[:200]
            )
    return live


def _stop(poc: Poc) -> None:
    # NVFlare's sub_start.sh restarts its process in a loop until it finds shutdown.fl:
    # ask properly first, then end each process group (the loop and its python) for good.
    for site in poc.procs:
        (poc.prod / site / "shutdown.fl").touch()
    for p in poc.procs.values():
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in poc.procs.values():
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    # SIGKILL every group until none of its members runs (a member being forked while the
    # group is signalled can escape one round).
    deadline = time.monotonic() + 15
    while True:
        left = {p.pid: _live_members(p.pid) for p in poc.procs.values()}
        left = {k: v for k, v in left.items() if v}
        if not left:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"process groups survived SIGKILL: {left}")
        for pgid in left:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for p in poc.procs.values():
        p.wait(timeout=5)
    poc.procs.clear()


@pytest.fixture
def federation() -> Iterator[Callable[..., Poc]]:
    root = Path(tempfile.mkdtemp(prefix="srnv-", dir="/tmp"))
    authority = SimAuthority.ephemeral()
    sim_root = root / "sim-root.pem"
    sim_root.write_bytes(authority.root_pem())
    policy = root / "policy.yaml"
    policy.write_text(
        json.dumps(
            {
                "version": 1,
                "id": "nvflare-poc",
                "allow_simulated": True,
                "require": ["snp"],
                "snp": {
                    "measurements": [GOOD.hex()],
                    "report_data": {"mode": "any"},
                    "vmpl": [0],
                    "allow_debug": False,
                },
            }
        )
    )
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(root / "home"),
        "NVFLARE_POC_WORKSPACE": str(root / "ws"),
        "LANG": "C.UTF-8",
    }
    (root / "home").mkdir()
    services: list[SimTeeService] = []
    pocs: list[Poc] = []

    def start(*, bad_site: str | None = None, replay: bool = False) -> Poc:
        ws = root / "ws"
        shutil.rmtree(ws, ignore_errors=True)
        for f in root.glob("verdicts-*.jsonl"):
            f.unlink()
        subprocess.run(
            [_nvflare(), "poc", "prepare", "-n", "2", "--force"],
            env=env,
            cwd=root,
            check=True,
            capture_output=True,
            timeout=120,
        )
        prod = ws / "example_project" / "prod_00"
        sock: dict[str, Path] = {}
        for svc in services:
            svc.stop()
        services.clear()
        for n, site in enumerate(SITES):
            svc = SimTeeService(
                authority,
                measurement=BAD if site == bad_site else GOOD,
                host_data=bytes(32),
                socket_path=root / f"tee{n}.sock",
            )
            svc.start()
            services.append(svc)
            sock[site] = svc.socket_path
        poc = Poc(root, prod, env, {})
        pocs.append(poc)
        _configure(poc, sock, sim_root, policy, replay)
        _start(poc, "server")
        _wait("the server to start", lambda: "Server started" in poc.log("server"), poc)
        _start(poc, "site-1")
        _start(poc, "site-2")
        return poc

    try:
        yield start
    finally:
        try:
            for poc in pocs:
                _stop(poc)
        finally:
            for svc in services:
                svc.stop()
            shutil.rmtree(root, ignore_errors=True)


def _ok(poc: Poc, verifier: str, site: str) -> int:
    return sum(1 for v in poc.verdicts(verifier) if v["ok"] and v["site"] == site)


def _refused(poc: Poc, verifier: str, code: str, site: str) -> bool:
    return any(
        (not v["ok"]) and v["code"] == code and v["site"] == site for v in poc.verdicts(verifier)
    )


def test_healthy_federation_registers_and_reverifies(federation: Callable[..., Poc]) -> None:
    poc = federation()
    # Registration (one verdict each), then at least one periodic cross-site round.
    _wait(
        "the server to accept and re-verify both clients",
        lambda: _ok(poc, "server", "site-1") >= 2 and _ok(poc, "server", "site-2") >= 2,
        poc,
    )
    _wait(
        "site-1 to verify the server and site-2 itself",
        lambda: _ok(poc, "site-1", "server") >= 1 and _ok(poc, "site-1", "site-2") >= 1,
        poc,
    )
    assert not [v for v in poc.verdicts("server") if not v["ok"]]
    _stop(poc)


def test_client_with_bad_measurement_is_refused_alone(federation: Callable[..., Poc]) -> None:
    poc = federation(bad_site="site-2")
    _wait(
        "the server to refuse site-2's measurement",
        lambda: _refused(poc, "server", "federation-policy", "site-2"),
        poc,
    )
    _wait(
        "site-1 to register and be re-verified while site-2 is refused",
        lambda: _ok(poc, "server", "site-1") >= 2,
        poc,
    )
    assert _ok(poc, "server", "site-2") == 0
    assert poc.procs["server"].poll() is None, "one failing client took the server down"
    _stop(poc)


def _job(root: Path) -> Path:
    """A one-round numpy FedAvg job (NVFlare's own NPTrainer), deployable to any client."""
    job = root / "np-job"
    (job / "app" / "config").mkdir(parents=True)
    (job / "meta.json").write_text(
        json.dumps(
            {
                "name": "np-job",
                "resource_spec": {},
                "deploy_map": {"app": ["@ALL"]},
                "min_clients": 1,
            }
        )
    )
    server = {
        "format_version": 2,
        "workflows": [
            {
                "id": "sag",
                "path": "nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather",
                "args": {
                    "min_clients": 1,
                    "num_rounds": 1,
                    "wait_time_after_min_received": 0,
                    "aggregator_id": "aggregator",
                    "persistor_id": "persistor",
                    "shareable_generator_id": "shareable_generator",
                    "train_task_name": "train",
                    "train_timeout": 60,
                },
            }
        ],
        "components": [
            {
                "id": "persistor",
                "path": "nvflare.app_common.np.np_model_persistor.NPModelPersistor",
                "args": {},
            },
            {
                "id": "shareable_generator",
                "path": "nvflare.app_common.shareablegenerators.full_model_shareable_generator."
                "FullModelShareableGenerator",
                "args": {},
            },
            {
                "id": "aggregator",
                "path": "nvflare.app_common.aggregators.intime_accumulate_model_aggregator."
                "InTimeAccumulateWeightedAggregator",
                "args": {"expected_data_kind": "WEIGHTS"},
            },
        ],
    }
    client = {
        "format_version": 2,
        "executors": [
            {
                "tasks": ["train"],
                "executor": {"path": "nvflare.app_common.np.np_trainer.NPTrainer", "args": {}},
            }
        ],
    }
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    (job / "app" / "config" / "config_fed_client.json").write_text(json.dumps(client))
    return job


def test_replayed_token_is_refused_and_the_job_deploys_without_it(
    federation: Callable[..., Poc],
) -> None:
    poc = federation(replay=True)
    _wait(
        "the server to refuse site-2's replayed token",
        lambda: _refused(poc, "server", "federation-replay", "site-2"),
        poc,
    )
    # Its first presentation was fresh and accepted: the refusal is the replay, nothing else.
    assert _ok(poc, "server", "site-2") >= 1
    # Exclude, not shut down: a job submitted now is deployed to site-1 only.
    r = subprocess.run(
        [
            _nvflare(),
            "job",
            "submit",
            "-j",
            str(_job(poc.root)),
            "--startup-kit",
            str(poc.prod / "admin@nvidia.com"),
        ],
        env=poc.env,
        cwd=poc.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    _wait(
        "the job to be deployed to site-1",
        lambda: (
            "job not deployed to site-2" in poc.log("server")
            and any(p.is_dir() and len(p.name) == 36 for p in (poc.prod / "site-1").iterdir())
        ),
        poc,
    )
    assert not [p for p in (poc.prod / "site-2").iterdir() if p.is_dir() and len(p.name) == 36]
    assert poc.procs["server"].poll() is None
    _stop(poc)
