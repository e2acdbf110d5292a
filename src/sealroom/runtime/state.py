"""The computation's state machine: pure. Events in, next state + effects out.

    awaiting_inputs --(every slot filled)--> running --(run ended)--> completed | failed

The phases are the enclave's part of the one lifecycle (``sealroom.protocol.lifecycle``);
every phase change goes through its ``transition``.

A slot is reserved while its upload streams (so two uploads cannot race for it), filled
when the upload verified, and released if the upload was rejected. Sockets, files and
processes live around this (computation.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from sealroom.errors import ConflictError, NotFoundError
from sealroom.protocol.lifecycle import State as Phase
from sealroom.protocol.lifecycle import transition

__all__ = ["Effect", "Phase", "State", "abort", "fill", "finish", "release", "reserve"]


class Effect(enum.StrEnum):
    START_RUN = "start_run"


@dataclass(frozen=True)
class State:
    slots: tuple[str, ...]
    phase: Phase = Phase.AWAITING_INPUTS
    filled: frozenset[str] = frozenset()
    reserved: frozenset[str] = frozenset()
    reason: str = ""

    @property
    def finished(self) -> bool:
        return self.phase.final


def reserve(state: State, slot: str) -> State:
    if slot not in state.slots:
        raise NotFoundError(
            f"unknown slot {slot!r} (this computation's slots: {', '.join(state.slots)})",
            code="unknown-slot",
        )
    if state.phase is not Phase.AWAITING_INPUTS:
        raise ConflictError(
            f"slot {slot!r}: the computation is {state.phase.value}, not accepting uploads",
            code="not-accepting-uploads",
        )
    if slot in state.filled:
        raise ConflictError(f"slot {slot!r} is already filled", code="slot-filled")
    if slot in state.reserved:
        raise ConflictError(f"slot {slot!r} is being uploaded right now", code="slot-busy")
    return replace(state, reserved=state.reserved | {slot})


def release(state: State, slot: str) -> State:
    return replace(state, reserved=state.reserved - {slot})


def fill(state: State, slot: str) -> tuple[State, list[Effect]]:
    if slot not in state.reserved:
        raise RuntimeError(f"slot {slot} filled without a reservation")
    new = replace(state, reserved=state.reserved - {slot}, filled=state.filled | {slot})
    if new.filled == frozenset(new.slots):
        return replace(new, phase=transition(new.phase, Phase.RUNNING)), [Effect.START_RUN]
    return new, []


def finish(state: State, ok: bool, reason: str) -> State:
    if state.phase is not Phase.RUNNING:
        raise RuntimeError(f"run finished in phase {state.phase}")
    outcome = transition(state.phase, Phase.COMPLETED if ok else Phase.FAILED)
    return replace(state, phase=outcome, reason=reason)


def abort(state: State, reason: str) -> State:
    """The runtime stops before completion (shutdown, internal failure)."""
    if state.finished:
        return state
    return replace(
        state, phase=transition(state.phase, Phase.FAILED), reason=reason, reserved=frozenset()
    )
