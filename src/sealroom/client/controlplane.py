"""Typed client for the control plane's REST API (see docs/adr/0013 and the CLI).

The control plane is untrusted: it schedules and stores ciphertext. Everything a party
relies on is checked here, on the party's side: the manifest hash is recomputed from the
party's own manifest, results are opened only after the receipt verified offline.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography import x509

from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.client.enclave import RunLog, open_log, open_result, raise_run_failed
from sealroom.crypto.keys import PartyKeys, sealroom_home
from sealroom.errors import (
    AccessDeniedError,
    AttestationError,
    CapacityError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnavailableError,
)
from sealroom.files import write_private
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import H_CHALLENGE, H_RESULT_SHA256, H_SIGNATURE
from sealroom.protocol.lifecycle import FINAL
from sealroom.protocol.receipt import VerifiedReceipt, verify_receipt

_BY_STATUS: dict[int, type[SealroomError]] = {
    400: InvalidInputError,
    401: AccessDeniedError,
    403: AccessDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidInputError,
    429: CapacityError,
    503: UnavailableError,
}


def config_path() -> Path:
    return sealroom_home() / "config.json"


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
            "no control plane configured: run `sealroom up`, or `sealroom login URL KEY`, or "
            "set SEALROOM_URL and SEALROOM_API_KEY"
        )
    return str(url), key


def save_config(url: str, api_key: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps({"url": url, "api_key": api_key}).encode()
    write_private(path, data, overwrite=True, what="CLI config")
    return path


class ControlPlaneClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"control plane URL must be http(s)://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self.api_key = api_key
        self.timeout = timeout

    @classmethod
    def from_config(cls) -> ControlPlaneClient:
        url, key = load_config()
        return cls(url, key)

    # ---- plumbing -----------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        sink: Path | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if auth and self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            got_headers = {k.lower(): v for k, v in resp.getheaders()}
            if sink is not None and resp.status == 200:
                with sink.open("wb") as f:
                    while chunk := resp.read(1 << 20):
                        f.write(chunk)
                payload = b""
            else:
                payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError(f"control plane at {self.url} unreachable: {e}") from e
        finally:
            conn.close()
        if resp.status >= 400:
            self._raise(resp.status, payload)
        return resp.status, got_headers, payload

    @staticmethod
    def _raise(status: int, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
            detail = str(obj.get("detail") or obj)
            code = str(obj.get("type") or f"http-{status}")
        except (ValueError, AttributeError):
            detail, code = payload[:300].decode("utf-8", "replace"), f"http-{status}"
        cls = _BY_STATUS.get(status, UnavailableError)
        raise cls(f"control plane answered {status}: {detail}", code=code)

    def json(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        _, _, payload = self.request(method, path, body, auth=auth)
        return json.loads(payload) if payload else None

    # ---- accounts, hosts ----------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", "/api/v1/me")
        return result

    def create_account(self, name: str, role: str = "user") -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", "/api/v1/accounts", {"name": name, "role": role})
        return result

    def create_key(self, account_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/api/v1/accounts/{quote(account_id)}/keys")
        return result

    def revoke_key(self, key_id: str) -> None:
        self.request("DELETE", f"/api/v1/keys/{quote(key_id)}")

    def join_token(self) -> str:
        return str(self.json("POST", "/api/v1/hosts/join-tokens")["token"])

    def hosts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json("GET", "/api/v1/hosts")["hosts"]
        return result

    def compute_status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", "/api/v1/compute/status")
        return result

    def healthy(self) -> bool:
        try:
            self.request("GET", "/healthz", auth=False)
            return True
        except SealroomError:
            return False

    # ---- computations --------------------------------------------------------------------
    def create_computation(
        self, manifest: dict[str, Any], *, tee: str = "sim", queue: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.json(
            "POST", "/api/v1/computations", {"manifest": manifest, "tee": tee, "queue": queue}
        )
        return result

    def computations(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json("GET", "/api/v1/computations")["computations"]
        return result

    def computation(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/api/v1/computations/{quote(cid)}")
        return result

    def cancel(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/api/v1/computations/{quote(cid)}/cancel")
        return result

    def delete(self, cid: str) -> None:
        self.request("DELETE", f"/api/v1/computations/{quote(cid)}")

    def events(self, cid: str, after: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json(
            "GET", f"/api/v1/computations/{quote(cid)}/events?after={after}"
        )["events"]
        return result

    def wait_for(
        self,
        cid: str,
        states: tuple[str, ...],
        timeout: float,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the computation is in one of ``states`` (or final)."""
        deadline = time.monotonic() + timeout
        seq = 0
        while True:
            for ev in self.events(cid, seq):
                seq = max(seq, int(ev.get("seq", seq)))
                if on_event:
                    on_event(ev)
            comp = self.computation(cid)
            if comp["state"] in states or comp["state"] in FINAL:
                return comp
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"computation {cid} is still {comp['state']} after {timeout:.0f}s",
                    code="timeout",
                )
            time.sleep(0.3)

    # ---- results ------------------------------------------------------------------------------
    def _signed(self, cid: str, manifest: Manifest, party: PartyKeys) -> dict[str, str]:
        """Headers for one download of ``party``'s blobs: its signature over a fresh
        one-time challenge."""
        from sealroom.protocol.controlplane import result_request_message

        base = f"/api/v1/computations/{quote(cid)}"
        challenge = bytes.fromhex(self.json("GET", f"{base}/challenge", auth=False)["challenge"])
        sig = party.sign(
            result_request_message(cid, manifest.manifest_hash, party.public.name, challenge)
        )
        return {H_CHALLENGE: challenge.hex(), H_SIGNATURE: sig.hex()}

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
        _, _, raw = self.request(
            "GET",
            f"/api/v1/computations/{quote(cid)}/receipt",
            auth=False,
            headers=self._signed(cid, manifest, party),
        )
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
            _, headers, _ = self.request(
                "GET",
                f"/api/v1/computations/{quote(cid)}/logs/{quote(name)}",
                auth=False,
                headers=self._signed(cid, manifest, reader),
                sink=sealed,
            )
            log = open_log(
                sealed=sealed,
                sealed_sha256=headers.get(H_RESULT_SHA256.lower()),
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
            _, headers, _ = self.request(
                "GET",
                f"/api/v1/computations/{quote(cid)}/results/{quote(name)}",
                auth=False,
                headers=self._signed(cid, manifest, consumer),
                sink=sealed,
            )
            open_result(
                sealed=sealed,
                sealed_sha256=headers.get(H_RESULT_SHA256.lower()),
                receipt=receipt,
                consumer=consumer,
                manifest=manifest,
                out_dir=out_dir,
                tmp=tmp,
            )
        return receipt
