"""The transport-neutral core: one party's view of its peers. Events in, decisions out.

Pure: no clock, no randomness, no I/O. Time arrives in events; the re-verification jitter
is a number in [0, 1) the adapter draws and passes in. Adapters (the in-process demo, the
NVFlare plugin) turn transport happenings into events and carry out the decisions.

Failure handling is a policy, never a shutdown of the federation:

- ``exclude`` (default): the failing site is excluded; the job goes on with the others
  while they meet its minimum, and waits (``JobBlocked``) when they do not;
- ``pause``: the job pauses until every participant verifies again;
- ``stop``: the job (only the job) stops.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from sealroom.federation.errors import BelowMinimumError


class FailurePolicy(enum.StrEnum):
    EXCLUDE = "exclude"
    PAUSE = "pause"
    STOP = "stop"


class SiteStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    EXCLUDED = "excluded"


class JobState(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


# ---- events -------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerVerified:
    site: str
    at: int
    expires_at: int
    jitter: float = 0.0


@dataclass(frozen=True)
class PeerRefused:
    site: str
    at: int
    code: str
    reason: str


@dataclass(frozen=True)
class Tick:
    now: int


@dataclass(frozen=True)
class DeployRequested:
    """The job is to start with these participants (a deploy map)."""

    participants: tuple[str, ...]


Event = PeerVerified | PeerRefused | Tick | DeployRequested


# ---- decisions ----------------------------------------------------------------------
@dataclass(frozen=True)
class Admit:
    site: str


@dataclass(frozen=True)
class Exclude:
    site: str
    code: str
    reason: str


@dataclass(frozen=True)
class Reverify:
    site: str
    due: int


@dataclass(frozen=True)
class JobReady:
    participants: tuple[str, ...]


@dataclass(frozen=True)
class JobBlocked:
    accepted: tuple[str, ...]
    minimum: int
    reason: str

    def error(self) -> BelowMinimumError:
        """The typed refusal, for adapters that must raise (e.g. a deploy request)."""
        return BelowMinimumError(self.reason)


@dataclass(frozen=True)
class PauseJob:
    reason: str


@dataclass(frozen=True)
class ResumeJob:
    participants: tuple[str, ...]


@dataclass(frozen=True)
class StopJob:
    reason: str


Decision = Admit | Exclude | Reverify | JobReady | JobBlocked | PauseJob | ResumeJob | StopJob


@dataclass
class _Site:
    status: SiteStatus = SiteStatus.PENDING
    expires_at: int = 0
    due: int | None = None
    refusal: str | None = None


@dataclass
class FederationCore:
    """One verifier's view of a federation: the sites it must verify, a job's minimum."""

    sites: Iterable[str]
    min_participants: int
    interval: int = 600
    on_failure: FailurePolicy = FailurePolicy.EXCLUDE
    #: Re-verify early by up to this fraction of ``interval`` (times the event's jitter), so
    #: sites that joined together do not all re-verify at once.
    jitter_fraction: float = 0.2
    job: JobState = JobState.WAITING
    _sites: dict[str, _Site] = field(default_factory=dict, init=False)
    _participants: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if self.min_participants < 1:
            raise ValueError("min_participants must be at least 1")
        if self.interval <= 0 or not 0 <= self.jitter_fraction < 1:
            raise ValueError("interval must be positive and jitter_fraction in [0, 1)")
        self._sites = {s: _Site() for s in self.sites}

    # ---- views ----------------------------------------------------------------------
    def status(self, site: str) -> SiteStatus:
        return self._sites[site].status

    def refusal(self, site: str) -> str | None:
        return self._sites[site].refusal

    def accepted(self) -> tuple[str, ...]:
        return tuple(sorted(s for s, v in self._sites.items() if v.status is SiteStatus.ACCEPTED))

    def participants(self) -> tuple[str, ...]:
        return self._participants

    # ---- transitions ----------------------------------------------------------------
    def handle(self, event: Event) -> list[Decision]:
        if isinstance(event, PeerVerified):
            return self._verified(event)
        if isinstance(event, PeerRefused):
            return self._refused(event.site, event.code, event.reason)
        if isinstance(event, Tick):
            return self._tick(event.now)
        return self._deploy(event.participants)

    def _site(self, name: str) -> _Site:
        site = self._sites.get(name)
        if site is None:
            # A site nobody listed is not a participant; it is never admitted by arriving.
            raise KeyError(f"site {name!r} is not a member of this federation")
        return site

    def _verified(self, e: PeerVerified) -> list[Decision]:
        if not 0 <= e.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        site = self._site(e.site)
        was = site.status
        site.status = SiteStatus.ACCEPTED
        site.refusal = None
        site.expires_at = e.expires_at
        early = int(self.interval * self.jitter_fraction * e.jitter)
        # Re-verify before the token expires, whatever the interval says.
        site.due = min(e.at + self.interval - early, e.expires_at)
        out: list[Decision] = []
        if was is not SiteStatus.ACCEPTED:
            out.append(Admit(e.site))
        out.append(Reverify(e.site, site.due))
        if self.job is JobState.PAUSED and all(
            self._sites[p].status is SiteStatus.ACCEPTED for p in self._participants
        ):
            self.job = JobState.RUNNING
            out.append(ResumeJob(self._participants))
        return out

    def _refused(self, name: str, code: str, reason: str) -> list[Decision]:
        site = self._site(name)
        site.status = SiteStatus.EXCLUDED
        site.refusal = f"{code}: {reason}"
        site.due = None
        out: list[Decision] = [Exclude(name, code, reason)]
        if name not in self._participants or self.job in (JobState.WAITING, JobState.STOPPED):
            return out
        if self.on_failure is FailurePolicy.STOP:
            self.job = JobState.STOPPED
            out.append(StopJob(f"participant {name} refused ({code})"))
        elif self.on_failure is FailurePolicy.PAUSE:
            if self.job is JobState.RUNNING:
                self.job = JobState.PAUSED
                out.append(PauseJob(f"participant {name} refused ({code})"))
        else:
            self._participants = tuple(p for p in self._participants if p != name)
            if len(self._participants) < self.min_participants and self.job is JobState.RUNNING:
                self.job = JobState.PAUSED
                out.append(
                    JobBlocked(
                        self._participants,
                        self.min_participants,
                        f"{len(self._participants)} accepted participants, the job needs "
                        f"{self.min_participants}",
                    )
                )
        return out

    def _tick(self, now: int) -> list[Decision]:
        out: list[Decision] = []
        for name in sorted(self._sites):
            site = self._sites[name]
            if site.status is not SiteStatus.ACCEPTED:
                continue
            if now >= site.expires_at:
                out.extend(
                    self._refused(
                        name,
                        "federation-token-expired",
                        f"no fresh token since the last one expired at {site.expires_at}",
                    )
                )
            elif site.due is not None and now >= site.due:
                out.append(Reverify(name, now))
        return out

    def _deploy(self, requested: tuple[str, ...]) -> list[Decision]:
        for p in requested:
            self._site(p)
        ok = tuple(sorted(p for p in requested if self._sites[p].status is SiteStatus.ACCEPTED))
        if len(ok) < self.min_participants:
            return [
                JobBlocked(
                    ok,
                    self.min_participants,
                    f"{len(ok)} of {len(requested)} participants accepted, the job needs "
                    f"{self.min_participants}",
                )
            ]
        self._participants = ok
        self.job = JobState.RUNNING
        return [JobReady(ok)]
