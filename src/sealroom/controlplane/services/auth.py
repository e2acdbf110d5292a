"""Accounts, API keys, join tokens and agent credentials.

Every secret is random (32 bytes, base64url), shown once, and stored only as its SHA-256
hex; lookups go by hash. Revocation is a column read on every request, so it takes effect
at once. User keys and agent credentials are separate namespaces: each is refused by the
other's endpoints with 403 ``access-denied``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from sqlalchemy import func, select

from sealroom.controlplane.config import Settings
from sealroom.controlplane.store.db import Store
from sealroom.controlplane.store.models import Account, ApiKey, Host, JoinToken
from sealroom.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnauthenticatedError,
)
from sealroom.protocol.controlplane import (
    AGENT_CREDENTIAL_PREFIX,
    JOIN_TOKEN_PREFIX,
    USER_KEY_PREFIX,
)

log = logging.getLogger("sealroom.controlplane.auth")

Role = Literal["admin", "user"]


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


@dataclass(frozen=True)
class Principal:
    account_id: str
    name: str
    role: str
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AgentPrincipal:
    host_id: str
    name: str


class AuthService:
    ROLES: ClassVar[tuple[str, ...]] = ("admin", "user")

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def now(self) -> datetime:
        return self.settings.clock()

    # -- bootstrap ---------------------------------------------------------------------

    def bootstrap(self) -> str | None:
        """At first start (no account at all) create account "admin" with one key.
        Returns the key when it was generated here (to be shown once), else None."""
        with self.store.session() as s:
            self.store.serialize(s)
            if s.scalar(select(func.count()).select_from(Account)):
                return None
            given = self.settings.bootstrap_admin_key
            key = given or new_secret(USER_KEY_PREFIX)
            now = self.now()
            acc = Account(id=new_id("acc_"), name="admin", role="admin", created_at=now)
            s.add(acc)
            s.flush()
            s.add(
                ApiKey(
                    id=new_id("key_"),
                    account_id=acc.id,
                    key_hash=sha256_hex(key),
                    created_at=now,
                    revoked_at=None,
                )
            )
            log.info("bootstrap admin account created", extra={"account_id": acc.id})
            return None if given else key

    # -- authentication ----------------------------------------------------------------

    def authenticate_user(self, token: str | None) -> Principal:
        if not token:
            raise UnauthenticatedError("missing Authorization: Bearer <api key>")
        digest = sha256_hex(token)
        with self.store.session() as s:
            row = s.execute(
                select(ApiKey, Account)
                .join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.key_hash == digest)
            ).first()
            if row is None:
                if token.startswith(AGENT_CREDENTIAL_PREFIX) and s.scalar(
                    select(Host.id).where(Host.credential_hash == digest)
                ):
                    raise AccessDeniedError(
                        "an agent credential cannot call user endpoints",
                        code="access-denied",
                    )
                raise UnauthenticatedError("API key not recognised")
            key, acc = row[0], row[1]
            if key.revoked_at is not None:
                raise UnauthenticatedError(f"API key {key.id} was revoked")
            return Principal(acc.id, acc.name, acc.role, key.id)

    def authenticate_agent(self, token: str | None) -> AgentPrincipal:
        if not token:
            raise UnauthenticatedError("missing Authorization: Bearer <agent credential>")
        digest = sha256_hex(token)
        with self.store.session() as s:
            host = s.scalar(select(Host).where(Host.credential_hash == digest))
            if host is None:
                if s.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)):
                    raise AccessDeniedError(
                        "a user API key cannot call agent endpoints", code="access-denied"
                    )
                raise UnauthenticatedError("agent credential not recognised")
            return AgentPrincipal(host.id, host.name)

    # -- accounts and keys -------------------------------------------------------------

    @staticmethod
    def require_admin(actor: Principal) -> None:
        if not actor.is_admin:
            raise AccessDeniedError(
                f"account {actor.name!r} has role {actor.role!r}; this needs role 'admin'",
                code="access-denied",
            )

    def create_account(self, actor: Principal, name: str, role: str) -> Account:
        self.require_admin(actor)
        if role not in self.ROLES:
            raise InvalidInputError(f"role: {role!r} is not 'admin' or 'user'")
        with self.store.session() as s:
            if s.scalar(select(Account.id).where(Account.name == name)):
                raise ConflictError(f"account name {name!r} is taken", code="account-exists")
            acc = Account(id=new_id("acc_"), name=name, role=role, created_at=self.now())
            s.add(acc)
        log.info("account created", extra={"account_id": acc.id, "by": actor.account_id})
        return acc

    def list_accounts(self, actor: Principal) -> list[Account]:
        """Every account for an admin; a user's own for a user."""
        with self.store.session() as s:
            q = select(Account).order_by(Account.created_at, Account.name)
            if not actor.is_admin:
                q = q.where(Account.id == actor.account_id)
            return list(s.scalars(q).all())

    def create_key(self, actor: Principal, account_id: str) -> tuple[str, str]:
        if not actor.is_admin and actor.account_id != account_id:
            raise NotFoundError(f"account {account_id} not found", code="account-not-found")
        with self.store.session() as s:
            if s.get(Account, account_id) is None:
                raise NotFoundError(f"account {account_id} not found", code="account-not-found")
            key = new_secret(USER_KEY_PREFIX)
            kid = new_id("key_")
            s.add(
                ApiKey(
                    id=kid,
                    account_id=account_id,
                    key_hash=sha256_hex(key),
                    created_at=self.now(),
                    revoked_at=None,
                )
            )
        log.info("api key created", extra={"key_id": kid, "account_id": account_id})
        return kid, key

    def revoke_key(self, actor: Principal, key_id: str) -> None:
        with self.store.session() as s:
            key = s.get(ApiKey, key_id)
            if key is None or (not actor.is_admin and key.account_id != actor.account_id):
                raise NotFoundError(f"API key {key_id} not found", code="key-not-found")
            if key.revoked_at is None:
                key.revoked_at = self.now()
        log.info("api key revoked", extra={"key_id": key_id, "by": actor.account_id})

    # -- join tokens -------------------------------------------------------------------

    def create_join_token(self, actor: Principal) -> tuple[str, datetime]:
        self.require_admin(actor)
        token = new_secret(JOIN_TOKEN_PREFIX)
        now = self.now()
        expires = now + timedelta(seconds=self.settings.join_token_ttl)
        with self.store.session() as s:
            s.add(
                JoinToken(
                    id=new_id("jt_"),
                    token_hash=sha256_hex(token),
                    created_by=actor.account_id,
                    created_at=now,
                    expires_at=expires,
                    used_at=None,
                    host_id=None,
                )
            )
        return token, expires
