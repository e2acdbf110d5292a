"""What an enclave start imports (issue 16): the runtime process is started per
computation, so every module it imports without needing it is start-up time. A
computation without a KBS-sourced dataset needs no HTTP client, and the runtime never
parses YAML (manifests are JSON; policies arrive inside them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sealroom.attestation.policy import Policy
from sealroom.errors import InvalidInputError
from sealroom.protocol.service import load_spec

NOT_AT_START = ("httpx", "rich", "yaml", "sealroom.kbs.client", "sealroom.runtime.kbs_source")

PROBE = """
import json, sys
import sealroom.runtime.__main__
import sealroom.runtime.computation_main
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_import() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return set(json.loads(out))


def test_runtime_start_does_not_import_the_kbs_client_or_yaml() -> None:
    """Defect: every enclave start imported the KBS client (httpx, and through it rich)
    and yaml: ~0.12 s of the runtime's ~0.38 s import CPU (docs/bench.md)."""
    loaded = _modules_after_import()
    assert "sealroom.runtime.computation" in loaded  # the probe imported the runtime
    assert sorted(m for m in NOT_AT_START if m in loaded) == []


def test_policy_and_service_spec_still_parse_yaml(tmp_path: Path) -> None:
    """The imports moved into the functions that parse YAML still work there."""
    p = Policy.loads("version: 1\nallow_simulated: true\nrequire: [snp]\nsnp: {vmpl: [0]}\n")
    assert p.allow_simulated is True
    bad = tmp_path / "spec.yaml"
    bad.write_text("files: [unclosed\n")
    with pytest.raises(InvalidInputError, match="does not parse"):
        load_spec(bad)
