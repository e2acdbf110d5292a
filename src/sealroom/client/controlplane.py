"""Typed client for the control plane's REST API (see docs/adr/0013 and the CLI).

The control plane is untrusted: it schedules and stores ciphertext. Everything a party
relies on is checked here, on the party's side: the manifest hash is recomputed from the
party's own manifest, results are opened only after the receipt verified offline.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509

from sealroom import paths
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.client.enclave import RunLog, open_log, open_result, raise_run_failed
from sealroom.client.http import ApiClient
from sealroom.crypto.keys import PartyKeys
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnavailableError,
)
from sealroom.files import write_private
from sealroom.manifest import Manifest
from sealroom.protocol.api import (
    AccountOut,
    AccountsOut,
    ChallengeOut,
    ComputationCreated,
    ComputationDetail,
    ComputationOut,
    ComputationsOut,
    ComputeStatus,
    EventOut,
    EventsOut,
    HostChangedOut,
    HostOut,
    HostsOut,
    JoinTokenOut,
    KeyOut,
    MeOut,
    ModelOut,
    ModelsOut,
    PartyViewOut,
    StateOut,
)
from sealroom.protocol.enclave import H_CHALLENGE, H_RESULT_SHA256, H_SIGNATURE
from sealroom.protocol.receipt import VerifiedReceipt, verify_receipt
from sealroom.protocol.tlog import Appended as TlogAppended
from sealroom.protocol.tlog import RuntimeMeasurementIn


def config_path() -> Path:
    return paths.cli_config()


def load_config() -> tuple[str, str | None]:
    """(URL, API key) from SEALROOM_URL / SEALROOM_API_KEY, else $SEALROOM_HOME/config.json
    (written by `sealroom up` and `sealroom login`)."""
    url, key = os.environ.get("SEALROOM_URL"), os.environ.get("SEALROOM_API_KEY")
    if url is None or key is None:
        try:
            cfg = json.loads(config_path().read_text())
        except (OSError, ValueError):
            cfg = {}
        url = url or cfg.get("url")
        key = key or cfg.get("api_key")
    if not url:
        raise InvalidInputError(
            "no control plane configured: run `sealroom up`, or `sealroom login URL`, or "
            "set SEALROOM_URL and SEALROOM_API_KEY"
        )
    return str(url), key


def config_ca_cert() -> Path | None:
    """The certificate the CLI pinned for its control plane (`sealroom up --tls`,
    `sealroom login URL --ca-cert F`), if any."""
    if os.environ.get("SEALROOM_URL"):
        return None  # an explicitly configured URL: SEALROOM_CA_CERT, if set, applies
    try:
        ca = json.loads(config_path().read_text()).get("ca_cert")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(ca) if isinstance(ca, str) and ca else None


def save_config(url: str, api_key: str, ca_cert: Path | None = None) -> Path:
    """URL, key and (for an https control plane with its own certificate) the one
    certificate the CLI trusts for it."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc: dict[str, str] = {"url": url, "api_key": api_key}
    if ca_cert is not None:
        doc["ca_cert"] = str(Path(ca_cert).resolve())
    data = json.dumps(doc).encode()
    write_private(path, data, overwrite=True, what="CLI config")
    return path


