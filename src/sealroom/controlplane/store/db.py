"""Engine and session handling; migrations run at start.

SQLite (the default) runs in WAL mode with a busy timeout and foreign keys on; PostgreSQL
is used by URL (``postgresql://`` is mapped onto the psycopg 3 driver)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from sealroom.errors import InvalidInputError, UnavailableError

MIGRATIONS = "sealroom.controlplane.store:migrations"


def normalize_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql+psycopg://"):
        return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
    raise InvalidInputError(
        f"database URL: scheme {url.split(':', 1)[0]!r} is not supported "
        "(want sqlite:///PATH or postgresql://...)",
        code="invalid-config",
    )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as e:
        raise UnavailableError(f"database unreachable: {e.orig}", code="db-unavailable") from e


class Store:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception."""
        with self._sessions() as s, s.begin():
            yield s

    def serialize(self, s: Session) -> None:
        """Serialize placement across replicas sharing one PostgreSQL database (within
        one process a lock already does it)."""
        if self.is_postgres:
            s.execute(text("SELECT pg_advisory_xact_lock(5150)"))

    def dispose(self) -> None:
        self.engine.dispose()
