"""``SealroomCCManager``: NVFlare's ``CCManager`` with sealroom's core deciding, not a shutdown.

NVFlare's ``CCManager`` calls ``_shutdown_system`` on every CC failure: a client whose token
fails at registration shuts the whole federation down. This subclass keeps NVFlare's flow
(tokens at registration, the periodic cross-site check, the check before the first job)
and feeds every verdict of its ``SealroomAuthorizer`` into a
:class:`~sealroom.federation.core.FederationCore`, whose failure policy (``on_failure``)
decides:

A client that cannot verify the server leaves, whatever the policy (NVFlare's behaviour:
it must not work with an unverified server).

- ``exclude`` (default): a client refused at registration is refused alone (the server
  answers its registration UNAUTHENTICATED); a site refused later is excluded from job
  deployment (its resource check is answered "not available", so NVFlare's scheduler
  deploys the job to the others while they meet the job's ``min_sites``, and holds it
  otherwise); the federation keeps running;
- ``pause``: as exclude at registration; a job whose participants include an excluded site
  is held (not scheduled) until that site verifies again;
- ``stop``: NVFlare's own behaviour (shut down).

It overrides a private method of NVFlare 2.9.0 (pinned by the ``nvflare`` extra); the
POC-mode test fails if NVFlare changes it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_exception import NotAuthenticated
from nvflare.apis.server_engine_spec import ServerEngineSpec
from nvflare.app_opt.confidential_computing.cc_manager import CCManager

from sealroom.federation.core import (
    Decision,
    Exclude,
    FailurePolicy,
    FederationCore,
    PeerRefused,
    PeerVerified,
    SiteStatus,
)
from sealroom.integrations.nvflare.authorizer import SealroomAuthorizer, Verdict

log = logging.getLogger(__name__)


class SealroomCCManager(CCManager):  # type: ignore[misc]  # nvflare ships no type hints
    def __init__(self, *args: Any, on_failure: str = "exclude", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_failure = FailurePolicy(on_failure)
        self._event = threading.local()
        self._core_lock = threading.Lock()
        self.core: FederationCore | None = None
        self._rng = random.SystemRandom()

    # ---- NVFlare events -----------------------------------------------------------------
    def handle_event(self, event_type: str, fl_ctx: Any) -> None:
        self._event.name = event_type
        try:
            super().handle_event(event_type, fl_ctx)
            if event_type == EventType.SYSTEM_BOOTSTRAP:
                self._attach()
            elif event_type == EventType.BEFORE_CHECK_CLIENT_RESOURCES:
                self._hold_paused_job(fl_ctx)
            elif event_type == EventType.AFTER_CHECK_CLIENT_RESOURCES:
                self._exclude_from_deployment(fl_ctx)
        finally:
            self._event.name = None

    def _shutdown_system(self, reason: str, fl_ctx: Any) -> None:
        if self.on_failure is FailurePolicy.STOP:
            super()._shutdown_system(reason, fl_ctx)
            return
        event = getattr(self._event, "name", None)
        on_server = isinstance(fl_ctx.get_engine(), ServerEngineSpec)
        if not on_server and (
            event == EventType.AFTER_CLIENT_REGISTER or self._server_name() in self.excluded()
        ):
            # A client that cannot verify its server declines it: it leaves (NVFlare's
            # behaviour for a client), it does not work with an unverified server.
            super()._shutdown_system(reason, fl_ctx)
            return
        if event == EventType.CLIENT_REGISTER_RECEIVED:
            log.error("sealroom: refusing the registering client (%s): %s", self.on_failure, reason)
            raise NotAuthenticated(f"sealroom: {reason}")
        log.error(
            "sealroom: CC check failed (%s): %s; the federation keeps running",
            self.on_failure,
            reason,
        )

    def _server_name(self) -> str:
        # NVFlare names the server "server" in cc_enabled_sites (CCBuilder does the same).
        return "server"

    # ---- the core -----------------------------------------------------------------------
    def _attach(self) -> None:
        peers = sorted(set(self.cc_enabled_sites) - {self.site_name})
        self.core = FederationCore(
            peers,
            min_participants=1,
            interval=max(1, int(self.cross_validation_interval)),
            on_failure=self.on_failure,
        )
        for verifier in self.cc_verifiers.values():
            if isinstance(verifier, SealroomAuthorizer):
                verifier.listeners.append(self._on_verdict)

    def _on_verdict(self, verdict: Verdict) -> None:
        core = self.core
        if core is None or verdict.site is None or verdict.site == self.site_name:
            return
        now = int(time.time())
        with self._core_lock:
            try:
                if verdict.ok:
                    decisions = core.handle(
                        PeerVerified(verdict.site, now, verdict.expires_at, self._rng.random())
                    )
                else:
                    decisions = core.handle(
                        PeerRefused(verdict.site, now, verdict.code, verdict.detail)
                    )
            except KeyError:
                log.warning("sealroom: verdict on %s, not a CC-enabled site", verdict.site)
                return
        self._log_decisions(decisions)

    def _log_decisions(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Exclude):
                log.error(
                    "sealroom: %s excludes site %s: %s: %s",
                    self.site_name,
                    d.site,
                    d.code,
                    d.reason,
                )
            else:
                log.info("sealroom: %s: %s", self.site_name, d)

    def excluded(self) -> dict[str, str]:
        """Sites the core currently excludes, with the refusal."""
        core = self.core
        if core is None:
            return {}
        with self._core_lock:
            return {
                s: core.refusal(s) or ""
                for s in set(self.cc_enabled_sites) - {self.site_name}
                if core.status(s) is SiteStatus.EXCLUDED
            }

    def _hold_paused_job(self, fl_ctx: Any) -> None:
        if self.on_failure is not FailurePolicy.PAUSE:
            return
        participants = fl_ctx.get_prop(FLContextKey.JOB_PARTICIPANTS) or []
        bad = {s: r for s, r in self.excluded().items() if s in participants}
        if bad:
            fl_ctx.set_prop(
                key=FLContextKey.JOB_BLOCK_REASON,
                value=f"sealroom: paused until {sorted(bad)} verify again",
                sticky=False,
                private=True,
            )

    def _exclude_from_deployment(self, fl_ctx: Any) -> None:
        results = fl_ctx.get_prop(FLContextKey.RESOURCE_CHECK_RESULT)
        if not isinstance(results, dict):
            return
        for site, refusal in self.excluded().items():
            if site in results:
                # The scheduler deploys only to sites whose check passed, and holds the job
                # when fewer than its min_sites remain. Not NVFlare's CC_VERIFY_ERROR prefix:
                # that one makes CCManager shut the federation down.
                results[site] = (False, f"sealroom: CC refused: {refusal}")
                log.error("sealroom: job not deployed to %s: %s", site, refusal)
