"""Computation lifecycle: create (validate, hash, place), list/get (owner or admin only),
cancel, delete, events, challenges, and the queue scheduler.

States: created -> scheduled -> launching -> awaiting_inputs -> running -> completed |
failed -> destroyed. Every transition writes one event (per-computation ``seq``) with a
reason. Placement happens under one lock (and, on PostgreSQL, a transaction-level advisory
lock) so that concurrent requests never overcommit a host.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from sealroom.controlplane.config import Settings
from sealroom.controlplane.services.auth import Principal, new_id
from sealroom.controlplane.services.blobs import BlobStore
from sealroom.controlplane.services.placement import (
    CapacityIndex,
    HostCapacity,
    Placement,
    Resources,
    with_allocation,
)
from sealroom.controlplane.store.db import Store
from sealroom.controlplane.store.models import (
    Account,
    Blob,
    Challenge,
    Computation,
    Counter,
    Event,
    Host,
)
from sealroom.errors import (
    AccessDeniedError,
    AttestationError,
    CapacityError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from sealroom.manifest import Manifest
from sealroom.protocol.controlplane import party_view_message, result_request_message
from sealroom.protocol.lifecycle import CANCELLED_BY, FINAL, HOLDING, OUTCOMES, State
from sealroom.protocol.lifecycle import transition as lifecycle_transition

log = logging.getLogger("sealroom.controlplane.computations")

TEE_KINDS = ("sim", "snp", "tdx")
MAX_CHALLENGES = 64


@dataclass
class Metrics:
    """Counters the /metrics endpoint exposes (set by the app)."""

    placements: Any = None

    def placed(self) -> None:
        if self.placements is not None:
            self.placements.inc()


@dataclass(frozen=True)
class Quota:
    """An account's limits (None: unlimited) and what its unfinished computations hold."""

    computations: int | None
    vcpus: int | None
    memory_mb: int | None
    used_computations: int
    used_vcpus: int
    used_memory_mb: int


@dataclass(eq=False)
class _PendingCreate:
    """One create waiting for a group commit; ``done`` once a batch has decided it."""

    actor: Principal
    manifest: Manifest
    tee: str
    queue: bool
    now: datetime
    done: bool = False
    result: Computation | None = None
    error: BaseException | None = None


def need_of(c: Computation) -> Resources:
    return Resources(c.vcpus, c.memory_mb, c.gpus, c.disk_mb)


def capacities(s: Session) -> list[HostCapacity]:
    alloc: dict[str, Resources] = {}
    for hid, v, m, g, d in s.execute(
        select(
            Computation.host_id,
            func.sum(Computation.vcpus),
            func.sum(Computation.memory_mb),
            func.sum(Computation.gpus),
            func.sum(Computation.disk_mb),
        )
        .where(Computation.host_id.is_not(None), Computation.state.in_(HOLDING))
        .group_by(Computation.host_id)
    ):
        if hid is None:
            continue
        alloc[hid] = Resources(int(v or 0), int(m or 0), int(g or 0), int(d or 0))
    out = []
    for row in s.execute(
        select(
            Host.id,
            Host.name,
            Host.state,
            Host.tee_kinds,
            Host.cpu_total,
            Host.memory_mb_total,
            Host.gpu_total,
            Host.disk_mb_total,
            Host.cpu_used,
            Host.memory_mb_used,
            Host.gpu_used,
            Host.disk_mb_used,
            Host.draining,
        )
    ):
        out.append(
            HostCapacity(
                host_id=row[0],
                name=row[1],
                online=row[2] == "online" and not row[12],  # a draining host takes no more
                tee_kinds=frozenset(row[3] or ()),
                total=Resources(row[4], row[5], row[6], row[7]),
                reported_used=Resources(row[8], row[9], row[10], row[11]),
                allocated=alloc.get(row[0], Resources()),
            )
        )
    return out


