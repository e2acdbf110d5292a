"""``SealroomCCManager``: NVFlare's ``CCManager`` with a failure policy, not a shutdown.

NVFlare's ``CCManager`` calls ``_shutdown_system`` on every CC failure: a client whose token
fails at registration shuts the whole federation down. This subclass applies
``sealroom.federation.core.FailurePolicy`` instead:

- ``exclude`` (default) / ``pause``: a client refused at registration is refused alone (the
  server answers its registration UNAUTHENTICATED); a failure found by the periodic
  cross-site check is logged with the failing sites and the federation keeps running;
- ``stop``: NVFlare's own behaviour (shut down).

It overrides one private method of NVFlare 2.9.0 (pinned by the ``nvflare`` extra); the
POC-mode test fails if NVFlare changes it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_exception import NotAuthenticated
from nvflare.app_opt.confidential_computing.cc_manager import CCManager

from sealroom.federation.core import FailurePolicy

log = logging.getLogger(__name__)


class SealroomCCManager(CCManager):  # type: ignore[misc]  # nvflare ships no type hints
    def __init__(self, *args: Any, on_failure: str = "exclude", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_failure = FailurePolicy(on_failure)
        self._event = threading.local()
        self.refusals: list[str] = []

    def handle_event(self, event_type: str, fl_ctx: Any) -> None:
        self._event.name = event_type
        try:
            super().handle_event(event_type, fl_ctx)
        finally:
            self._event.name = None

    def _shutdown_system(self, reason: str, fl_ctx: Any) -> None:
        if self.on_failure is FailurePolicy.STOP:
            super()._shutdown_system(reason, fl_ctx)
            return
        self.refusals.append(reason)
        if getattr(self._event, "name", None) == EventType.CLIENT_REGISTER_RECEIVED:
            log.error("sealroom: refusing the registering client (%s): %s", self.on_failure, reason)
            raise NotAuthenticated(f"sealroom: {reason}")
        log.error(
            "sealroom: CC check failed (%s): %s; the federation keeps running",
            self.on_failure,
            reason,
        )
