"""The computation lifecycle, defined once (design.md, ADR 0015)::

    created -> scheduled -> launching -> awaiting_inputs -> running -> completed | failed
                                                                              -> destroyed

Every process speaks this one lifecycle: the enclave runtime (its phases are the
``awaiting_inputs .. completed | failed`` part), the host agent (reports each transition of
its enclaves, in order), the control plane (validates each report with ``transition`` and
records it) and the clients (wait for a final state). Whether one state may follow another
is decided here and nowhere else; ``transition`` is pure.

Besides the straight line: any live state may fail (a limit, a lost host, a cancel); a
``scheduled`` computation whose host was lost goes back to ``created`` (queued again);
``destroyed`` follows an outcome once the enclave is known to be stopped.

One more edge exists only on a verified receipt (``verified_receipt=True``, never for a
host's report): a receipt that verifies and says ok completes a computation that is
still live with an enclave, or that the control plane had failed on its own guess (host
lost after a restart, a late cancel): the enclave's signed word outranks the guess.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from sealroom.errors import ConflictError, InvalidInputError


class State(enum.StrEnum):
    CREATED = "created"
    SCHEDULED = "scheduled"
    LAUNCHING = "launching"
    AWAITING_INPUTS = "awaiting_inputs"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DESTROYED = "destroyed"

    @property
    def final(self) -> bool:
        """The run is over (its outcome is known, or its enclave is gone)."""
        return self in FINAL

    @property
    def live(self) -> bool:
        """Placed on a host and not finished: it holds that host's capacity."""
        return self in LIVE


#: Every state, in lifecycle order.
STATES: tuple[State, ...] = tuple(State)
#: Outcomes of a run.
OUTCOMES = (State.COMPLETED, State.FAILED)
FINAL = (State.COMPLETED, State.FAILED, State.DESTROYED)
LIVE = (State.SCHEDULED, State.LAUNCHING, State.AWAITING_INPUTS, State.RUNNING)
#: Holding their host's capacity: live ones, and outcomes whose enclave the host has not
#: yet confirmed stopped (that confirmation is "destroyed"): an enclave still running
#: after a cancel or a lost host is never counted as free.
HOLDING = (*LIVE, *OUTCOMES)
#: Live with an enclave started.
ENCLAVE_UP = (State.LAUNCHING, State.AWAITING_INPUTS, State.RUNNING)
#: What the enclave runtime itself goes through (its ``Phase``).
RUNTIME_PHASES = (State.AWAITING_INPUTS, State.RUNNING, State.COMPLETED, State.FAILED)
#: What a host agent may report about its enclaves.
ENCLAVE_STATES = (State.LAUNCHING, *RUNTIME_PHASES, State.DESTROYED)

_NEXT: Mapping[State, frozenset[State]] = {
    State.CREATED: frozenset({State.SCHEDULED, State.FAILED}),
    State.SCHEDULED: frozenset({State.CREATED, State.LAUNCHING, State.FAILED}),
    State.LAUNCHING: frozenset({State.AWAITING_INPUTS, State.FAILED}),
    State.AWAITING_INPUTS: frozenset({State.RUNNING, State.FAILED}),
    State.RUNNING: frozenset({State.COMPLETED, State.FAILED}),
    State.COMPLETED: frozenset({State.DESTROYED}),
    State.FAILED: frozenset({State.DESTROYED}),
    State.DESTROYED: frozenset(),
}


#: Only a verified receipt that says the run completed may take these.
_RECEIPT_EDGES = frozenset(
    (s, State.COMPLETED)
    for s in (State.LAUNCHING, State.AWAITING_INPUTS, State.RUNNING, State.FAILED)
)


def allowed_next(current: State, *, verified_receipt: bool = False) -> frozenset[State]:
    extra = {t for s, t in _RECEIPT_EDGES if s == current} if verified_receipt else set()
    return _NEXT[current] | extra


def allowed(current: State, target: State, *, verified_receipt: bool = False) -> bool:
    return target in allowed_next(current, verified_receipt=verified_receipt)


def transition(current: State, target: State, *, verified_receipt: bool = False) -> State:
    """The state after ``current`` moves to ``target``; ``ConflictError``
    (``invalid-transition``) when the lifecycle does not allow that move."""
    nxt = allowed_next(current, verified_receipt=verified_receipt)
    if target not in nxt:
        options = ", ".join(s.value for s in STATES if s in nxt) or "nothing"
        raise ConflictError(
            f"state transition {current.value} -> {target.value} is not allowed: "
            f"{current.value} may become {options}",
            code="invalid-transition",
        )
    return target


#: The reason a cancel gives a computation (it fails with it); ``status_text`` says
#: "cancelled" for it.
CANCELLED_BY = "cancelled by "


def status_text(state: State | str, outcome: State | str | None, reason: str) -> str:
    """What happened, in words a person reads (CLI, dashboard): ``completed``,
    ``failed: <reason>``, ``cancelled``, or the live state; after ``destroyed`` the outcome
    is kept and the destruction is a separate fact."""
    st = State(state)
    if st == State.DESTROYED:
        if outcome is None:
            return "destroyed"
        return f"{status_text(outcome, None, reason)} (enclave destroyed)"
    if st == State.FAILED:
        if reason.startswith(CANCELLED_BY):
            return "cancelled"
        return f"failed: {reason}" if reason else "failed"
    return st.value


def parse_state(value: object, field: str = "state") -> State:
    """A state from the wire; ``InvalidInputError`` naming the field otherwise."""
    try:
        return State(str(value))
    except ValueError:
        raise InvalidInputError(
            f"{field} is {value!r}, expected one of {', '.join(s.value for s in STATES)}",
            code="invalid-state",
        ) from None


def reachable(start: State, goal: State) -> bool:
    """``goal`` can follow ``start`` through allowed transitions (one or more)."""
    seen: set[State] = set()
    todo = list(_NEXT[start])
    while todo:
        s = todo.pop()
        if s == goal:
            return True
        if s not in seen:
            seen.add(s)
            todo.extend(_NEXT[s])
    return False


class Verdict(enum.StrEnum):
    APPLY = "apply"  # an allowed transition: record it
    PASSED = "passed"  # the computation is there already or past it: a repeat, no change
    REFUSED = "refused"  # not allowed from here (skips a state, or reopens an outcome)


def judge_report(current: State, reported: State) -> Verdict:
    """What a recorder does with a reported transition to ``reported`` while the
    computation is ``current``. Reports never move a computation backwards: one that
    names a state already passed (a repeat after a lost reply, or a stale one) changes
    nothing; one that skips a state or leaves an outcome is refused."""
    if reported == current or reachable(reported, current):
        return Verdict.PASSED
    if allowed(current, reported):
        return Verdict.APPLY
    return Verdict.REFUSED
