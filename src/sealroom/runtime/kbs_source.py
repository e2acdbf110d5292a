"""KBS-sourced datasets, inside the enclave: attest to the key broker with the kbs guest
client (Trustee KBS protocol), get the dataset key, fetch the provider's ciphertext,
decrypt it into enclave storage. :meth:`Computation.fill_from_kbs` checks the hash.

The evidence sent to the broker is this enclave's own (the TEE provider's), with
REPORT_DATA = the broker's binding digest (nonce + tee-pubkey, as Trustee computes it);
HOST_DATA, fixed by whoever launched the enclave and measured by the TEE, is this
computation's manifest hash, which the broker's release policy names (docs/adr/0027).

The ciphertext is fetched first (its header names the key id and version, checked against
the resource the manifest names before anything is asked of the broker) and bounded by
what the manifest's ``max_size`` allows for that header's chunk size; the plaintext is
bounded by ``max_size`` as it is written.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from sealroom.attestation.evidence import EvidenceBundle
from sealroom.crypto.dataset import KEY_SIZE, MAGIC, MAX_HEADER, DatasetHeader, decrypt_dataset
from sealroom.crypto.dataset import read_header as parse_header
from sealroom.errors import InvalidInputError, SealroomError, UnavailableError
from sealroom.kbs.client import KbsClient, envelope_evidence, report_data
from sealroom.manifest import Slot
from sealroom.runtime.computation import Computation
from sealroom.tee.base import EvidenceProvider

#: Trustee's TEE names for sealroom evidence kinds (kbs_protocol Tee enum, lowercase).
TRUSTEE_TEE = {"snp": "snp", "tdx": "tdx", "tpm": "azsnpvtpm"}
#: GCM tag per chunk (crypto.sealing's STREAM).
_TAG = 16
_PREFIX = len(MAGIC) + 4
_KMS_TAG = re.compile(r"primary|v([1-9][0-9]{0,8})")

Fetch = Callable[[Slot, Path], None]


class _Limited:
    """A writer that refuses more than ``limit`` bytes (the slot's max_size)."""

    def __init__(self, f: BinaryIO, limit: int, slot: str) -> None:
        self.f, self.limit, self.slot, self.size = f, limit, slot, 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise InvalidInputError(
                f"slot {self.slot!r}: decrypted dataset exceeds the manifest's max_size "
                f"{self.limit}",
                code="upload-too-large",
            )
        self.f.write(data)


class _Ciphertext:
    """Writes the downloaded ciphertext; once the header arrived, refuses more bytes than
    a dataset of ``max_size`` plaintext bytes can take under that header's chunk size."""

    def __init__(self, f: BinaryIO, max_size: int, source: str) -> None:
        self.f, self.max_size, self.source = f, max_size, source
        self.size = 0
        self.head = b""
        self.limit: int | None = None
        self.header: DatasetHeader | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.limit is None:
            self.head = (self.head + data)[: _PREFIX + MAX_HEADER]
            if len(self.head) >= _PREFIX:
                (n,) = struct.unpack(">I", self.head[len(MAGIC) : _PREFIX])
                if n > MAX_HEADER or len(self.head) >= _PREFIX + n:
                    self.header = parse_header(io.BytesIO(self.head))
                    chunks = self.max_size // self.header.chunk_size + 1
                    self.limit = len(self.header.raw) + self.max_size + chunks * _TAG
        if self.limit is not None and self.size > self.limit:
            raise InvalidInputError(
                f"ciphertext {self.source}: larger than a dataset of the manifest's max_size "
                f"{self.max_size} can be ({self.limit} bytes)",
                code="upload-too-large",
            )
        self.f.write(data)


def _evidence_fn(provider: EvidenceProvider) -> Callable[[bytes], Any]:
    def fn(digest: bytes) -> Any:
        return envelope_evidence(EvidenceBundle.single(provider.collect(report_data(digest))))

    return fn


def _fetch_ciphertext(spec: Slot, dest: Path) -> DatasetHeader:
    assert spec.kbs is not None
    src = spec.kbs.ciphertext
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        out = _Ciphertext(f, spec.max_size, src)
        if src.startswith(("http://", "https://")):
            try:
                with httpx.stream("GET", src, timeout=60) as resp:
                    if resp.status_code != 200:
                        raise UnavailableError(
                            f"ciphertext {src}: HTTP {resp.status_code}",
                            code="kbs-ciphertext-unavailable",
                        )
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
            except httpx.HTTPError as e:
                raise UnavailableError(
                    f"ciphertext {src}: {e}", code="kbs-ciphertext-unavailable"
                ) from e
        else:
            try:
                with open(src.removeprefix("file://"), "rb") as g:
                    while block := g.read(1 << 20):
                        out.write(block)
            except OSError as e:
                raise UnavailableError(
                    f"ciphertext {src}: {e.strerror or e}", code="kbs-ciphertext-unavailable"
                ) from e
    if out.header is None:
        with open(dest, "rb") as g:
            return parse_header(g)  # too short: says what is wrong with it
    return out.header


def check_header_names_resource(header: DatasetHeader, resource: str) -> None:
    """A ``kms/<key>/<tag>`` resource must be the key (and version) the ciphertext was
    encrypted under: a mismatch is said before the broker is asked for anything."""
    repo, _, rest = resource.partition("/")
    key_id, _, tag = rest.partition("/")
    if repo != "kms":
        return
    m = _KMS_TAG.fullmatch(tag)
    if key_id != header.key_id or (m and m.group(1) and int(m.group(1)) != header.version):
        raise InvalidInputError(
            f"the ciphertext is encrypted under key {header.key_id} v{header.version}, the "
            f"manifest names resource {resource}",
            code="kbs-dataset-key-mismatch",
        )


def fetcher(provider: EvidenceProvider) -> Fetch:
    """The ``fetch`` of :meth:`Computation.fill_from_kbs` for this enclave."""

    def fetch(spec: Slot, partial: Path) -> None:
        assert spec.kbs is not None
        enc = partial.with_name(partial.name + ".enc")
        try:
            header = _fetch_ciphertext(spec, enc)
            check_header_names_resource(header, spec.kbs.resource)
            tee = TRUSTEE_TEE.get(provider.kind, provider.kind)
            with KbsClient(spec.kbs.url, tee, _evidence_fn(provider)) as client:
                key = client.get_resource(spec.kbs.resource)
            if len(key) != KEY_SIZE:
                raise InvalidInputError(
                    f"resource {spec.kbs.resource}: {len(key)} bytes, a dataset key is {KEY_SIZE}",
                    code="kbs-dataset-key-size",
                )
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(enc, "rb") as f, os.fdopen(fd, "wb") as out:
                f.seek(len(header.raw))
                decrypt_dataset(f, _Limited(out, spec.max_size, spec.name), key, header)
            del key
        finally:
            enc.unlink(missing_ok=True)

    return fetch


def fill_kbs_slots(comp: Computation, fetch: Fetch | None = None) -> list[str]:
    """Fill every KBS-sourced slot (in order; the first failure fails the computation);
    returns the slots filled."""
    filled: list[str] = []
    fetch = fetch or fetcher(comp.provider)
    for spec in comp.specs.values():
        if spec.kbs is None:
            continue
        try:
            ok = comp.fill_from_kbs(spec.name, fetch)
        except SealroomError:
            ok = False  # e.g. the computation was no longer accepting inputs
        if not ok:
            break
        filled.append(spec.name)
    return filled


def start(comp: Computation) -> threading.Thread | None:
    """Fill KBS-sourced slots in the background (None when the manifest has none)."""
    if not any(s.kbs for s in comp.specs.values()):
        return None
    t = threading.Thread(target=fill_kbs_slots, args=(comp,), name="sealroom-kbs", daemon=True)
    t.start()
    return t
