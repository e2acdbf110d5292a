"""Continuous attestation of a running service (docs/adr/0033).

``AttestationMonitor`` re-attests the enclave behind a ``ServiceClient`` every ``period``
seconds and whenever ``trigger()`` is called, each time with a fresh nonce it chooses,
verifies the evidence with the owner's policy (and spec), and records a signed heartbeat
(``HeartbeatRecord``, Ed25519 over ``HEARTBEAT_DOMAIN || JCS(record)``, chained by
``prev``). The enclave is *trusted* only while the last heartbeat verified, was made for
the keys first pinned (a restarted enclave has new keys: a new enclave, never silently
accepted) and is younger than ``period * grace``. Any failure, or no good heartbeat in
time, makes it untrusted at once: ``on_untrusted(reason)`` (e.g. the agent relay's
``close_gate``: fail closed) and an event; a later good heartbeat for the same keys calls
``on_trusted()``.

``publish(signed)``, when given, records each heartbeat where others can audit it (the
transparency log, ``POST /api/v1/log/entries``) before it counts: a heartbeat that cannot
be published is not a recorded heartbeat, so a good one that fails to publish leaves the
enclave untrusted (``heartbeat-unlogged``) and the next period tries again.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.client.service import ServiceClient
from sealroom.crypto.signing import signed_json
from sealroom.errors import SealroomError
from sealroom.protocol.service import HEARTBEAT_DOMAIN, HeartbeatRecord, heartbeat_hash

log = logging.getLogger(__name__)

DEFAULT_GRACE = 2.0


class AttestationMonitor:
    def __init__(
        self,
        client: ServiceClient,
        signer: Ed25519PrivateKey,
        *,
        period: float,
        grace: float = DEFAULT_GRACE,
        on_heartbeat: Callable[[dict[str, Any]], None] | None = None,
        on_untrusted: Callable[[str], None] | None = None,
        on_trusted: Callable[[], None] | None = None,
        publish: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if period <= 0 or grace < 1:
            raise ValueError("period must be > 0 and grace >= 1")
        self.client = client
        self.signer = signer
        self.period = period
        self.grace = grace
        self.on_heartbeat = on_heartbeat
        self.on_untrusted = on_untrusted
        self.on_trusted = on_trusted
        self.publish = publish
        self.clock = clock
        self.pinned_keys: str | None = None
        self.trusted = False
        self.untrusted_reason = "not attested yet"
        self.last_good: datetime | None = None
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._chain_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    # ---- one heartbeat --------------------------------------------------------------
    def beat(self) -> dict[str, Any]:
        """Attest once, now, with a fresh nonce; record and return the signed heartbeat."""
        nonce = secrets.token_bytes(32)
        fields: dict[str, Any] = {"nonce": nonce.hex(), "ok": False}
        try:
            attested = self.client.attest(nonce)
            keys = attested.keys.digest.hex()
            fields.update(
                spec_hash=attested.spec_hash.hex(),
                keys_digest=keys,
                policy_id=attested.appraisal.policy_id,
                simulated=attested.simulated,
            )
            if self.pinned_keys is None:
                self.pinned_keys = keys
            if keys != self.pinned_keys:
                fields["reason"] = (
                    "enclave-keys-changed: the service answers with other keys than the "
                    "enclave first attested (restarted or replaced)"
                )
            else:
                fields["ok"] = True
        except SealroomError as e:
            fields["reason"] = f"{e.code}: {e.message}"[:500]
        return self._record(fields)

    def _record(self, fields: dict[str, Any]) -> dict[str, Any]:
        # Two locks: the chain (signing, publishing: may wait on the log) and the verdict
        # (quick), so a hung log never keeps the watchdog from failing the enclave.
        with self._chain_lock:
            now = self.clock()
            record = HeartbeatRecord(
                subject=self.client.url,
                seq=len(self.records),
                time=now.isoformat(),
                prev=heartbeat_hash(self.records[-1]) if self.records else "",
                **fields,
            )
            signed = signed_json(record.model_dump(mode="json"), self.signer, HEARTBEAT_DOMAIN)
            self.records.append(signed)
            ok, reason = record.ok, record.reason
            if self.publish is not None:
                try:
                    self.publish(signed)
                except SealroomError as e:
                    if ok:
                        ok, reason = False, f"heartbeat-unlogged: {e.code}: {e.message}"[:500]
            took = (self.clock() - now).total_seconds()
            if ok and took > self.period * self.grace:
                # published so late that the watchdog may already have failed the enclave:
                # evidence that old must not reopen the gate
                ok, reason = False, f"heartbeat-late: recorded {took:.0f} s after it was made"
            with self._lock:
                was = self.trusted
                if ok:
                    self.trusted, self.untrusted_reason, self.last_good = True, "", now
                else:
                    self.trusted, self.untrusted_reason = False, reason
            if self.on_heartbeat is not None:
                self.on_heartbeat(signed)
        if ok and not was and self.on_trusted is not None:
            self.on_trusted()
        if not ok:
            self._untrusted(reason)
        return signed

    def _untrusted(self, reason: str) -> None:
        log.warning("service %s untrusted: %s", self.client.url, reason)
        if self.on_untrusted is not None:
            self.on_untrusted(reason)

    def check_missed(self) -> bool:
        """Untrusted if no good heartbeat for ``period * grace``; True if it just failed."""
        now = self.clock()
        with self._lock:
            last = self.last_good
            late = (
                self.trusted
                and last is not None
                and (now - last).total_seconds() > self.period * self.grace
            )
            reason = f"heartbeat-missed: no verified heartbeat since {last}"
            if late:
                self.trusted, self.untrusted_reason = False, reason
        if late:
            self._untrusted(reason)  # at once, before the record (which may wait on the log)
            self._record({"nonce": "", "ok": False, "reason": reason})
        return late

    # ---- the loop -------------------------------------------------------------------
    def trigger(self) -> None:
        """Re-attest now (on demand), not at the next period."""
        self._wake.set()

    def start(self) -> AttestationMonitor:
        self._thread = threading.Thread(target=self._loop, name="sealroom-attest", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(
            target=self._watch, name="sealroom-attest-wd", daemon=True
        )
        self._watchdog.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._wake.wait(self.period)
            self._wake.clear()

    def _watch(self) -> None:
        # A hung attestation (the enclave stopped answering) blocks beat(); the watchdog
        # still fails the enclave when the period passes without a good heartbeat.
        while not self._stop.wait(min(1.0, self.period / 4)):
            self.check_missed()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in (self._thread, self._watchdog):
            if t is not None:
                t.join(timeout=60)
