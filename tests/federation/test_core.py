"""The pure core: failure policies, re-verification with jitter, minimum participants."""

from __future__ import annotations

import pytest

from sealroom.federation.core import (
    Admit,
    DeployRequested,
    Exclude,
    FailurePolicy,
    FederationCore,
    JobBlocked,
    JobReady,
    JobState,
    PauseJob,
    PeerRefused,
    PeerVerified,
    ResumeJob,
    Reverify,
    SiteStatus,
    StopJob,
    Tick,
)
from sealroom.federation.errors import BelowMinimumError


def _running(policy: FailurePolicy = FailurePolicy.EXCLUDE, minimum: int = 2) -> FederationCore:
    core = FederationCore(["a", "b", "c"], min_participants=minimum, on_failure=policy)
    for s in ("a", "b", "c"):
        core.handle(PeerVerified(s, 0, 1000))
    assert core.handle(DeployRequested(("a", "b", "c"))) == [JobReady(("a", "b", "c"))]
    return core


def _job(core: FederationCore) -> JobState:
    return core.job


def test_verified_site_is_admitted_and_scheduled() -> None:
    core = FederationCore(["a"], min_participants=1, interval=100)
    assert core.handle(PeerVerified("a", 10, 1000)) == [Admit("a"), Reverify("a", 110)]


def test_reverification_jitter_is_early_never_late() -> None:
    core = FederationCore(["a"], min_participants=1, interval=100, jitter_fraction=0.2)
    assert core.handle(PeerVerified("a", 0, 1000, jitter=0.5))[-1] == Reverify("a", 90)


def test_reverification_before_the_token_expires() -> None:
    core = FederationCore(["a"], min_participants=1, interval=600)
    assert core.handle(PeerVerified("a", 0, 120))[-1] == Reverify("a", 120)


def test_failing_site_is_excluded_and_the_job_goes_on() -> None:
    core = _running()
    out = core.handle(PeerRefused("c", 5, "federation-policy", "bad measurement"))
    assert out == [Exclude("c", "federation-policy", "bad measurement")]
    assert core.job is JobState.RUNNING and core.participants() == ("a", "b")
    assert core.status("c") is SiteStatus.EXCLUDED


def test_below_minimum_participants_blocks_the_job() -> None:
    core = _running(minimum=3)
    out = core.handle(PeerRefused("c", 5, "federation-replay", "replayed"))
    blocked = [d for d in out if isinstance(d, JobBlocked)]
    assert blocked and core.job is JobState.PAUSED
    assert isinstance(blocked[0].error(), BelowMinimumError)


def test_deploy_below_minimum_participants() -> None:
    core = FederationCore(["a", "b", "c"], min_participants=2)
    core.handle(PeerVerified("a", 0, 1000))
    core.handle(PeerRefused("b", 0, "federation-policy", "bad measurement"))
    (out,) = core.handle(DeployRequested(("a", "b", "c")))
    assert isinstance(out, JobBlocked) and out.accepted == ("a",)
    assert core.job is JobState.WAITING


def test_pause_policy_pauses_then_resumes() -> None:
    core = _running(FailurePolicy.PAUSE)
    out = core.handle(PeerRefused("b", 5, "federation-token-expired", "expired"))
    assert isinstance(out[-1], PauseJob) and _job(core) is JobState.PAUSED
    out = core.handle(PeerVerified("b", 6, 1000))
    assert out[-1] == ResumeJob(("a", "b", "c")) and _job(core) is JobState.RUNNING


def test_stop_policy_stops_the_job_only() -> None:
    core = _running(FailurePolicy.STOP)
    out = core.handle(PeerRefused("b", 5, "federation-policy", "bad"))
    assert isinstance(out[-1], StopJob) and core.job is JobState.STOPPED
    # the other sites are still members in good standing
    assert core.status("a") is SiteStatus.ACCEPTED


def test_tick_excludes_a_site_whose_token_expired() -> None:
    core = _running()
    core.handle(PeerVerified("a", 500, 2000))
    core.handle(PeerVerified("b", 500, 2000))
    out = core.handle(Tick(1000))
    assert [d for d in out if isinstance(d, Exclude)] == [
        Exclude("c", "federation-token-expired", out[0].reason)  # type: ignore[union-attr]
    ]


def test_tick_asks_for_due_reverification() -> None:
    core = FederationCore(["a"], min_participants=1, interval=100)
    core.handle(PeerVerified("a", 0, 1000))
    assert core.handle(Tick(50)) == []
    assert core.handle(Tick(100)) == [Reverify("a", 100)]


def test_unknown_site_is_never_admitted() -> None:
    core = FederationCore(["a"], min_participants=1)
    with pytest.raises(KeyError):
        core.handle(PeerVerified("mallory", 0, 1000))
