"""SQL storage of the key broker and the attestation service (SQLite or PostgreSQL).

Every piece of state lives here, none in process memory, so several replicas over one
PostgreSQL serve one deployment: RCAR sessions, resources, policies, reference values and
single-use attestation nonces (consumed by one ``UPDATE ... WHERE used = false``, which only
one transaction can win).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sealroom.kbs.seams import ResourcePath

metadata = MetaData()

resources = Table(
    "kbs_resources",
    metadata,
    Column("path", String(600), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

sessions = Table(
    "kbs_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tee", String(32), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("extra_params", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # NULL until attested; then the EAR, its claims and the tee-pubkey
    Column("token", Text),
    Column("claims", Text),
    Column("tee_pubkey", Text),
    Column("attested_at", DateTime(timezone=True)),
)

# named documents: "resource-policy", "attestation-policy/<id>", ...
documents = Table(
    "kbs_documents",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("body", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

reference_values = Table(
    "as_reference_values",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("value", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
)

nonces = Table(
    "as_nonces",
    metadata,
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used", Boolean, nullable=False),
)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t


@dataclass(frozen=True)
class AppraisalInputs:
    """What one appraisal reads from the store, read in one transaction."""

    policy_text: str | None
    refs: dict[str, Any]
    expired_refs: dict[str, datetime]
    nonce_ok: bool | None  # None: no nonce was given
    session: Session | None = None  # when asked for by id


@dataclass(frozen=True)
class Session:
    id: str
    tee: str
    nonce: str
    extra_params: Any
    expires_at: datetime
    token: str | None
    claims: dict[str, Any] | None
    tee_pubkey: dict[str, Any] | None
    attested_at: datetime | None


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        self.engine: Engine = self._engine(url, durable=True)
        # Creating and attesting a session are written without waiting for the disk: a
        # power loss can only forget them (the guest attests again). Everything else
        # (resources, policies, reference values, nonces spent, sessions deleted) waits
        # for fsync. In WAL mode a later durable commit syncs the earlier frames as well.
        self._session_engine: Engine = self._engine(url, durable=False)
        metadata.create_all(self.engine)

    @staticmethod
    def _engine(url: str, *, durable: bool) -> Engine:
        if not url.startswith("sqlite"):
            # PostgreSQL: the same choice per connection (synchronous_commit)
            opts = {} if durable else {"options": "-c synchronous_commit=off"}
            return create_engine(url, future=True, pool_pre_ping=True, connect_args=opts)
        engine = create_engine(url, future=True)

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _rec: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.close()

        return engine

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _session_tx(self) -> Iterator[Connection]:
        with self._session_engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
        self._session_engine.dispose()

    # ---------------------------------------------------------------- sessions
    def add_session(self, s: Session) -> None:
        with self._session_tx() as c:
            c.execute(
                insert(sessions).values(
                    id=s.id,
                    tee=s.tee,
                    nonce=s.nonce,
                    extra_params=json.dumps(s.extra_params),
                    expires_at=s.expires_at,
                )
            )

    def get_session(self, sid: str) -> Session | None:
        with self.tx() as c:
            return _read_session(c, sid)

    def session_and_document(self, sid: str | None, name: str) -> tuple[Session | None, str | None]:
        """A session (when ``sid`` is given) and a named document, in one transaction (the
        key broker's resource request reads both)."""
        with self.tx() as c:
            s = _read_session(c, sid) if sid else None
            body = c.execute(select(documents.c.body).where(documents.c.name == name)).scalar()
        return s, (str(body) if body is not None else None)

    def attest_session(
        self,
        sid: str,
        token: str,
        claims: dict[str, Any],
        tee_pubkey: dict[str, Any],
        at: datetime,
    ) -> bool:
        """Mark an un-attested session attested; False if another request did first."""
        with self._session_tx() as c:
            res = c.execute(
                update(sessions)
                .where(sessions.c.id == sid, sessions.c.token.is_(None))
                .values(
                    token=token,
                    claims=json.dumps(claims),
                    tee_pubkey=json.dumps(tee_pubkey),
                    attested_at=at,
                )
            )
            return bool(res.rowcount == 1)

    def delete_session(self, sid: str) -> None:
        with self.tx() as c:
            c.execute(delete(sessions).where(sessions.c.id == sid))

    def purge_sessions(self, now: datetime) -> int:
        with self.tx() as c:
            return int(c.execute(delete(sessions).where(sessions.c.expires_at < now)).rowcount)

    # ---------------------------------------------------------------- documents
    def put_document(self, name: str, body: str, now: datetime) -> None:
        with self.tx() as c:
            c.execute(delete(documents).where(documents.c.name == name))
            c.execute(insert(documents).values(name=name, body=body, updated_at=now))

    def get_document(self, name: str) -> str | None:
        with self.tx() as c:
            return c.execute(select(documents.c.body).where(documents.c.name == name)).scalar()

    def list_documents(self, prefix: str) -> list[str]:
        with self.tx() as c:
            rows = c.execute(
                select(documents.c.name).where(documents.c.name.startswith(prefix))
            ).scalars()
            return sorted(str(r) for r in rows)

    # ---------------------------------------------------------------- reference values
    def put_reference_value(self, name: str, value: Any, expires_at: datetime | None) -> None:
        with self.tx() as c:
            c.execute(delete(reference_values).where(reference_values.c.name == name))
            c.execute(
                insert(reference_values).values(
                    name=name, value=json.dumps(value), expires_at=expires_at
                )
            )

    def reference_values(self, now: datetime) -> dict[str, Any]:
        """Reference values not expired at ``now`` (expired ones are never served)."""
        with self.tx() as c:
            return _split_reference_values(c, now)[0]

    def expired_reference_values(self, now: datetime) -> dict[str, datetime]:
        with self.tx() as c:
            return _split_reference_values(c, now)[1]

    def appraisal_inputs(
        self,
        policy_doc: str,
        now: datetime,
        *,
        nonce: str | None = None,
        session_id: str | None = None,
    ) -> AppraisalInputs:
        """The policy's text, the reference values (live and expired), the session
        ``session_id`` names and, when ``nonce`` is given, its consumption, in one
        transaction instead of four. The nonce is spent only
        when the policy exists (as before: a request naming an unknown policy does not burn
        it) and by the same single ``UPDATE ... WHERE used = false`` as
        :meth:`consume_nonce`, durable, so it stays single-use across replicas."""
        with self.tx() as c:
            session = _read_session(c, session_id) if session_id is not None else None
            text = c.execute(
                select(documents.c.body).where(documents.c.name == policy_doc)
            ).scalar()
            if text is None:
                return AppraisalInputs(None, {}, {}, None, session)
            live, expired = _split_reference_values(c, now)
            ok = _consume_nonce(c, nonce, now) if nonce is not None else None
            return AppraisalInputs(str(text), live, expired, ok, session)

    # ---------------------------------------------------------------- nonces
    def add_nonce(self, nonce: str, expires_at: datetime) -> None:
        with self.tx() as c:
            c.execute(insert(nonces).values(nonce=nonce, expires_at=expires_at, used=False))

    def consume_nonce(self, nonce: str, now: datetime) -> bool:
        """Single use across replicas: only one UPDATE can flip ``used``."""
        try:
            with self.tx() as c:
                return _consume_nonce(c, nonce, now)
        except IntegrityError:
            return False


def _read_session(c: Connection, sid: str) -> Session | None:
    row = c.execute(select(sessions).where(sessions.c.id == sid)).mappings().first()
    if row is None:
        return None
    return Session(
        id=row["id"],
        tee=row["tee"],
        nonce=row["nonce"],
        extra_params=json.loads(row["extra_params"]),
        expires_at=_aware(row["expires_at"]) or datetime.min.replace(tzinfo=UTC),
        token=row["token"],
        claims=json.loads(row["claims"]) if row["claims"] else None,
        tee_pubkey=json.loads(row["tee_pubkey"]) if row["tee_pubkey"] else None,
        attested_at=_aware(row["attested_at"]),
    )


def _consume_nonce(c: Connection, nonce: str, now: datetime) -> bool:
    res = c.execute(
        update(nonces)
        .where(nonces.c.nonce == nonce, nonces.c.used.is_(False))
        .where(nonces.c.expires_at > now)
        .values(used=True)
    )
    return bool(res.rowcount == 1)


def _split_reference_values(
    c: Connection, now: datetime
) -> tuple[dict[str, Any], dict[str, datetime]]:
    """One read of the reference values: (live at ``now``, expired with their expiry)."""
    live: dict[str, Any] = {}
    expired: dict[str, datetime] = {}
    for r in c.execute(select(reference_values)).mappings().all():
        exp = _aware(r["expires_at"])
        if exp is None or exp > now:
            live[r["name"]] = json.loads(r["value"])
        else:
            expired[r["name"]] = exp
    return live, expired


class SqlResourceStore:
    """The default :class:`~sealroom.kbs.seams.ResourceStore`: bytes in the KBS's database."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, path: ResourcePath) -> bytes | None:
        with self._store.tx() as c:
            v = c.execute(select(resources.c.value).where(resources.c.path == str(path))).scalar()
        return bytes(v) if v is not None else None

    def put(self, path: ResourcePath, value: bytes) -> None:
        now = datetime.now(UTC)
        with self._store.tx() as c:
            c.execute(delete(resources).where(resources.c.path == str(path)))
            c.execute(insert(resources).values(path=str(path), value=value, updated_at=now))

    def delete(self, path: ResourcePath) -> bool:
        with self._store.tx() as c:
            return bool(c.execute(delete(resources).where(resources.c.path == str(path))).rowcount)

    def list(self) -> list[ResourcePath]:
        with self._store.tx() as c:
            rows = c.execute(select(resources.c.path)).scalars().all()
        return sorted((ResourcePath.parse(str(r)) for r in rows), key=str)
