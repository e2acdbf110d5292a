"""Hosts: registration by one-time join token, heartbeats (resources, enclave transitions
-> computation states, desired state back), lost-host detection, forwarded enclave events
and blob uploads from the host a computation is placed on.

The agent contract (``sealroom.protocol.agent``) is the type of what comes in and goes
out; every reported transition is judged by ``sealroom.protocol.lifecycle``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from sealroom.controlplane.services.auth import (
    AgentPrincipal,
    new_id,
    new_secret,
    sha256_hex,
)
from sealroom.controlplane.services.blobs import BlobWriter, check_blob_name
from sealroom.controlplane.services.computations import (
    ComputationService,
    capacities,
    need_of,
)
from sealroom.controlplane.services.placement import HostCapacity, Resources
from sealroom.controlplane.services.receipts import ReceiptFacts, ReceiptVerifier
from sealroom.controlplane.services.tlog import TransparencyLog
from sealroom.controlplane.store.models import Blob, Computation, Event, Host, JoinToken
from sealroom.crypto.sealing import sealed_size
from sealroom.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    LengthRequiredError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthenticatedError,
)
from sealroom.manifest import Manifest
from sealroom.protocol.agent import AgentEvent, Desired, EnclaveReport
from sealroom.protocol.controlplane import AGENT_CREDENTIAL_PREFIX, FORWARDABLE_EVENTS
from sealroom.protocol.enclave import MAX_RUN_LOG_BYTES
from sealroom.protocol.lifecycle import (
    FINAL,
    HOLDING,
    LIVE,
    OUTCOMES,
    State,
    Verdict,
    judge_report,
)
from sealroom.tlog.entries import Kind, decode_entry, receipt_entry
from sealroom.tlog.merkle import leaf_hash

log = logging.getLogger("sealroom.controlplane.hosts")

REMOVED = "removed"  # a host's state after `sealroom host remove` (its row stays: history)

RESOURCE_FIELDS = (
    "cpu_total",
    "cpu_used",
    "memory_mb_total",
    "memory_mb_used",
    "gpu_total",
    "gpu_used",
    "disk_mb_total",
    "disk_mb_used",
)


def _destroyed(rep: EnclaveReport) -> bool:
    """The agent says this enclave is stopped for good."""
    return any(t.state == State.DESTROYED for t in rep.transitions)


def _default_reason(state: State) -> str:
    if state == State.FAILED:
        return "enclave reported failure"
    if state == State.DESTROYED:
        return "enclave stopped"
    return f"enclave reported {state.value}"


def tee_labels(claimed: Iterable[str] | None, verified: Iterable[str] | None) -> list[str]:
    """One label per TEE kind of a host: "(verified)" where the control plane verified
    evidence of that kind from it, "(claimed)" where the host only says so. Simulated
    evidence verifies "sim", never the kind it imitates."""
    v = set(verified or ())
    return [f"{k} (verified)" for k in sorted(v)] + [
        f"{k} (claimed)" for k in sorted(set(claimed or ()) - v)
    ]


def _apply_resources(h: Host, resources: dict[str, int]) -> None:
    for k in RESOURCE_FIELDS:
        if k in resources:
            setattr(h, k, int(resources[k]))


def _capacity_of(h: Host, allocated: Resources) -> HostCapacity:
    return HostCapacity(
        host_id=h.id,
        name=h.name,
        online=h.state == "online" and not h.draining,
        tee_kinds=frozenset(h.tee_kinds or ()),
        total=Resources(h.cpu_total, h.memory_mb_total, h.gpu_total, h.disk_mb_total),
        reported_used=Resources(h.cpu_used, h.memory_mb_used, h.gpu_used, h.disk_mb_used),
        allocated=allocated,
    )


class HostService:
    def __init__(
        self, comps: ComputationService, receipts: ReceiptVerifier, tlog: TransparencyLog
    ) -> None:
        self.comps = comps
        self.receipts = receipts
        self.tlog = tlog
        self.store = comps.store
        self.settings = comps.settings
        self.started_at = self.now()

    def now(self) -> datetime:
        return self.settings.clock()

    # -- registration ------------------------------------------------------------------

    def register(
        self, join_token: str, name: str, tee_kinds: Sequence[str], resources: dict[str, int]
    ) -> tuple[str, str]:
        now = self.now()
        with self.comps.write() as s:
            jt = s.scalar(select(JoinToken).where(JoinToken.token_hash == sha256_hex(join_token)))
            if jt is None:
                raise UnauthenticatedError("join token not recognised")
            if jt.used_at is not None:
                raise AccessDeniedError(
                    f"join token was already used (by host {jt.host_id})", code="access-denied"
                )
            if jt.expires_at <= now:
                raise AccessDeniedError(
                    f"join token expired at {jt.expires_at.isoformat()}", code="access-denied"
                )
            credential = new_secret(AGENT_CREDENTIAL_PREFIX)
            h = Host(
                id=new_id("h_"),
                name=name,
                credential_hash=sha256_hex(credential),
                state="online",
                tee_kinds=sorted(set(tee_kinds)),
                enclaves=0,
                registered_at=now,
                last_heartbeat=now,
                **{k: 0 for k in RESOURCE_FIELDS},
            )
            _apply_resources(h, resources)
            s.add(h)
            self.comps.set_host(_capacity_of(h, Resources()))
            jt.used_at = now
            jt.host_id = h.id
        log.info("host registered", extra={"host_id": h.id, "host": name})
        self.comps.schedule_queue()
        return h.id, credential

    def list_all(self) -> list[tuple[Host, dict[str, int], int]]:
        """Hosts with resources as placement sees them (used = max(reported, allocated))
        and the number of live enclaves placed there."""
        with self.store.session() as s:
            caps = {c.host_id: c for c in capacities(s)}
            counts: dict[str, int] = {}
            for hid in s.scalars(
                select(Computation.host_id).where(
                    Computation.host_id.is_not(None), Computation.state.in_(HOLDING)
                )
            ):
                if hid is not None:
                    counts[hid] = counts.get(hid, 0) + 1
            out = []
            for h in s.scalars(
                select(Host).where(Host.state != REMOVED).order_by(Host.registered_at, Host.id)
            ):
                cap = caps[h.id]
                u = cap.used
                res = {
                    "cpu_total": h.cpu_total,
                    "cpu_used": u.vcpus,
                    "memory_mb_total": h.memory_mb_total,
                    "memory_mb_used": u.memory_mb,
                    "gpu_total": h.gpu_total,
                    "gpu_used": u.gpus,
                    "disk_mb_total": h.disk_mb_total,
                    "disk_mb_used": u.disk_mb,
                }
                out.append((h, res, max(h.enclaves, counts.get(h.id, 0))))
            return out

    # -- operator: drain and remove ----------------------------------------------------

    def _find(self, s: Session, ref: str) -> Host:
        """A host by id, or by name where one registered host has it."""
        h = s.get(Host, ref)
        if h is None or h.state == REMOVED:
            named = s.scalars(select(Host).where(Host.name == ref, Host.state != REMOVED)).all()
            if len(named) > 1:
                raise ConflictError(
                    f"{len(named)} hosts are named {ref!r}; give the id (sealroom host list)",
                    code="host-name-ambiguous",
                )
            h = named[0] if named else None
        if h is None:
            raise NotFoundError(f"host {ref} not found")
        return h

    def drain(self, ref: str, draining: bool) -> Host:
        """Stop (or resume) placing computations on a host; what it runs finishes."""
        with self.comps.write() as s:
            h = self._find(s, ref)
            h.draining = draining
            old = self.comps.view().get(h.id)
            self.comps.set_host(_capacity_of(h, old.allocated if old else Resources()))
            log.info("host drain" if draining else "host resumed", extra={"host_id": h.id})
        if not draining:
            self.comps.schedule_queue()
        return h

    def remove(self, ref: str) -> Host:
        """Forget a host: its agent credential stops working at once and nothing is placed
        there again. Refused while the host is online with computations still live on it
        (drain it and let them finish, or cancel them); a lost host's finished
        computations are marked destroyed ("host removed"): nobody will say so later."""
        with self.comps.write() as s:
            h = self._find(s, ref)
            placed = s.scalars(
                select(Computation)
                .where(Computation.host_id == h.id, Computation.state.in_(HOLDING))
                .order_by(Computation.number)
            ).all()
            live = [c.id for c in placed if c.state in LIVE]
            if live and h.state == "online":
                raise ConflictError(
                    f"host {h.name} runs {len(live)} live computation(s) "
                    f"({', '.join(live[:5])}); `sealroom host drain {h.name}` and let them "
                    "finish, or cancel them, then remove it",
                    code="host-busy",
                )
            for c in placed:
                if c.state in LIVE:  # lost before the lost-host check reached it
                    self.comps.transition(s, c, State.FAILED, f"host {h.name} removed")
                self.comps.transition(s, c, State.DESTROYED, f"host {h.name} removed")
            h.state = REMOVED
            h.draining = True
            # no token hashes to this (not hex): the agent's next request is refused
            h.credential_hash = f"removed:{h.id}"
            old = self.comps.view().get(h.id)
            self.comps.set_host(_capacity_of(h, old.allocated if old else Resources()))
            log.info("host removed", extra={"host_id": h.id, "host": h.name})
        return h

    # -- heartbeat ---------------------------------------------------------------------

    def heartbeat(
        self,
        agent: AgentPrincipal,
        resources: dict[str, int],
        tee_kinds: Sequence[str] | None,
        enclaves: Iterable[EnclaveReport],
    ) -> list[Desired]:
        now = self.now()
        reports = {e.computation_id: e for e in enclaves}
        desired: list[Desired] = []
        with self.comps.write() as s:
            h = s.get(Host, agent.host_id)
            if h is None:
                raise UnauthenticatedError("host no longer registered")
            if h.state != "online":
                log.info("host back online", extra={"host_id": h.id})
            h.state = "online"
            h.last_heartbeat = now
            _apply_resources(h, resources)
            if tee_kinds is not None:
                h.tee_kinds = sorted(set(tee_kinds))
            old = self.comps.view().get(h.id)
            new = _capacity_of(h, old.allocated if old else Resources())
            if new != old:
                self.comps.set_host(new)
            reported_ids = list(reports)
            comps = (
                {
                    c.id: c
                    for c in s.scalars(select(Computation).where(Computation.id.in_(reported_ids)))
                }
                if reported_ids
                else {}
            )
            h.enclaves = sum(1 for r in reports.values() if not _destroyed(r))
            for cid, rep in reports.items():
                c = comps.get(cid)
                if c is None or c.host_id != h.id:
                    if not _destroyed(rep):
                        desired.append(
                            Desired(computation_id=cid, action="stop", tee=c.tee if c else "sim")
                        )
                    continue
                self._apply_report(s, c, rep)
                if c.state in FINAL and not _destroyed(rep):
                    desired.append(
                        Desired(computation_id=c.id, action="stop", manifest=c.manifest, tee=c.tee)
                    )

            # placed here, final, no longer running on the agent: the enclave is gone.
            for c in s.scalars(
                select(Computation).where(
                    Computation.host_id == h.id, Computation.state.in_(OUTCOMES)
                )
            ).all():
                if c.id not in reports:
                    self.comps.transition(s, c, State.DESTROYED, "enclave stopped")

            for c in s.scalars(
                select(Computation)
                .where(Computation.host_id == h.id, Computation.state.in_(LIVE))
                .order_by(Computation.number)
            ):
                desired.append(
                    Desired(computation_id=c.id, action="run", manifest=c.manifest, tee=c.tee)
                )
            freed = self.comps.changed
        if freed:
            # Only a heartbeat that changed some capacity can let a queued computation in;
            # the others leave the queue to the periodic tick (ControlPlane.tick).
            self.comps.schedule_queue()
        return desired

    def _apply_report(self, s: Session, c: Computation, rep: EnclaveReport) -> None:
        """Record the reported transitions, in order, as the lifecycle allows: a repeat
        (or a stale report) changes nothing, a refused one stops the rest of this
        report (what follows it cannot be in order)."""
        if rep.stats and rep.stats != c.stats:
            c.stats = dict(rep.stats)
        if rep.endpoint and rep.endpoint != c.enclave_url and not State(c.state).final:
            c.enclave_url = rep.endpoint
            c.updated_at = self.now()
        for t in rep.transitions:
            current = State(c.state)
            verdict = judge_report(current, t.state)
            if verdict is Verdict.PASSED:
                continue
            if verdict is Verdict.REFUSED:
                log.warning(
                    "reported transition refused",
                    extra={
                        "computation_id": c.id,
                        "state": current.value,
                        "reported": t.state.value,
                    },
                )
                return
            if t.state == State.COMPLETED and not c.receipt_ok:
                # The host's word is not enough: completion needs a receipt that verified
                # (uploaded before the agent reports a final state).
                self.comps.transition(
                    s,
                    c,
                    State.FAILED,
                    "the host reported completed, but no receipt that verifies was delivered",
                )
                return
            self.comps.transition(s, c, t.state, t.reason or _default_reason(t.state))

    # -- lost hosts --------------------------------------------------------------------

    def check_lost(self) -> int:
        """Mark hosts silent past agent_timeout as lost (after a control-plane start, hosts
        not heard since get ``startup_grace`` seconds) and deal with their work:
        scheduled computations move to another host (or back to the queue), the others
        fail with reason "host lost"."""
        now = self.now()
        cutoff = now - timedelta(seconds=self.settings.agent_timeout)
        silent = [Host.state == "online", Host.last_heartbeat < cutoff]
        if now < self.started_at + timedelta(seconds=self.settings.startup_grace):
            # Just (re)started: silence before our start says nothing (agents back off
            # while we were down); until the grace ends only a host that went silent
            # after we started can be lost.
            silent.append(Host.last_heartbeat >= self.started_at)
        lost = 0
        with self.comps.write() as s:
            hosts = s.scalars(select(Host).where(*silent)).all()
            if not hosts:
                return 0
            for h in hosts:
                h.state = "lost"
                old = self.comps.view().get(h.id)
                self.comps.set_host(_capacity_of(h, old.allocated if old else Resources()))
                lost += 1
                log.warning(
                    "host lost",
                    extra={"host_id": h.id, "last_heartbeat": h.last_heartbeat.isoformat()},
                )
            s.flush()
            for h in hosts:
                for c in s.scalars(
                    select(Computation)
                    .where(Computation.host_id == h.id, Computation.state.in_(LIVE))
                    .order_by(Computation.number)
                ).all():
                    if c.state == State.SCHEDULED:
                        self.comps.adjust(h.id, -need_of(c))
                        c.host_id = None
                        p = self.comps.try_place(s, c)
                        if p.host_id is not None:
                            # try_place wrote no event (state unchanged): say why it moved
                            self.comps.event(
                                s,
                                c,
                                "rescheduled",
                                reason=f"host {h.name} lost; rescheduled onto host {p.host_id}",
                            )
                            continue
                        if c.queue:
                            self.comps.transition(
                                s, c, State.CREATED, f"host {h.name} lost; queued again"
                            )
                            continue
                        # it may have been launched there: it holds the lost host's
                        # capacity until that host says the enclave is gone
                        c.host_id = h.id
                        self.comps.adjust(h.id, need_of(c))
                        self.comps.transition(s, c, State.FAILED, "host lost")
                    elif c.receipt_ok:  # its verified receipt arrived: it did complete
                        self.comps.transition(
                            s,
                            c,
                            State.COMPLETED,
                            f"host {h.name} lost after a verified receipt",
                            verified_receipt=True,
                        )
                    else:
                        self.comps.transition(s, c, State.FAILED, "host lost")
        return lost

    # -- forwarded events and blobs ----------------------------------------------------

    def _own(self, s: Session, agent: AgentPrincipal, cid: str) -> Computation:
        c = s.get(Computation, cid)
        if c is None:
            raise NotFoundError(f"computation {cid} not found", code="computation-not-found")
        if c.host_id != agent.host_id:
            raise AccessDeniedError(
                f"computation {cid} is not placed on host {agent.name}", code="access-denied"
            )
        return c

    def forward_events(self, agent: AgentPrincipal, cid: str, events: Sequence[AgentEvent]) -> int:
        bad = sorted({e.type for e in events} - FORWARDABLE_EVENTS)
        if bad:
            raise InvalidInputError(
                f"event type(s) {', '.join(repr(b[:64]) for b in bad)} cannot be forwarded by a "
                f"host; allowed: {', '.join(sorted(FORWARDABLE_EVENTS))} (algorithm output "
                "never leaves the enclave in clear; states come from heartbeats and receipts)",
                code="event-type-not-allowed",
            )
        written = 0
        with self.comps.write() as s:
            c = self._own(s, agent, cid)
            seen = set(
                s.scalars(
                    select(Event.enclave_seq).where(
                        Event.computation_id == cid,
                        Event.enclave_seq.in_([e.seq for e in events]),
                    )
                )
            )
            for e in sorted(events, key=lambda e: e.seq):
                if e.seq in seen:
                    continue
                seen.add(e.seq)
                self.comps.event(s, c, e.type, message=e.message[:4000], enclave_seq=e.seq)
                written += 1
        return written

    def authorize_blob(
        self, agent: AgentPrincipal, cid: str, name: str, sha256: str, content_length: str | None
    ) -> int:
        """Everything about an upload that the path and headers decide, before one byte of
        the body is read: the blob name, the computation placed on this agent's host, the
        consumer, the declared hash, and a Content-Length within the manifest's bound.
        Returns that bound (the body is cut off past it)."""
        check_blob_name(name)
        with self.store.session() as s:
            c = self._own(s, agent, cid)
            manifest = Manifest.from_dict(c.manifest)
        if name.startswith("result."):
            consumer = name.removeprefix("result.")
            try:
                manifest.consumer(consumer)
            except NotFoundError as e:
                raise InvalidInputError(e.message, code="unknown-consumer") from e
        elif name.startswith("log."):
            try:
                manifest.log_recipient(name.removeprefix("log."))
            except NotFoundError as e:
                raise InvalidInputError(e.message, code="unknown-log-reader") from e
        if len(sha256) != 64:
            raise InvalidInputError("X-Sealroom-Sha256 must be 64 hex characters")
        limit = blob_limit(manifest, name)
        if content_length is None:
            raise LengthRequiredError(
                f"blob {name}: a Content-Length is required (at most {limit} bytes)"
            )
        if not content_length.isdigit():
            raise InvalidInputError(f"Content-Length {content_length[:40]!r} is not a number")
        if int(content_length) > limit:
            raise PayloadTooLargeError(
                f"blob {name} is {content_length} bytes; the manifest's limits allow at most "
                f"{limit} (limits.max_result_bytes sealed, or the receipt bound)"
            )
        return limit

    def store_blob(
        self, agent: AgentPrincipal, cid: str, name: str, sha256: str, writer: BlobWriter
    ) -> None:
        """Keep an uploaded blob (its bytes are in ``writer``): hash checked, and a receipt
        verified (signature, evidence against the manifest's policy) before it is kept; a
        verified receipt then decides the computation's outcome."""
        writer.check(sha256)
        facts: ReceiptFacts | None = None
        logged: bytes | None = None
        if name == "receipt":
            with self.store.session() as s:
                manifest = self._own(s, agent, cid).manifest
            receipt = writer.read()
            facts = self.receipts.verify(manifest, receipt)
            logged = receipt_entry(receipt)
        writer.commit()
        with self.comps.write() as s:
            c = self._own(s, agent, cid)
            b = s.get(Blob, (cid, name))
            if b is None:
                b = Blob(computation_id=cid, name=name)
                s.add(b)
            b.sha256, b.size, b.stored_at = sha256.lower(), writer.size, self.now()
            if facts is not None:
                self._apply_receipt(s, c, facts)
                # every verified receipt is logged, in the transaction that keeps it
                # (docs/adr/0031); the same receipt delivered twice is logged once
                if logged is not None and self.tlog.find(leaf_hash(logged)) is None:
                    self.tlog.append_in(s, Kind.RECEIPT, decode_entry(logged)[1])
        log.info("blob stored", extra={"computation_id": cid, "blob": name, "size": writer.size})

    def log_unlogged_receipts(self) -> int:
        """Append every verified receipt the log does not hold yet (receipts kept before the
        log existed, i.e. before migration 0006), oldest first; run at start. Returns how
        many were appended."""
        with self.store.session() as s:
            ids = s.scalars(
                select(Computation.id)
                .where(Computation.receipt_ok.is_not(None))
                .order_by(Computation.receipt_at, Computation.number)
            ).all()
        added = 0
        for cid in ids:
            try:
                entry = receipt_entry(self.comps.blobs.read(cid, "receipt"))
            except (OSError, InvalidInputError):
                continue  # deleted with its computation, or not a receipt: nothing to log
            if self.tlog.find(leaf_hash(entry)) is None:
                self.tlog.append(Kind.RECEIPT, decode_entry(entry)[1])
                added += 1
        if added:
            log.info("receipts appended to the transparency log", extra={"count": added})
        return added

    def _apply_receipt(self, s: Session, c: Computation, facts: ReceiptFacts) -> None:
        now = self.now()
        c.receipt_ok, c.receipt_at = facts.ok, now
        h = s.get(Host, c.host_id) if c.host_id else None
        if h is not None:
            h.tee_verified, h.tee_verified_at = list(facts.tee_kinds), now
        outcome = "completed" if facts.ok else f"failed: {facts.reason}"
        self.comps.event(
            s,
            c,
            "receipt",
            reason=f"receipt verified ({', '.join(facts.tee_kinds)} evidence): {outcome}",
        )
        if not facts.ok or c.state not in FINAL:
            # still live: the agent's next report moves it on, each state in order (a
            # "completed" report is believed only with receipt_ok set here)
            return
        # A verified receipt outranks the control plane's own guesses ("host lost" after
        # a restart, a cancel that came too late): the run did complete.
        if c.state == State.DESTROYED:
            c.outcome, c.reason, c.updated_at = State.COMPLETED, "verified receipt: completed", now
        elif c.state == State.FAILED:
            self.comps.transition(
                s, c, State.COMPLETED, "verified receipt: the run completed", verified_receipt=True
            )


MAX_RECEIPT_BYTES = 1 << 20  # signed JSON with the evidence and its certificate chain


def blob_limit(manifest: Manifest, name: str) -> int:
    """The largest body a blob may have: a sealed result of ``limits.max_result_bytes``
    plaintext bytes, a sealed run log, or a receipt."""
    if name == "receipt":
        return MAX_RECEIPT_BYTES
    if name.startswith("log."):
        return sealed_size(MAX_RUN_LOG_BYTES)
    return sealed_size(manifest.limits.max_result_bytes)
