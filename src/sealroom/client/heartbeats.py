"""Where a verifier's heartbeats go (docs/adr/0033): a 0600 JSONL file holding one chain,
and the transparency log.

``HeartbeatSink`` is what ``AttestationMonitor`` calls: ``publish`` (the log; a failure
there makes the heartbeat not count) then ``write`` (the file line: the log payload as it
is, plus its ``log_index``). One file holds one chain from one signer: the file is
created exclusively, because a second run appending to it would start a new chain under
another key and every reader would (rightly) report the chain broken.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.client.tlog import LogClient
from sealroom.errors import InvalidInputError
from sealroom.protocol.service import heartbeat_log_payload
from sealroom.tlog.entries import Kind


class HeartbeatSink:
    def __init__(
        self,
        signer: Ed25519PrivateKey,
        path: Path | None = None,
        log: LogClient | None = None,
        show: Callable[[dict[str, Any], int | None], None] | None = None,
    ) -> None:
        self.signer = signer
        self.key_hex = signer.public_key().public_bytes_raw().hex()
        self.log = log
        self.show = show
        self._index: dict[int, int] = {}
        self._fd: int | None = None
        if path is not None:
            try:
                self._fd = os.open(
                    path,
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o600,
                )
            except FileExistsError as e:
                raise InvalidInputError(
                    f"heartbeat file {path} exists: each run starts a new chain with a new "
                    "key, so give a new file (keep the old one: it is the earlier record)",
                    code="heartbeat-file-exists",
                ) from e
            except OSError as e:
                raise InvalidInputError(f"cannot create heartbeat file {path}: {e}") from e

    @property
    def publish(self) -> Callable[[dict[str, Any]], None] | None:
        """The monitor's ``publish`` hook, or None when there is no log."""
        return self._publish if self.log is not None else None

    def _publish(self, signed: dict[str, Any]) -> None:
        assert self.log is not None
        appended = self.log.append(Kind.HEARTBEAT, heartbeat_log_payload(self.key_hex, signed))
        self._index[signed["payload"]["seq"]] = appended.index

    def write(self, signed: dict[str, Any]) -> None:
        """The monitor's ``on_heartbeat`` hook: one complete line per heartbeat."""
        line = heartbeat_log_payload(self.key_hex, signed)
        index = self._index.pop(signed["payload"]["seq"], None)
        if index is not None:
            line = {**line, "log_index": index}
        if self._fd is not None:
            os.write(self._fd, (json.dumps(line) + "\n").encode())
        if self.show is not None:
            self.show(signed["payload"], index)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
