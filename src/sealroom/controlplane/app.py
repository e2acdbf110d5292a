"""The FastAPI application factory: ``create_app(settings)``.

The control plane's services are built (and migrations run, and the bootstrap admin key
made) when the app is created; the lifespan runs the background task that detects lost
hosts and places queued computations every ``tick_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sealroom.controlplane import web
from sealroom.controlplane.api import agent, compute, models, tlog, users
from sealroom.controlplane.config import Settings
from sealroom.controlplane.state import ControlPlane
from sealroom.controlplane.store.models import Computation, Host
from sealroom.errors import SealroomError, to_problem
from sealroom.protocol.lifecycle import STATES

log = logging.getLogger("sealroom.controlplane")
PROBLEM = "application/problem+json"


def problem(
    status: int, type_: str, detail: str, error: SealroomError | None = None
) -> JSONResponse:
    """A problem+json answer; for a SealroomError with the ``error`` member that lets every
    client rebuild its class (``sealroom.errors.to_problem``, ADR 0016)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    doc: dict[str, object] = (
        to_problem(error, status, title)
        if error is not None
        else {"type": type_, "title": title, "status": status, "detail": detail}
    )
    return JSONResponse(
        doc,
        status_code=status,
        media_type=PROBLEM,
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "request"


class _StoreCollector(Collector):
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def collect(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "sealroom_computations", "Computations by state", labels=["state"]
        )
        hosts = GaugeMetricFamily("sealroom_hosts", "Hosts by state", labels=["state"])
        try:
            with self.cp.store.session() as s:
                counts: dict[str, int] = {
                    st: int(n)
                    for st, n in s.execute(
                        select(Computation.state, func.count()).group_by(Computation.state)
                    )
                }
                hcounts: dict[str, int] = {
                    st: int(n)
                    for st, n in s.execute(select(Host.state, func.count()).group_by(Host.state))
                }
        except Exception:  # a scrape must not fail because the DB blinked
            log.exception("metrics: store unavailable")
            return
        for state in STATES:
            by_state.add_metric([state.value], counts.get(state, 0))
        for st in ("online", "lost"):
            hosts.add_metric([st], hcounts.get(st, 0))
        yield by_state
        yield hosts
        online = GaugeMetricFamily("sealroom_hosts_online", "Hosts online")
        online.add_metric([], hcounts.get("online", 0))
        yield online


def _announce_bootstrap_key(settings: Settings, key: str) -> None:
    path = Path(settings.data_dir) / "bootstrap-admin-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    if not settings.print_bootstrap_key:
        return
    # The key goes to a terminal only: stderr redirected to a file (a service manager,
    # `sealroom up`) would leave it in a log that other users or backups may read.
    if sys.stderr.isatty():
        print(
            f"sealroom control plane: bootstrap admin API key (shown once, also in {path}):\n"
            f"  {key}",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            f"sealroom control plane: bootstrap admin API key written to {path} (mode 0600)",
            file=sys.stderr,
            flush=True,
        )


def create_app(settings: Settings) -> FastAPI:
    compute.verification_service(settings.attestation_service)  # a bad URL is refused at start
    cp = ControlPlane(settings)
    if cp.bootstrap_key is not None:
        _announce_bootstrap_key(settings, cp.bootstrap_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if settings.tick_interval > 0:
            task = asyncio.create_task(_ticker(cp, settings.tick_interval))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            cp.close()

    app = FastAPI(
        title="sealroom control plane",
        version="1",
        description="Untrusted scheduler, relay and sealed-blob store for sealroom enclaves.",
        lifespan=lifespan,
        # served by web.install from the installed packages' assets, never a CDN
        docs_url=None,
        redoc_url=None,
    )
    app.state.cp = cp

    registry = CollectorRegistry()
    latency = Histogram(
        "sealroom_api_request_seconds",
        "API request latency",
        ["method", "route", "status"],
        registry=registry,
    )
    placements = Counter("sealroom_placements", "Computations placed on a host", registry=registry)
    cp.computations.metrics.placements = placements
    registry.register(_StoreCollector(cp))
    app.state.registry = registry

    @app.exception_handler(SealroomError)
    async def sealroom_error(request: Request, e: SealroomError) -> Response:
        status = e.http_status if 400 <= e.http_status < 600 else 500
        if web.wants_html(request):
            return await run_in_threadpool(web.error_page, request, e, status)
        return problem(status, e.code, e.message, e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        msgs = [f"{_loc(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in e.errors()]
        return problem(400, "invalid-input", "; ".join(msgs[:10]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(e.status_code, "http-error")
        return problem(e.status_code, slug, str(e.detail))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, e: Exception) -> JSONResponse:
        log.error("internal error", exc_info=e)
        return problem(500, "internal-error", "internal error; see the control plane's log")

    app.add_middleware(_BodyLimit, limit=MAX_JSON_BODY)
    app.add_middleware(_Observe, latency=latency)
    app.include_router(users.router)
    app.include_router(agent.router)
    app.include_router(compute.router)
    app.include_router(models.router)
    web.install(app, cp)
    app.include_router(tlog.router)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if settings.metrics_token:
            given = request.headers.get("authorization", "")
            want = f"Bearer {settings.metrics_token}"
            if not hmac.compare_digest(given.encode(), want.encode()):
                return problem(401, "unauthenticated", "/metrics needs its bearer token")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


MAX_JSON_BODY = 4 << 20  # manifests and API calls; blob uploads are exempt (streamed)


class _BodyLimit:
    """Pure ASGI middleware: request bodies other than agent blob uploads must declare a
    Content-Length of at most ``limit`` bytes (413 / 411 as problem+json otherwise), so a
    client cannot make the control plane buffer an unbounded JSON document."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "DELETE"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path.startswith("/api/v1/agent/computations/") and "/blobs/" in path:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        status, slug, detail = 0, "", ""
        if length is None and chunked:
            status, slug, detail = 411, "length-required", "a Content-Length is required"
        elif length is not None and (not length.isdigit() or int(length) > self.limit):
            status, slug = 413, "payload-too-large"
            detail = (
                f"request body is {length.decode(errors='replace')} bytes, at most {self.limit}"
            )
        if not status:
            await self.app(scope, receive, send)
            return
        response = problem(status, slug, detail)
        await response(scope, receive, send)


QUIET_ROUTES = frozenset(
    {"/api/v1/agent/heartbeat", "/metrics", "/healthz", "/ui/computations/{cid}/live"}
)


class _Observe:
    """Pure ASGI middleware: request latency histogram and one JSON log line per request
    (method, route template, status, ms; never headers, so never credentials)."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            dt = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.latency.labels(method, route, str(status)).observe(dt)
            # periodic traffic (heartbeats every few seconds per host, scrapes, the
            # dashboard's polling) at debug, unless it failed: the info log stays readable
            level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "ms": round(dt * 1000, 2),
                    },
                )


async def _ticker(cp: ControlPlane, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(cp.tick)
        except Exception:
            log.exception("background tick failed")
