"""Dashboard sessions: an API key, given once at login, becomes a session cookie.

The cookie holds a random token (32 bytes); the store keeps only its SHA-256, the
account and the API key it came from. Every request re-reads the key, so revoking the key
ends its sessions at once, as it ends API access. The CSRF token of a session is
HMAC-SHA256(session token, domain): the server recomputes it from the cookie, a page of
another origin can read neither (docs/adr/0036).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from sealroom.controlplane.services.auth import (
    AuthService,
    Principal,
    new_id,
    sha256_hex,
)
from sealroom.controlplane.store.db import Store
from sealroom.controlplane.store.models import Account, ApiKey, WebSession
from sealroom.errors import UnauthenticatedError

CSRF_DOMAIN = b"sealroom/dashboard-csrf/v1"
SESSION_TTL = timedelta(hours=8)


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), CSRF_DOMAIN, hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(session_token), given or "")


@dataclass(frozen=True)
class WebPrincipal:
    principal: Principal
    session_id: str
    csrf: str


class SessionService:
    def __init__(self, store: Store, auth: AuthService) -> None:
        self.store = store
        self.auth = auth

    def login(self, api_key: str) -> tuple[str, Principal]:
        """Check the key exactly as the API does; returns (cookie token, principal)."""
        principal = self.auth.authenticate_user(api_key.strip())
        token = secrets.token_urlsafe(32)
        now = self.auth.now()
        with self.store.session() as s:
            s.add(
                WebSession(
                    id=new_id("ses_"),
                    token_hash=sha256_hex(token),
                    account_id=principal.account_id,
                    key_id=principal.key_id,
                    created_at=now,
                    expires_at=now + SESSION_TTL,
                )
            )
        return token, principal

    def authenticate(self, token: str | None) -> WebPrincipal:
        if not token:
            raise UnauthenticatedError("not logged in")
        now = self.auth.now()
        refused = ""
        with self.store.session() as s:
            row = s.execute(
                select(WebSession, ApiKey, Account)
                .join(ApiKey, ApiKey.id == WebSession.key_id)
                .join(Account, Account.id == WebSession.account_id)
                .where(WebSession.token_hash == sha256_hex(token))
            ).first()
            if row is None:
                raise UnauthenticatedError("session not recognised; log in again")
            ses, key, acc = row[0], row[1], row[2]
            if ses.expires_at <= now:
                refused = "session expired; log in again"
            elif key.revoked_at is not None:
                refused = f"API key {key.id} was revoked; log in again"
            if refused:  # deleted in this (committed) transaction, refused after it
                s.delete(ses)
            else:
                principal = Principal(acc.id, acc.name, acc.role, key.id)
                session_id = ses.id
        if refused:
            raise UnauthenticatedError(refused)
        return WebPrincipal(principal, session_id, csrf_token(token))

    def logout(self, token: str | None) -> None:
        if not token:
            return
        with self.store.session() as s:
            s.execute(delete(WebSession).where(WebSession.token_hash == sha256_hex(token)))
