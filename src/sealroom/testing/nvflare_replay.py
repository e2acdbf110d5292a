"""A misbehaving NVFlare site for the plugin's POC test: it replays its first token.

Stands in for an attacker who captured a site's token and presents it again. Never wired by
production code.
"""

from __future__ import annotations

from sealroom.integrations.nvflare.authorizer import SealroomAuthorizer


class ReplayingAuthorizer(SealroomAuthorizer):
    _first: str | None = None

    def generate(self) -> str:
        if self._first is None:
            self._first = super().generate()
        return self._first
