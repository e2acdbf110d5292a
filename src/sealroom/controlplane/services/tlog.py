"""The control plane's transparency log: entries and perfect-subtree hashes in its database,
proofs, signed checkpoints and C2SP tiles read from them (docs/adr/0030, 0031).

For the other services (and helpers adding records) the API is one call::

    from sealroom.tlog.entries import Kind
    index, leaf_hash = cp.tlog.append(Kind.HEARTBEAT, {"enclave": ..., "ok": True, ...})

or, inside a transaction you already hold (the entry commits or rolls back with it)::

    with cp.computations.write() as s:
        ...
        cp.tlog.append_in(s, Kind.RECEIPT, payload)

A component in another process (the key broker's audit hook, say) appends over HTTP with
the operator's admin key: ``sealroom.client.tlog.LogClient(url, admin_key).append(kind,
payload)`` (``POST /api/v1/log/entries``; every kind but ``receipt``).

``kind`` is one of ``sealroom.tlog.entries.Kind``: ``receipt``, ``service-deployment``,
``heartbeat``, ``key-release``, ``lockdown``, ``runtime-measurement``. ``payload`` is a JSON
object; the entry is its canonical JSON ``{"kind", "payload"}`` (at most 65535 bytes).
EVERYTHING LOGGED IS PUBLIC, forever (anyone can download every entry): log hashes,
identifiers, measurements, verdicts and times — never a secret, a key, a token, a
plaintext input or result, a sealed blob, an owner's private data, or anything the
operator may not publish. Payloads are hashed as given: a verifier must be able to
recompute them from documents it holds (see ``sealroom.tlog.entries.receipt_payload``).

Appends are serialized (one writer): a process lock plus, on PostgreSQL, a transaction-
level advisory lock, so indexes never collide across replicas; ``idx`` is the primary key,
so a collision could only ever fail, never overwrite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from sqlalchemy import Table, and_, bindparam, event, func, or_, select, text
from sqlalchemy.orm import Session, SessionTransaction

from sealroom import files
from sealroom.controlplane.config import Settings
from sealroom.controlplane.store.db import Store
from sealroom.controlplane.store.models import TlogEntry, TlogNode
from sealroom.errors import InvalidInputError, NotFoundError
from sealroom.tlog import merkle, note, tiles
from sealroom.tlog.checkpoint import Checkpoint
from sealroom.tlog.entries import Kind, encode_entry
from sealroom.tlog.proof import TlogProof

T = TypeVar("T")
TLOG_LOCK_KEY = 5151  # pg_advisory_xact_lock key of the log's single writer
_WRITER = "sealroom.tlog.writer"
_LISTENING = "sealroom.tlog.listening"


@dataclass(frozen=True)
class Appended:
    index: int
    leaf_hash: bytes

    def __iter__(self) -> Any:  # index, leaf_hash = log.append(...)
        return iter((self.index, self.leaf_hash))


# Core tables (no ORM unit of work on the hot paths); declarative models always map a Table
_ENTRIES = cast(Table, TlogEntry.__table__)
_NODES = cast(Table, TlogNode.__table__)
_LEAF_Q = select(_ENTRIES.c.leaf_hash).where(_ENTRIES.c.idx == bindparam("i"))
_NODE_Q = select(_NODES.c.hash).where(
    _NODES.c.level == bindparam("l"), _NODES.c.idx == bindparam("i")
)
_SIZE_Q = select(func.max(_ENTRIES.c.idx))
CACHE_MAX = 1 << 18  # committed subtree hashes kept in memory (~20 MB); they never change


class _Recorder:
    """A HashSource that only notes which perfect subtrees a computation reads."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def perfect(self, level: int, index: int) -> bytes:
        self.keys.append((level, index))
        return bytes(32)


