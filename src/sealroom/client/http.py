"""The one HTTP client of the untrusted side (ADR 0016): CLI -> control plane and host
agent -> control plane both speak through :class:`ApiClient`.

On httpx: one connection pool per client (keep-alive, so a polling CLI or a heartbeating
agent reuses its connection), explicit timeouts, bounded retries with exponential
backoff and jitter for idempotent calls (GET, HEAD, PUT, DELETE) when the server could
not be reached or answered 502/503/504, and connection-level retries (nothing was sent)
for all. A problem+json answer becomes the error class the server raised
(``sealroom.errors.error_from_problem``), so an error keeps its class and exit code across
HTTP. JSON answers are parsed into the contract's pydantic models; one that does not
follow the contract is an ``UnavailableError`` (``bad-response``), never a crash.

One exception, uploads of sealed blobs (``upload``): the control plane may refuse one
from its path and headers (403, 413) while the body is still being sent, and httpx cannot
read an answer before it has sent the whole body. ``upload`` streams the file on a
standard-library connection and stops sending as soon as an answer arrives.

The pinned connection to an enclave (``client/enclave.py``) is not this either: it pins
the enclave's attested key on the standard library's ``ssl``.
"""

from __future__ import annotations

import http.client
import os
import secrets
import select
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from sealroom.errors import InvalidInputError, UnavailableError, error_from_problem

M = TypeVar("M", bound=BaseModel)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUS = frozenset({502, 503, 504})
CHUNK = 1 << 20
_jitter = secrets.SystemRandom()


CA_CERT_ENV = "SEALROOM_CA_CERT"


def tls_verify(ca_cert: Path | None) -> ssl.SSLContext | bool:
    """How an https control plane is checked: against exactly the certificate (or CA) in
    ``ca_cert``, else ``$SEALROOM_CA_CERT``, else the system's trust store. A file given
    is the only trust anchor: `sealroom up --tls` pins its self-signed certificate so."""
    path = ca_cert or (Path(os.environ[CA_CERT_ENV]) if os.environ.get(CA_CERT_ENV) else None)
    if path is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as e:
        raise InvalidInputError(f"CA certificate {path}: cannot load ({e})") from e


class ApiClient:
    """A base URL, an optional bearer credential and one pooled httpx client."""

    def __init__(
        self,
        base_url: str,
        credential: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        what: str = "control plane",
        ca_cert: Path | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(
                f"{what} URL must be http(s)://HOST:PORT, got {base_url!r}", code="invalid-url"
            )
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.retries = max(0, retries)
        self.backoff = backoff
        self.what = what
        verify = tls_verify(ca_cert)
        self._tls = verify if isinstance(verify, ssl.SSLContext) else None
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            verify=verify,
            # connection failures are retried for every method: nothing was sent
            transport=httpx.HTTPTransport(retries=self.retries, verify=verify),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -----------------------------------------------------------------------
    def _headers(self, headers: Mapping[str, str] | None, auth: bool) -> dict[str, str]:
        out = dict(headers or {})
        if auth and self.credential:
            out["Authorization"] = f"Bearer {self.credential}"
        return out

    def _send(
        self, method: str, build: Callable[[], httpx.Request], *, stream: bool = False
    ) -> httpx.Response:
        """Send with bounded retries for idempotent methods (a fresh request each time);
        raise the error class of a problem answer. A streamed success is returned unread."""
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = self._http.send(build(), stream=stream)
            except httpx.TransportError as e:
                if last:
                    raise UnavailableError(
                        f"{self.what} at {self.base_url} unreachable: {e}",
                        code="control-plane-unreachable",
                    ) from e
                self._sleep(attempt)
                continue
            if resp.status_code in RETRY_STATUS and not last:
                resp.close()
                self._sleep(attempt)
                continue
            if resp.status_code >= 400:
                body = resp.read() if stream else resp.content
                resp.close()
                raise self._error(resp.status_code, body, resp.headers.get("content-type", ""))
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, status: int, body: bytes, content_type: str) -> Exception:
        return error_from_problem(
            status, body, content_type, prefix=f"{self.what} answered {status}: "
        )

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * 2.0**attempt * _jitter.uniform(0.5, 1.0))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        hdrs = self._headers(headers, auth)
        return self._send(
            method,
            lambda: self._http.build_request(
                method, path, json=json, content=content, headers=hdrs
            ),
        )

    def model(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> M:
        """A JSON call whose answer is parsed into ``model`` (the contract's type)."""
        resp = self.request(method, path, json=json, headers=headers, auth=auth)
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as e:
            raise UnavailableError(
                f"{self.what} answer to {method} {path} does not follow the contract "
                f"({model.__name__}): {e.error_count()} problem(s), first: "
                f"{e.errors()[0]['loc']}: {e.errors()[0]['msg']}",
                code="bad-response",
            ) from e

    def download(
        self,
        path: str,
        sink: Path,
        *,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Headers:
        """GET streamed into ``sink`` in chunks (memory flat in the size); the headers."""
        hdrs = self._headers(headers, auth)
        resp = self._send(
            "GET", lambda: self._http.build_request("GET", path, headers=hdrs), stream=True
        )
        try:
            with sink.open("wb") as f:
                for chunk in resp.iter_bytes(CHUNK):
                    f.write(chunk)
        except httpx.TransportError as e:
            raise UnavailableError(
                f"{self.what}: download of {path} broke off: {e}", code="control-plane-unreachable"
            ) from e
        finally:
            resp.close()
        return resp.headers

    def upload(self, path: str, source: Path, *, headers: Mapping[str, str] | None = None) -> int:
        """PUT a file streamed from disk with its Content-Length; stops sending as soon as
        the server answers (a refusal from the headers alone). Returns the status."""
        parts = urlsplit(self.base_url)
        timeout = self._http.timeout.read or 30.0
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        hdrs = {**self._headers(headers, True), "Content-Length": str(source.stat().st_size)}
        try:
            conn.putrequest("PUT", parts.path.rstrip("/") + path)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            sock = conn.sock
            try:
                with source.open("rb") as f:
                    while not (sock and select.select([sock], [], [], 0)[0]):
                        chunk = f.read(CHUNK)
                        if not chunk:
                            break
                        conn.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed early: the answer says why
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError(
                f"{self.what} at {self.base_url} unreachable: {e}",
                code="control-plane-unreachable",
            ) from e
        finally:
            conn.close()
        if resp.status >= 400:
            raise self._error(resp.status, body, resp.getheader("content-type") or "")
        return resp.status