class ComputationService:
    def __init__(self, store: Store, settings: Settings, blobs: BlobStore) -> None:
        self.store = store
        self.settings = settings
        self.blobs = blobs
        # Serializes every write that changes placement or a computation's event sequence.
        self.lock = threading.RLock()
        self.metrics = Metrics()
        # In-memory view of host capacities, valid while its generation equals the
        # database's "placement" counter (another replica's change invalidates it).
        self._view: CapacityIndex | None = None
        self._view_gen = -1
        self._dirty = False
        # Creates waiting for the next group commit (see create()).
        self._pending: list[_PendingCreate] = []
        self._pending_lock = threading.Lock()

    # -- serialized writes and the capacity view ---------------------------------------

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One serialized write transaction (process lock + advisory lock on PostgreSQL)
        with a fresh capacity view; changes to the view are published by bumping the
        placement generation in the same transaction."""
        with self.lock:
            self._dirty = False
            try:
                with self.store.session() as s:
                    self.store.serialize(s)
                    self._refresh(s)
                    yield s
                    if self._dirty:
                        self._view_gen = self._bump(s)
            except BaseException:
                if self._dirty:
                    self._view = None
                raise
            finally:
                self._dirty = False

    @staticmethod
    def _generation(s: Session) -> int:
        v = s.scalar(select(Counter.value).where(Counter.name == "placement"))
        return int(v or 0)

    def _bump(self, s: Session) -> int:
        """Publish this transaction's capacity changes. Returns the generation our view now
        has: the one read at the start plus one. That is never above the stored value (a
        replica bumping in between makes it lower, and the next write reloads), so a stale
        view can never pass for a fresh one."""
        r = s.execute(
            update(Counter)
            .where(Counter.name == "placement")
            .values(value=Counter.value + 1)
            .execution_options(synchronize_session=False)
        )
        if not getattr(r, "rowcount", 0):
            s.add(Counter(name="placement", value=1))
            s.flush()
            return 1
        return self._view_gen + 1

    def _refresh(self, s: Session) -> None:
        gen = self._generation(s)
        if self._view is None or gen != self._view_gen:
            self._view = CapacityIndex(capacities(s))
            self._view_gen = gen

    @property
    def changed(self) -> bool:
        """Inside ``write()``: this transaction changed some host's capacity."""
        return self._dirty

    def view(self) -> CapacityIndex:
        if self._view is None:
            raise RuntimeError("capacity view used outside write()")
        return self._view

    def set_host(self, h: HostCapacity) -> None:
        self.view()[h.host_id] = h
        self._dirty = True

    def adjust(self, host_id: str | None, delta: Resources) -> None:
        if host_id is None:
            return
        v = self.view()
        if host_id in v:
            v[host_id] = with_allocation(v[host_id], delta)
        self._dirty = True

    def now(self) -> datetime:
        return self.settings.clock()

    # -- events and transitions --------------------------------------------------------

    def event(
        self,
        s: Session,
        c: Computation,
        type_: str,
        *,
        reason: str = "",
        message: str = "",
        enclave_seq: int | None = None,
        at: datetime | None = None,
    ) -> None:
        c.events_count += 1
        s.add(
            Event(
                computation_id=c.id,
                seq=c.events_count,
                enclave_seq=enclave_seq,
                time=at or self.now(),
                type=type_[:64],
                state=c.state,
                reason=reason,
                message=message,
            )
        )

    def transition(
        self,
        s: Session,
        c: Computation,
        state: State,
        reason: str,
        message: str = "",
        *,
        verified_receipt: bool = False,
    ) -> None:
        """Move ``c`` to ``state`` (a repeat is a no-op); a move the lifecycle does not
        allow raises ConflictError and writes nothing. ``verified_receipt``: the move is
        made on a receipt the control plane verified (it may complete a failed run)."""
        if state == c.state:
            return
        lifecycle_transition(State(c.state), state, verified_receipt=verified_receipt)
        if c.state in HOLDING and state not in HOLDING:
            self.adjust(c.host_id, -need_of(c))
        if state in OUTCOMES:
            c.outcome = state
        c.state = state
        if state != State.DESTROYED:  # the outcome's reason stays; destroyed is its own fact
            c.reason = reason
        c.updated_at = self.now()
        self.event(s, c, "state", reason=reason, message=message or f"state is now {state}")
        # Placement is part of every create, whose own line says the state: at INFO it
        # would double the log lines (and a fifth of a create's CPU, docs/bench.md).
        log.log(
            logging.DEBUG if state == State.SCHEDULED else logging.INFO,
            "computation state",
            extra={"computation_id": c.id, "state": state, "reason": reason},
        )

    # -- placement ---------------------------------------------------------------------

    def try_place(self, s: Session, c: Computation) -> Placement:
        """Place ``c`` (state created, or scheduled without a host) using the capacity
        view; inside ``write()`` only."""
        p = self.view().place(c.tee, need_of(c))
        if p.host_id is not None:
            self._assign(s, c, p.host_id)
        return p

    def _assign(self, s: Session, c: Computation, host_id: str) -> None:
        c.host_id = host_id
        self.adjust(host_id, need_of(c))
        self.transition(s, c, State.SCHEDULED, f"placed on host {self.view()[host_id].name}")
        self.metrics.placed()

    def schedule_queue(self) -> int:
        """Place queued computations (FIFO per TEE kind) where capacity has freed."""
        placed = 0
        with self.write() as s:
            waiting = s.scalars(
                select(Computation)
                .where(Computation.state == State.CREATED, Computation.queue.is_(True))
                .order_by(Computation.number)
            ).all()
            if not waiting:
                return 0
            blocked: set[str] = set()
            for c in waiting:
                if c.tee in blocked:
                    continue
                p = self.try_place(s, c)
                if p.host_id is None:
                    blocked.add(c.tee)
                    continue
                placed += 1
        return placed

    # -- quotas ------------------------------------------------------------------------

    def quota(self, s: Session, account_id: str) -> Quota:
        acc = s.get(Account, account_id)
        if acc is None:
            raise NotFoundError(f"account {account_id} not found", code="account-not-found")
        n, v, m = s.execute(
            select(
                func.count(), func.sum(Computation.vcpus), func.sum(Computation.memory_mb)
            ).where(Computation.account_id == account_id, Computation.state.not_in(FINAL))
        ).one()
        st = self.settings

        def pick(own: int | None, default: int | None) -> int | None:
            return own if own is not None else default

        return Quota(
            computations=pick(acc.quota_computations, st.quota_computations),
            vcpus=pick(acc.quota_vcpus, st.quota_vcpus),
            memory_mb=pick(acc.quota_memory_mb, st.quota_memory_mb),
            used_computations=int(n or 0),
            used_vcpus=int(v or 0),
            used_memory_mb=int(m or 0),
        )

    def _check_quota(self, s: Session, actor: Principal, vcpus: int, memory_mb: int) -> None:
        """429 ``quota-exceeded`` when this computation would take the account past one
        of its limits (unfinished computations count, queued ones included)."""
        st = self.settings
        if st.quota_computations is None and st.quota_vcpus is None and st.quota_memory_mb is None:
            # No default limits: only the account's own can apply. Summing what the
            # account holds is a scan over its computations, the largest cost of a create
            # (docs/bench.md): skip it for an account without limits.
            acc = s.get(Account, actor.account_id)
            if acc is None:
                raise NotFoundError(
                    f"account {actor.account_id} not found", code="account-not-found"
                )
            if (
                acc.quota_computations is None
                and acc.quota_vcpus is None
                and (acc.quota_memory_mb is None)
            ):
                return
        q = self.quota(s, actor.account_id)
        for what, limit, used, want in (
            ("computations", q.computations, q.used_computations, 1),
            ("vCPUs", q.vcpus, q.used_vcpus, vcpus),
            ("memory MiB", q.memory_mb, q.used_memory_mb, memory_mb),
        ):
            if limit is not None and used + want > limit:
                raise CapacityError(
                    f"quota: account {actor.name!r} may hold at most {limit} {what} in "
                    f"unfinished computations; it holds {used} and this one needs {want}",
                    code="quota-exceeded",
                )

    def set_quota(
        self,
        actor: Principal,
        account_id: str,
        computations: int | None,
        vcpus: int | None,
        memory_mb: int | None,
    ) -> Quota:
        with self.store.session() as s:
            acc = s.get(Account, account_id)
            if acc is None:
                raise NotFoundError(f"account {account_id} not found", code="account-not-found")
            acc.quota_computations, acc.quota_vcpus, acc.quota_memory_mb = (
                computations,
                vcpus,
                memory_mb,
            )
            s.flush()
            q = self.quota(s, account_id)
        log.info("quota set", extra={"account_id": account_id, "by": actor.account_id})
        return q

    def get_quota(self, account_id: str) -> Quota:
        with self.store.session() as s:
            return self.quota(s, account_id)

    # -- user operations ---------------------------------------------------------------

    def create(self, actor: Principal, manifest_obj: Any, tee: str, queue: bool) -> Computation:
        """Validate and store a computation, placed at once (or queued with ``queue``).

        Group commit (docs/adr/0039): the request joins a queue of pending creates, and
        whichever request holds the write lock next stores every pending one in ONE
        serialized transaction (one generation read, one advisory lock, one counter bump,
        one commit). Each create is still decided alone, in arrival order, against the
        capacity the ones before it took; a refusal (capacity, quota) refuses only its own
        request. If the shared transaction fails, each of its creates is retried alone."""
        if tee not in TEE_KINDS:
            raise InvalidInputError(f"tee: {tee!r} is not one of {', '.join(TEE_KINDS)}")
        req = _PendingCreate(actor, Manifest.from_dict(manifest_obj), tee, queue, self.now())
        with self._pending_lock:
            self._pending.append(req)
        with self.lock:
            if not req.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._create_batch(batch)
        if req.error is not None:
            raise req.error
        c = req.result
        assert c is not None
        log.info(
            "computation created",
            extra={"computation_id": c.id, "account_id": actor.account_id, "state": c.state},
        )
        return c

    def _create_batch(self, batch: list[_PendingCreate]) -> None:
        """Store ``batch`` in one transaction (inside ``self.lock``); every request in it
        ends up ``done`` with a result or an error."""
        try:
            with self.write() as s:
                number = (s.scalar(select(func.max(Computation.number))) or 0) + 1
                for req in batch:
                    try:
                        req.result = self._create_one(s, req, number)
                    except (CapacityError, NotFoundError) as e:
                        # Raised before this create added anything to the session.
                        req.error = e
                    else:
                        number += 1
        except Exception as e:
            # The transaction rolled back: none of the batch is stored. Alone, each
            # create gets its own verdict (one bad row must not fail the others).
            for req in batch:
                req.result = None
                req.error = e
            if len(batch) > 1:
                for req in batch:
                    req.error = None
                    self._create_batch([req])
        finally:
            for req in batch:
                if req.result is None and req.error is None:  # interrupted mid-batch
                    req.error = UnavailableError("create interrupted; nothing was stored")
                req.done = True

    def _create_one(self, s: Session, req: _PendingCreate, number: int) -> Computation:
        manifest, actor = req.manifest, req.actor
        self._check_quota(s, actor, manifest.limits.vcpus, manifest.limits.memory_mb)
        need = Resources(manifest.limits.vcpus, manifest.limits.memory_mb, 0, 0)
        p = self.view().place(req.tee, need)
        if p.host_id is None and not req.queue:
            # Graceful rejection: nothing of this create is stored.
            raise CapacityError(p.reason, code="capacity")
        c = Computation(
            id=new_id("cmp_"),
            number=number,
            account_id=actor.account_id,
            name=manifest.name,
            state=State.CREATED,
            outcome=None,
            reason="",
            manifest=manifest.to_json_obj(),
            manifest_hash=manifest.manifest_hash_hex,
            tee=req.tee,
            queue=req.queue,
            vcpus=need.vcpus,
            memory_mb=need.memory_mb,
            gpus=need.gpus,
            disk_mb=need.disk_mb,
            host_id=None,
            enclave_url=None,
            stats={},
            events_count=0,
            created_at=req.now,
            updated_at=req.now,
        )
        s.add(c)
        self.event(
            s,
            c,
            "state",
            reason=f"created by {actor.name}",
            message=f"manifest {manifest.manifest_hash_hex}",
        )
        if p.host_id is not None:
            self._assign(s, c, p.host_id)
        else:
            c.reason = f"queued: {p.reason}"
            self.event(s, c, "queued", reason=c.reason, message="waiting for capacity")
        return c

    def _visible(self, s: Session, actor: Principal, cid: str) -> Computation:
        c = s.get(Computation, cid)
        if c is None or (not actor.is_admin and c.account_id != actor.account_id):
            raise NotFoundError(f"computation {cid} not found", code="computation-not-found")
        return c

    def get(self, actor: Principal, cid: str) -> Computation:
        with self.store.session() as s:
            return self._visible(s, actor, cid)

    def list_for(self, actor: Principal) -> Sequence[Computation]:
        with self.store.session() as s:
            q = select(Computation).order_by(Computation.number)
            if not actor.is_admin:
                q = q.where(Computation.account_id == actor.account_id)
            return s.scalars(q).all()

    def cancel(self, actor: Principal, cid: str) -> str:
        with self.write() as s:
            c = self._visible(s, actor, cid)
            if c.state not in FINAL:
                self.transition(s, c, State.FAILED, f"{CANCELLED_BY}{actor.name}")
            state = c.state
        self.schedule_queue()
        return state

    def delete(self, actor: Principal, cid: str) -> None:
        with self.write() as s:
            c = self._visible(s, actor, cid)
            if c.state not in FINAL:
                raise ConflictError(
                    f"computation {cid} is {c.state}; only finished computations "
                    "(completed, failed, destroyed) can be deleted; cancel it first",
                    code="computation-not-finished",
                )
            if c.state in HOLDING:  # deleted before its host confirmed the enclave gone
                self.adjust(c.host_id, -need_of(c))
            s.execute(delete(Event).where(Event.computation_id == cid))
            s.execute(delete(Challenge).where(Challenge.computation_id == cid))
            s.execute(delete(Blob).where(Blob.computation_id == cid))
            s.delete(c)
        self.blobs.delete_all(cid)

    def events(self, actor: Principal | None, cid: str, after: int) -> tuple[list[Event], str]:
        with self.store.session() as s:
            if actor is None:
                c = s.get(Computation, cid)
                if c is None:
                    raise NotFoundError(f"computation {cid} not found")
            else:
                c = self._visible(s, actor, cid)
            evs = s.scalars(
                select(Event)
                .where(Event.computation_id == cid, Event.seq > after)
                .order_by(Event.seq)
                .limit(1000)
            ).all()
            return list(evs), c.state

    def events_count(self, cid: str) -> int:
        with self.store.session() as s:
            c = s.get(Computation, cid)
            return 0 if c is None else c.events_count

    def blob_sha256(self, cid: str, name: str) -> str:
        with self.store.session() as s:
            b = s.get(Blob, (cid, name))
            if b is None:
                raise NotFoundError(
                    f"computation {cid} has no blob {name!r}", code="blob-not-found"
                )
            return b.sha256

    # -- consumer authentication -------------------------------------------------------

    def new_challenge(self, cid: str) -> str:
        now = self.now()
        with self.store.session() as s:
            if s.get(Computation, cid) is None:
                raise NotFoundError(f"computation {cid} not found", code="computation-not-found")
            s.execute(delete(Challenge).where(Challenge.expires_at < now))
            existing = s.scalars(
                select(Challenge)
                .where(Challenge.computation_id == cid)
                .order_by(Challenge.expires_at)
            ).all()
            for old in existing[: max(0, len(existing) - MAX_CHALLENGES + 1)]:
                s.delete(old)
            ch = secrets.token_hex(32)
            s.add(
                Challenge(
                    challenge=ch,
                    computation_id=cid,
                    expires_at=now + timedelta(seconds=self.settings.challenge_ttl),
                )
            )
        return ch

    def _take_challenge(
        self, cid: str, challenge_hex: str | None, signature_hex: str | None
    ) -> tuple[Computation, bytes, bytes]:
        """The computation, the challenge and the signature; the challenge is consumed
        (one-time, whatever the outcome of the signature check that follows)."""
        with self.store.session() as s:
            c = s.get(Computation, cid)
            if c is None:
                raise NotFoundError(f"computation {cid} not found", code="computation-not-found")
            if not challenge_hex or not signature_hex:
                raise AccessDeniedError(
                    "X-Sealroom-Challenge and X-Sealroom-Signature headers are required "
                    "(get a challenge from /challenge and sign it with your manifest key)",
                    code="access-denied",
                )
            ch = s.get(Challenge, challenge_hex.lower()[:64])
            if ch is None or ch.computation_id != cid or ch.expires_at < self.now():
                raise AccessDeniedError(
                    "challenge unknown, used or expired; get a fresh one from /challenge",
                    code="access-denied",
                )
            s.delete(ch)
        try:
            return c, bytes.fromhex(challenge_hex), bytes.fromhex(signature_hex)
        except ValueError as e:
            raise AccessDeniedError(
                "signature or challenge is not hex", code="access-denied"
            ) from e

    def authenticate_party(
        self, cid: str, party: str, challenge_hex: str | None, signature_hex: str | None
    ) -> tuple[Computation, str]:
        """Any party the manifest names (algorithm or dataset provider, consumer, log
        reader) who signs ``party_view_message`` over a fresh challenge (docs/adr/0037)."""
        c, chal, sig = self._take_challenge(cid, challenge_hex, signature_hex)
        m = Manifest.from_dict(c.manifest)
        named = [
            m.algorithm.provider,
            *(d.provider for d in m.datasets),
            *m.log_recipients,
        ]
        msg = party_view_message(cid, bytes.fromhex(c.manifest_hash), party, chal)
        for p in named:
            if p.name != party:
                continue
            try:
                p.verify(sig, msg)
            except AttestationError:
                continue
            return c, p.name
        raise AccessDeniedError(
            f"party {party!r} is not named in this computation's manifest, or the signature "
            "does not verify under its ed25519 key",
            code="access-denied",
        )

    def authenticate_consumer(
        self,
        cid: str,
        consumer: str | None,
        challenge_hex: str | None,
        signature_hex: str | None,
        *,
        log_readers: bool = False,
    ) -> tuple[Computation, str]:
        """Check a consumer's signature over a fresh challenge (consumed here, one-time).
        ``consumer`` None: any consumer of the manifest; ``log_readers``: the manifest's
        log readers count too (for the run log and the receipt). Returns the computation
        and the party's name. Raises 404 for an unknown computation, 403 otherwise."""
        c, chal, sig = self._take_challenge(cid, challenge_hex, signature_hex)
        manifest = Manifest.from_dict(c.manifest)
        if consumer is None:
            parties = list(manifest.log_recipients if log_readers else manifest.consumers)
        else:
            try:
                find = manifest.log_recipient if log_readers else manifest.consumer
                parties = [find(consumer)]
            except NotFoundError as e:
                raise AccessDeniedError(e.message, code="access-denied") from e
        for party in parties:
            msg = result_request_message(cid, bytes.fromhex(c.manifest_hash), party.name, chal)
            try:
                party.verify(sig, msg)
            except AttestationError:
                continue
            return c, party.name
        who = f"consumer {consumer!r}" if consumer else "any consumer of the manifest"
        raise AccessDeniedError(
            f"signature does not verify under the ed25519 key of {who}", code="access-denied"
        )
