"""Lockdown through the whole stack (issue 10, docs/adr/0027): a computation whose datasets
the enclave got from the key broker is running on a host agent; `sealroom kms lockdown`
(as a user runs it, logged in to the control plane by `sealroom up`) refuses every release
in scope, revokes the versions released in scope, rotates the KEK and destroys the old
one, and stops the computation: the agent stops the enclave, whose storage (the decrypted
datasets) is wiped. Each step is checked where a user would see it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealroom.attestation.evidence import EvidenceBundle
from sealroom.cli import stack as stack_mod
from sealroom.cli.main import app as cli_app
from sealroom.client.controlplane import ControlPlaneClient
from sealroom.hostagent.launcher import runtime_measurement
from sealroom.kbs.client import KbsClient, KbsRefused, envelope_evidence, report_data
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import filled_slots, slot_names
from tests.integration.test_stack import home, stack, wait_destroyed
from tests.runtime.test_kbs_dataset_e2e import Broker, Setup, blob_server, broker, setup

__all__ = ["blob_server", "broker", "home", "setup", "stack"]  # pytest fixtures used here


def _enclave_dir(home: Path, cid: str) -> Path:
    dirs = [d for d in (home / "stack" / "agent-1" / "enclaves").iterdir() if cid in d.name]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_lockdown_stops_enclaves_in_scope_wipes_them_and_rotates_the_kek(
    stack: stack_mod.Stack,
    home: Path,
    broker: Broker,
    setup: Callable[..., Setup],
) -> None:
    s = setup()
    doc = json.loads(s.manifest.read_text())
    manifest_hash = Manifest.from_dict(doc).manifest_hash.hex()
    broker.release_to(manifest_hash)
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    cid = cp.create_computation(doc).id
    # The enclave fills both dataset slots itself; the algorithm is not uploaded: it waits.
    deadline = time.monotonic() + 120  # a bound for a stuck stack, not a speed check
    while filled_slots(((e.type, e.message) for e in cp.events(cid)), slot_names(doc)) != {
        "a",
        "b",
    }:
        assert time.monotonic() < deadline, [(e.type, e.message) for e in cp.events(cid)]
        time.sleep(0.2)
    assert cp.computation(cid).state == "awaiting_inputs"
    storage = _enclave_dir(home, cid) / "storage"
    assert any(storage.rglob("*")), "the decrypted datasets are in enclave storage"
    kek_before = broker.km.kek_label
    assert broker.km.backend.exists(kek_before)

    lockdown = ["kms", "lockdown", "--scope", "tee=snp", "--as", "admin", "--reason", "leak"]
    r = CliRunner().invoke(cli_app, [*lockdown, "--data-dir", str(broker.kms_dir), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)

    # (1) in force: a new session of the same (simulated) SNP TEE is refused by the broker.
    authority = broker.kbs.authority

    def same_enclave(digest: bytes) -> object:
        rep = authority.report(
            measurement=runtime_measurement(),
            report_data=report_data(digest),
            host_data=bytes.fromhex(manifest_hash),
        )
        return envelope_evidence(EvidenceBundle.single(authority.evidence(rep)))

    with pytest.raises(KbsRefused) as e, KbsClient(broker.kbs.url, "snp", same_enclave) as g:
        g.get_resource("kms/ds-a/primary")
    assert "lockdown" in str(e.value)
    # (2) the versions released in scope are revoked; each key has a new primary.
    assert sorted(result["revoked"]) == ["ds-a/v1", "ds-b/v1"]
    for key_id in ("ds-a", "ds-b"):
        info = broker.km.info(key_id)
        assert [(v.version, v.state) for v in info.versions] == [(1, "revoked"), (2, "active")]
    # (3) the KEK that wrapped them is rotated and the old one destroyed; keys still unwrap.
    assert result["kek"][0] == kek_before and result["kek"][1] == broker.km.kek_label
    assert not broker.km.backend.exists(kek_before)
    assert not (broker.kms_dir / "kek" / f"{kek_before}.kek").exists()
    assert len(broker.km.material("ds-a")[1]) == 32
    # (4) the computation in scope (HOST_DATA of a release = its manifest hash) is stopped
    # through the control plane: the agent stops the enclave, its storage is wiped.
    assert result["stopped"] == [cid] and result["not_reached"] == []
    wait_destroyed(cp, cid)
    assert not storage.exists() or not any(storage.rglob("*"))
    assert [e.type for e in cp.events(cid)].count("kbs_filled") == 2
    actions = [e["event"]["action"] for e in broker.km.audit.entries()]
    assert actions[-2:] == ["lockdown-stop", "refusal"]
    stop_event = broker.km.audit.entries()[-2]["event"]
    assert stop_event["detail"]["stopped"] == [cid]
