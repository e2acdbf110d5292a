"""The one lifecycle (sealroom.protocol.lifecycle): the transition table, judged reports,
and that every process speaks it rather than a copy of it."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from pydantic import ValidationError

from sealroom.errors import ConflictError, InvalidInputError
from sealroom.protocol.agent import EnclaveReport, Transition
from sealroom.protocol.lifecycle import (
    ENCLAVE_STATES,
    FINAL,
    LIVE,
    STATES,
    State,
    Verdict,
    allowed,
    judge_report,
    parse_state,
    reachable,
    transition,
)
from sealroom.runtime import state as runtime_sm

SRC = Path(__file__).resolve().parents[2] / "src" / "sealroom"
S = State

HAPPY_PATH = [
    S.CREATED,
    S.SCHEDULED,
    S.LAUNCHING,
    S.AWAITING_INPUTS,
    S.RUNNING,
    S.COMPLETED,
    S.DESTROYED,
]


def test_happy_path_is_allowed_step_by_step() -> None:
    for a, b in itertools.pairwise(HAPPY_PATH):
        assert transition(a, b) is b


@pytest.mark.parametrize("live", [*LIVE, S.CREATED])
def test_every_live_state_may_fail(live: State) -> None:
    assert allowed(live, S.FAILED)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.RUNNING, S.AWAITING_INPUTS),  # backwards
        (S.SCHEDULED, S.COMPLETED),  # skips the run
        (S.AWAITING_INPUTS, S.COMPLETED),  # skips running
        (S.FAILED, S.COMPLETED),  # reopens an outcome
        (S.COMPLETED, S.FAILED),
        (S.DESTROYED, S.RUNNING),
        (S.CREATED, S.DESTROYED),
        (S.RUNNING, S.RUNNING),  # not a transition
    ],
)
def test_transition_the_lifecycle_does_not_allow_is_a_conflict(
    current: State, target: State
) -> None:
    with pytest.raises(ConflictError, match=f"{current.value} -> {target.value}") as e:
        transition(current, target)
    assert e.value.code == "invalid-transition"


def test_destroyed_is_the_end() -> None:
    assert not any(allowed(S.DESTROYED, s) for s in STATES)
    assert all(s.final for s in FINAL) and not any(s.live for s in FINAL)


def test_every_state_reaches_destroyed() -> None:
    for s in STATES:
        if s is not S.DESTROYED:
            assert reachable(s, S.DESTROYED), s


@pytest.mark.parametrize(
    ("current", "reported", "verdict"),
    [
        (S.SCHEDULED, S.LAUNCHING, Verdict.APPLY),
        (S.RUNNING, S.COMPLETED, Verdict.APPLY),
        (S.RUNNING, S.RUNNING, Verdict.PASSED),  # a repeat after a lost reply
        (S.RUNNING, S.LAUNCHING, Verdict.PASSED),  # stale: already passed
        (S.DESTROYED, S.FAILED, Verdict.PASSED),
        (S.SCHEDULED, S.COMPLETED, Verdict.REFUSED),  # skips the run
        (S.FAILED, S.COMPLETED, Verdict.REFUSED),  # cancelled, then "completed"
        (S.COMPLETED, S.FAILED, Verdict.REFUSED),
    ],
)
def test_agent_report_is_judged_by_the_lifecycle(
    current: State, reported: State, verdict: Verdict
) -> None:
    assert judge_report(current, reported) is verdict


def test_agent_cannot_report_a_control_plane_state() -> None:
    for s in (S.CREATED, S.SCHEDULED):
        with pytest.raises(ValidationError, match="an agent reports"):
            Transition(state=s)
    assert [t.state for t in EnclaveReport(computation_id="c", transitions=[]).transitions] == []
    assert set(ENCLAVE_STATES) == set(STATES) - {S.CREATED, S.SCHEDULED}


def test_state_from_the_wire_names_the_field() -> None:
    assert parse_state("running") is S.RUNNING
    with pytest.raises(InvalidInputError, match="state is 'exited', expected one of created"):
        parse_state("exited")


def test_runtime_phases_are_the_lifecycle_states() -> None:
    assert runtime_sm.Phase is State
    st = runtime_sm.State(slots=("a",))
    st = runtime_sm.reserve(st, "a")
    st, effects = runtime_sm.fill(st, "a")
    assert st.phase is S.RUNNING and effects == [runtime_sm.Effect.START_RUN]
    assert runtime_sm.finish(st, False, "boom").phase is S.FAILED


# The lifecycle exists once: no module outside protocol/ spells the list of states again.
_STATE_WORDS = {s.value for s in STATES}


def _state_literal_sets(path: Path) -> list[int]:
    """Lines with a tuple/list/set/dict literal naming 4+ lifecycle states."""
    tree = ast.parse(path.read_text())
    out: list[int] = []
    for node in ast.walk(tree):
        elts: list[ast.expr] = []
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elts = list(node.elts)
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        words = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if len(words & _STATE_WORDS) >= 4 and isinstance(node, ast.expr):
            out.append(node.lineno)
    return out


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).parts[0] != "protocol"],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_no_module_outside_protocol_defines_the_lifecycle_again(path: Path) -> None:
    assert not _state_literal_sets(path), f"{path.relative_to(SRC)} spells the lifecycle again"


def test_only_a_verified_receipt_completes_a_failed_computation() -> None:
    with pytest.raises(ConflictError):
        transition(S.FAILED, S.COMPLETED)
    assert transition(S.FAILED, S.COMPLETED, verified_receipt=True) is S.COMPLETED
    assert transition(S.AWAITING_INPUTS, S.COMPLETED, verified_receipt=True) is S.COMPLETED
    # a host's report never takes that edge
    assert judge_report(S.FAILED, S.COMPLETED) is Verdict.REFUSED
    with pytest.raises(ConflictError):  # nor does a receipt reopen a destroyed one
        transition(S.DESTROYED, S.COMPLETED, verified_receipt=True)
