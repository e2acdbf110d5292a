"""`sealroom up` keeps its port across `down` and `up` (issue 15): the URL the CLI saved,
and the one agents reconnect to, stay right."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sealroom.cli import stack as stack_mod


def test_up_keeps_its_port_across_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path / "home"))
    d = tmp_path / "stack"
    first = stack_mod.up(d, agents=0)
    try:
        assert stack_mod.down(d)
        second = stack_mod.up(d, agents=0)
        assert second.url == first.url
    finally:
        stack_mod.down(d)
    # taken by someone else meanwhile: a free port instead, not a failure
    port = int(first.url.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        third = stack_mod.up(d, agents=0)
        try:
            assert third.url != first.url
        finally:
            stack_mod.down(d)