class DbHashes:
    """merkle.HashSource over the database (one session). ``pending``: this transaction's
    own new hashes. ``cache``: committed hashes shared by read-only sessions (a perfect
    subtree's hash never changes once committed); writers pass none, since what they read
    inside an uncommitted transaction could still roll back."""

    def __init__(
        self,
        s: Session,
        pending: dict[tuple[int, int], bytes] | None = None,
        cache: dict[tuple[int, int], bytes] | None = None,
    ) -> None:
        self.conn = s.connection()
        self.pending = pending if pending is not None else {}
        self.cache = cache

    def perfect(self, level: int, index: int) -> bytes:
        key = (level, index)
        h = self.pending.get(key)
        if h is None and self.cache is not None:
            h = self.cache.get(key)
        if h is not None:
            return h
        if level == 0:
            raw = self.conn.execute(_LEAF_Q, {"i": index}).scalar()
        else:
            raw = self.conn.execute(_NODE_Q, {"l": level, "i": index}).scalar()
        if raw is None:
            raise RuntimeError(f"transparency log store lacks node ({level}, {index})")
        h = bytes(raw)
        if self.cache is not None:
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            self.cache[key] = h
        return h

    def prefetch(self, keys: list[tuple[int, int]]) -> None:
        """Read every hash a computation will need in (at most) two queries."""
        have = self.cache if self.cache is not None else {}
        want = [k for k in set(keys) if k not in self.pending and k not in have]
        leaves = [i for lv, i in want if lv == 0]
        nodes = [(lv, i) for lv, i in want if lv]
        got: dict[tuple[int, int], bytes] = {}
        if leaves:
            q = select(_ENTRIES.c.idx, _ENTRIES.c.leaf_hash).where(_ENTRIES.c.idx.in_(leaves))
            for i, h in self.conn.execute(q):
                got[(0, int(i))] = bytes(h)
        if nodes:
            # one "level = ? AND idx IN (...)" per level, OR-ed: both SQLite and PostgreSQL
            # answer it from the primary key (a row-value IN made SQLite scan the table)
            by_level: dict[int, list[int]] = {}
            for lv, i in nodes:
                by_level.setdefault(lv, []).append(i)
            q2 = select(_NODES.c.level, _NODES.c.idx, _NODES.c.hash).where(
                or_(
                    *(
                        and_(_NODES.c.level == lv, _NODES.c.idx.in_(ix))
                        for lv, ix in by_level.items()
                    )
                )
            )
            for lv, i, h in self.conn.execute(q2):
                got[(int(lv), int(i))] = bytes(h)
        if self.cache is not None:
            if len(self.cache) + len(got) > CACHE_MAX:
                self.cache.clear()
            self.cache.update(got)
        else:
            self.pending.update(got)

    def range(self, level: int, first: int, count: int) -> list[bytes]:
        if level == 0:
            q = (
                select(_ENTRIES.c.leaf_hash)
                .where(_ENTRIES.c.idx >= first, _ENTRIES.c.idx < first + count)
                .order_by(_ENTRIES.c.idx)
            )
        else:
            q = (
                select(_NODES.c.hash)
                .where(_NODES.c.level == level, _NODES.c.idx >= first, _NODES.c.idx < first + count)
                .order_by(_NODES.c.idx)
            )
        out = [bytes(h) for h in self.conn.execute(q).scalars()]
        if len(out) != count:
            raise RuntimeError(f"transparency log store lacks nodes at level {level}")
        return out


def _batched(src: DbHashes, compute: Callable[[merkle.HashSource], T]) -> T:
    """Run a pure computation twice: once to learn which hashes it reads, then for real
    after fetching them all at once (a proof at 10^6 entries reads ~40)."""
    rec = _Recorder()
    compute(rec)
    src.prefetch(rec.keys)
    return compute(src)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        files.write_private(path, pem, overwrite=False, what="transparency log key")
        return key
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInputError(f"{path} is not an Ed25519 key", code="invalid-config")
    return key


