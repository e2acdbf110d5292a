"""Enclave reports as a host agent sends them (``sealroom.protocol.agent``): the
transitions its enclave went through, in order."""

from __future__ import annotations

from typing import Any

_PATH = ("launching", "awaiting_inputs", "running")


def reached(cid: str, state: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    """The report of an enclave that entered every state up to ``state`` (as an agent
    retransmitting from the launch would send it); ``reason`` goes with the last one."""
    path = list(_PATH[: _PATH.index(state) + 1]) if state in _PATH else [*_PATH, state]
    transitions = [{"state": s, "reason": ""} for s in path]
    transitions[-1]["reason"] = reason
    return {"computation_id": cid, "transitions": transitions, **extra}


def stopped(cid: str, reason: str = "enclave runtime exited") -> dict[str, Any]:
    """The report of an agent whose enclave is gone: failed (a repeat where the
    computation had failed already), then destroyed."""
    gone = [{"state": "failed", "reason": reason}, {"state": "destroyed", "reason": "stopped"}]
    return {"computation_id": cid, "transitions": gone}