class ControlPlaneClient(ApiClient):
    """The CLI's (and any party's) client of the control plane's user API; answers are
    the contract's models (``sealroom.protocol.api``)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        ca_cert: Path | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout=timeout, ca_cert=ca_cert)

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def api_key(self) -> str | None:
        return self.credential

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self.credential = value

    @classmethod
    def from_config(cls) -> ControlPlaneClient:
        url, key = load_config()
        return cls(url, key, ca_cert=config_ca_cert())

    # ---- accounts, hosts ----------------------------------------------------------------
    def me(self) -> MeOut:
        return self.model("GET", "/api/v1/me", MeOut)

    def create_account(self, name: str, role: str = "user") -> AccountOut:
        return self.model("POST", "/api/v1/accounts", AccountOut, json={"name": name, "role": role})

    def accounts(self) -> list[AccountOut]:
        return self.model("GET", "/api/v1/accounts", AccountsOut).accounts

    def create_key(self, account_id: str) -> KeyOut:
        return self.model("POST", f"/api/v1/accounts/{quote(account_id)}/keys", KeyOut)

    def revoke_key(self, key_id: str) -> None:
        self.request("DELETE", f"/api/v1/keys/{quote(key_id)}")

    def join_token(self) -> str:
        return self.model("POST", "/api/v1/hosts/join-tokens", JoinTokenOut).token

    def hosts(self) -> list[HostOut]:
        return self.model("GET", "/api/v1/hosts", HostsOut).hosts

    def register_model(self, spec: dict[str, Any]) -> ModelOut:
        return self.model("POST", "/api/v1/models", ModelOut, json=spec)

    def models(self) -> list[ModelOut]:
        return self.model("GET", "/api/v1/models", ModelsOut).models

    def drain_host(self, host: str, draining: bool = True) -> HostChangedOut:
        path = f"/api/v1/hosts/{quote(host, safe='')}/drain"
        return self.model("POST", path, HostChangedOut, json={"draining": draining})

    def remove_host(self, host: str) -> HostChangedOut:
        return self.model("DELETE", f"/api/v1/hosts/{quote(host, safe='')}", HostChangedOut)

    def compute_status(self) -> ComputeStatus:
        return self.model("GET", "/api/v1/compute/status", ComputeStatus)

    def healthy(self) -> bool:
        try:
            self.request("GET", "/healthz", auth=False)
            return True
        except SealroomError:
            return False

    # ---- computations --------------------------------------------------------------------
    def create_computation(
        self, manifest: dict[str, Any], *, tee: str = "sim", queue: bool = False
    ) -> ComputationCreated:
        body = {"manifest": manifest, "tee": tee, "queue": queue}
        return self.model("POST", "/api/v1/computations", ComputationCreated, json=body)

    def computations(self) -> list[ComputationOut]:
        return self.model("GET", "/api/v1/computations", ComputationsOut).computations

    def computation(self, cid: str) -> ComputationDetail:
        return self.model("GET", f"/api/v1/computations/{quote(cid)}", ComputationDetail)

    def cancel(self, cid: str) -> StateOut:
        return self.model("POST", f"/api/v1/computations/{quote(cid)}/cancel", StateOut)

    def delete(self, cid: str) -> None:
        self.request("DELETE", f"/api/v1/computations/{quote(cid)}")

    def events(self, cid: str, after: int = 0) -> list[EventOut]:
        path = f"/api/v1/computations/{quote(cid)}/events?after={after}"
        return self.model("GET", path, EventsOut).events

    def wait_for(
        self,
        cid: str,
        states: tuple[str, ...],
        timeout: float,
        on_event: Callable[[EventOut], None] | None = None,
    ) -> ComputationDetail:
        """Poll until the computation is in one of ``states`` (or final)."""
        deadline = time.monotonic() + timeout
        seq = 0

        def drain() -> None:
            nonlocal seq
            for ev in self.events(cid, seq):
                seq = max(seq, ev.seq)
                if on_event:
                    on_event(ev)

        while True:
            drain()
            comp = self.computation(cid)
            if comp.state in states or comp.state.final:
                # the state may have changed after the events were read: its own event is
                # written with it, so one more read shows what led there (a follower that
                # returned here would miss the final event)
                drain()
                return comp
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"computation {cid} is still {comp.state.value} after {timeout:.0f}s",
                    code="timeout",
                )
            time.sleep(0.3)

    # ---- results ------------------------------------------------------------------------------
    def _signed(self, cid: str, manifest: Manifest, party: PartyKeys) -> dict[str, str]:
        """Headers for one download of ``party``'s blobs: its signature over a fresh
        one-time challenge."""
        from sealroom.protocol.controlplane import result_request_message

        base = f"/api/v1/computations/{quote(cid)}"
        challenge = bytes.fromhex(
            self.model("GET", f"{base}/challenge", ChallengeOut, auth=False).challenge
        )
        sig = party.sign(
            result_request_message(cid, manifest.manifest_hash, party.public.name, challenge)
        )
        return {H_CHALLENGE: challenge.hex(), H_SIGNATURE: sig.hex()}

    def party_view(self, cid: str, manifest: Manifest, party: PartyKeys) -> PartyViewOut:
        """The computation's public state as a party named in ``manifest`` sees it: signed
        with its own key over a fresh challenge, no API key (docs/adr/0037)."""
        from sealroom.protocol.controlplane import party_view_message

        base = f"/api/v1/computations/{quote(cid)}"
        challenge = bytes.fromhex(
            self.model("GET", f"{base}/challenge", ChallengeOut, auth=False).challenge
        )
        name = party.public.name
        sig = party.sign(party_view_message(cid, manifest.manifest_hash, name, challenge))
        return self.model(
            "GET",
            f"{base}/party-view?party={quote(name)}",
            PartyViewOut,
            auth=False,
            headers={H_CHALLENGE: challenge.hex(), H_SIGNATURE: sig.hex()},
        )

    def _receipt_raw(self, cid: str, manifest: Manifest, party: PartyKeys) -> bytes:
        """The stored receipt as it is (unverified: ``fetch_receipt`` verifies it)."""
        return self.request(
            "GET",
            f"/api/v1/computations/{quote(cid)}/receipt",
            auth=False,
            headers=self._signed(cid, manifest, party),
        ).content

    def fetch_receipt(
        self,
        cid: str,
        manifest: Manifest,
        party: PartyKeys,
        *,
        policy: Policy | None = None,
        extra_roots: tuple[x509.Certificate, ...] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> VerifiedReceipt:
        """The receipt from the blob store (for a consumer or log reader), verified offline
        against the party's OWN manifest and policy."""
        raw = self._receipt_raw(cid, manifest, party)
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise AttestationError(f"receipt is not JSON: {e}", code="receipt-malformed") from e
        return verify_receipt(
            doc,
            manifest_hash=manifest.manifest_hash,
            algorithm_sha256=manifest.algorithm.sha256.hex(),
            dataset_sha256s={d.name: d.sha256.hex() for d in manifest.datasets},
            policy=policy or manifest.policy(),
            ctx=VerifyContext(now=clock(), extra_roots=extra_roots),
        )

    def publish_measurement(self, m: RuntimeMeasurementIn) -> TlogAppended:
        """Log a runtime measurement the operator offers (admin)."""
        return self.model(
            "POST", "/api/v1/log/runtime-measurements", TlogAppended, json=m.model_dump()
        )

    def receipt_bytes(
        self, cid: str, manifest: Manifest | None = None, party: PartyKeys | None = None
    ) -> tuple[bytes, str | None]:
        """The stored receipt's exact bytes and its C2SP tlog-proof (None if the log does
        not hold it), as the owner (API key) or, with ``party``, a consumer or log reader."""
        base = f"/api/v1/computations/{quote(cid)}/receipt"

        def headers() -> dict[str, str] | None:
            if party is None or manifest is None:
                return None
            return self._signed(cid, manifest, party)

        auth = party is None
        raw = self.request("GET", base, auth=auth, headers=headers()).content
        try:
            proof: str | None = self.request(
                "GET", f"{base}/tlog-proof", auth=auth, headers=headers()
            ).text
        except NotFoundError:
            proof = None
        return raw, proof

    def fetch_log(
        self,
        cid: str,
        manifest: Manifest,
        reader: PartyKeys,
        *,
        receipt: VerifiedReceipt | None = None,
        policy: Policy | None = None,
        extra_roots: tuple[x509.Certificate, ...] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> tuple[VerifiedReceipt, RunLog]:
        """The run log sealed to ``reader`` (a consumer or a log reader), checked against
        the verified receipt, decrypted."""
        if receipt is None:
            receipt = self.fetch_receipt(
                cid, manifest, reader, policy=policy, extra_roots=extra_roots, clock=clock
            )
        name = reader.public.name
        with tempfile.TemporaryDirectory(prefix="sealroom-log-") as tmp_s:
            sealed = Path(tmp_s) / "sealed"
            headers = self.download(
                f"/api/v1/computations/{quote(cid)}/logs/{quote(name)}",
                sealed,
                auth=False,
                headers=self._signed(cid, manifest, reader),
            )
            log = open_log(
                sealed=sealed,
                sealed_sha256=headers.get(H_RESULT_SHA256),
                receipt=receipt,
                reader=reader,
                manifest=manifest,
            )
        return receipt, log

    def fetch_result(
        self,
        cid: str,
        manifest: Manifest,
        consumer: PartyKeys,
        out_dir: Path,
        *,
        policy: Policy | None = None,
        extra_roots: tuple[x509.Certificate, ...] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> VerifiedReceipt:
        """Fetch the receipt and the consumer's sealed result from the blob store, verify
        the receipt offline against the party's OWN manifest and policy, then decrypt. A
        failed run raises RunFailedError carrying the decrypted run log."""
        receipt = self.fetch_receipt(
            cid, manifest, consumer, policy=policy, extra_roots=extra_roots, clock=clock
        )
        if not receipt.ok:
            raise_run_failed(
                receipt, lambda: self.fetch_log(cid, manifest, consumer, receipt=receipt)[1]
            )
        name = consumer.public.name
        with tempfile.TemporaryDirectory(prefix="sealroom-result-") as tmp_s:
            tmp = Path(tmp_s)
            sealed = tmp / "sealed"
            headers = self.download(
                f"/api/v1/computations/{quote(cid)}/results/{quote(name)}",
                sealed,
                auth=False,
                headers=self._signed(cid, manifest, consumer),
            )
            open_result(
                sealed=sealed,
                sealed_sha256=headers.get(H_RESULT_SHA256),
                receipt=receipt,
                consumer=consumer,
                manifest=manifest,
                out_dir=out_dir,
                tmp=tmp,
            )
        return receipt