class TransparencyLog:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.lock = threading.RLock()
        self.signer = note.Signer(settings.log_origin, load_or_create_key(settings.log_key_path))
        self._checkpoint: tuple[int, str] | None = None
        self._cache: dict[tuple[int, int], bytes] = {}

    @property
    def origin(self) -> str:
        return self.settings.log_origin

    def vkey(self) -> str:
        return self.signer.verifier.vkey()

    # -- appending ---------------------------------------------------------------------

    def append(self, kind: Kind | str, payload: dict[str, Any]) -> Appended:
        """Append one entry in its own transaction; returns (index, leaf hash)."""
        with self.store.session() as s:
            return self.append_in(s, kind, payload)

    def append_in(self, s: Session, kind: Kind | str, payload: dict[str, Any]) -> Appended:
        """Append inside the caller's transaction (committed or rolled back with it)."""
        return self.append_many_in(s, [(kind, payload)])[0]

    def append_many(self, items: Iterable[tuple[Kind | str, dict[str, Any]]]) -> list[Appended]:
        with self.store.session() as s:
            return self.append_many_in(s, items)

    def append_many_in(
        self, s: Session, items: Iterable[tuple[Kind | str, dict[str, Any]]]
    ) -> list[Appended]:
        encoded = []
        for k, p in items:
            data = encode_entry(k, p)  # validates the kind and the size first
            encoded.append((Kind(k), data))
        self._hold_writer(s)
        size = self._size(s)
        now = self.settings.clock()
        new_nodes: dict[tuple[int, int], bytes] = {}
        src = DbHashes(s, new_nodes)
        entries, out = [], []
        for i, (kind, data) in enumerate(encoded):
            idx = size + i
            leaf = merkle.leaf_hash(data)
            new_nodes[(0, idx)] = leaf
            entries.append(
                {
                    "idx": idx,
                    "kind": str(kind),
                    "data": data,
                    "leaf_hash": leaf,
                    "logged_at": now,
                }
            )
            # every perfect subtree that this leaf completes (ADR 0031)
            level, j = 0, idx
            while j & 1:
                h = merkle.node_hash(src.perfect(level, j - 1), src.perfect(level, j))
                level, j = level + 1, j >> 1
                new_nodes[(level, j)] = h
            out.append(Appended(idx, leaf))
        if entries:
            s.connection().execute(_ENTRIES.insert(), entries)
            nodes = [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in new_nodes.items() if lv]
            if nodes:
                s.connection().execute(_NODES.insert(), nodes)
        return out

    def _hold_writer(self, s: Session) -> None:
        """Become the log's one writer until ``s``'s transaction ends: the process lock is
        released only after commit or rollback (released at return, another thread could
        read the old size before this transaction commits: test_concurrent_appends_never_
        collide), and on PostgreSQL a transaction-level advisory lock does the same across
        replicas."""
        if s.info.get(_WRITER):
            return
        self.lock.acquire()
        s.info[_WRITER] = True
        if not s.info.get(_LISTENING):
            s.info[_LISTENING] = True
            event.listen(s, "after_transaction_end", self._release)
        if self.store.is_postgres:
            s.execute(text(f"SELECT pg_advisory_xact_lock({TLOG_LOCK_KEY})"))

    def _release(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None and session.info.pop(_WRITER, False):
            self.lock.release()

    # -- reading -----------------------------------------------------------------------

    def _reader(self, s: Session) -> DbHashes:
        return DbHashes(s, cache=self._cache)

    @staticmethod
    def _size(s: Session) -> int:
        v = s.connection().execute(_SIZE_Q).scalar()
        return 0 if v is None else int(v) + 1

    def size(self) -> int:
        with self.store.session() as s:
            return self._size(s)

    def _check_size(self, s: Session, size: int | None) -> int:
        current = self._size(s)
        if size is None:
            return current
        if not 0 <= size <= current:
            raise NotFoundError(
                f"tree size {size} is beyond the log's size {current}", code="tlog-out-of-range"
            )
        return size

    def checkpoint(self) -> str:
        """The signed checkpoint (C2SP tlog-checkpoint note) at the current size."""
        with self.store.session() as s:
            size = self._size(s)
            cached = self._checkpoint
            if cached is not None and cached[0] == size:
                return cached[1]
            root = _batched(self._reader(s), lambda src: merkle.root_hash(src, size))
        signed = Checkpoint(self.origin, size, root).sign(self.signer)
        self._checkpoint = (size, signed)
        return signed

    def root(self, size: int) -> bytes:
        with self.store.session() as s:
            n = self._check_size(s, size)
            return _batched(self._reader(s), lambda src: merkle.root_hash(src, n))

    def inclusion(self, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        with self.store.session() as s:
            n = self._check_size(s, size)
            if not 0 <= index < n:
                raise NotFoundError(
                    f"entry {index} is not in the tree of size {n}", code="tlog-out-of-range"
                )
            return n, _batched(self._reader(s), lambda src: merkle.inclusion_proof(src, index, n))

    def consistency(self, old: int, new: int | None = None) -> tuple[int, list[bytes]]:
        with self.store.session() as s:
            n = self._check_size(s, new)
            if not 0 <= old <= n:
                raise NotFoundError(
                    f"tree size {old} is not between 0 and {n}", code="tlog-out-of-range"
                )
            return n, _batched(self._reader(s), lambda src: merkle.consistency_proof(src, old, n))

    def entry(self, index: int) -> bytes:
        with self.store.session() as s:
            data = s.scalar(select(TlogEntry.data).where(TlogEntry.idx == index))
        if data is None:
            raise NotFoundError(f"log entry {index} does not exist", code="tlog-out-of-range")
        return bytes(data)

    def find(self, leaf_hash: bytes) -> int | None:
        """The first index holding this leaf hash, if any."""
        with self.store.session() as s:
            v = s.scalar(select(func.min(TlogEntry.idx)).where(TlogEntry.leaf_hash == leaf_hash))
        return None if v is None else int(v)

    def proof(self, index: int) -> TlogProof:
        """A C2SP tlog-proof of entry ``index`` against a freshly signed checkpoint."""
        cp_text = self.checkpoint()
        size = int(cp_text.split("\n", 2)[1])
        _, hashes = self.inclusion(index, size)
        return TlogProof(index, tuple(hashes), cp_text)

    def tile(self, path: str) -> bytes:
        """A C2SP tlog-tiles resource (Merkle tile or entry bundle) of the current tree."""
        ref = tiles.parse_path(path)
        with self.store.session() as s:
            size = self._size(s)
            if not tiles.servable(ref, size):
                raise NotFoundError(f"{ref.path()} does not exist at tree size {size}")
            if ref.level < 0:
                first = ref.index * tiles.TILE_WIDTH
                rows: Sequence[bytes] = s.scalars(
                    select(TlogEntry.data)
                    .where(TlogEntry.idx >= first, TlogEntry.idx < first + ref.width)
                    .order_by(TlogEntry.idx)
                ).all()
                return tiles.entry_bundle([bytes(r) for r in rows])
            level = tiles.TILE_HEIGHT * ref.level
            return b"".join(self._reader(s).range(level, ref.index * tiles.TILE_WIDTH, ref.width))
