"""The runtime's stdout lines are one contract (sealroom.protocol.runtime_lines): what the
runtime writes, the host agent parses into the same models."""

from __future__ import annotations

import json

import pytest

from sealroom.protocol.lifecycle import State
from sealroom.protocol.runtime_lines import (
    EnclaveEventLine,
    ErrorLine,
    Listening,
    StateLine,
    Stopped,
    parse_runtime_line,
)


@pytest.mark.parametrize(
    "line",
    [
        Listening(url="https://127.0.0.1:1", manifest_hash="00", keys_digest="11"),
        StateLine(state=State.RUNNING, slots={"a": "filled"}),
        EnclaveEventLine(seq=3, type="upload_accepted", message="slot a"),
        ErrorLine(code="sandbox-unavailable", message="no bwrap"),
        Stopped(state=State.COMPLETED),
    ],
)
def test_runtime_line_round_trips_through_json(line: object) -> None:
    assert hasattr(line, "line")
    assert parse_runtime_line(json.loads(json.dumps(line.line()))) == line


@pytest.mark.parametrize(
    "raw",
    [
        {"event": "state", "state": "scheduled"},  # not a runtime phase
        {"event": "state", "state": "exited"},  # not a state at all
        {"event": "enclave_event", "seq": "x", "type": "t"},
        {"event": "output", "data": "secret"},  # no such line: output never leaves
        ["not", "an", "object"],
    ],
)
def test_line_outside_the_contract_is_ignored_by_the_host(raw: object) -> None:
    assert parse_runtime_line(raw) is None
