"""The computation manifest: what runs, on whose data, for whom, under which enclave
policy and limits. Every party reads the same file and computes the same hash.

Version 1 (JSON)::

    {"version": 1, "id": "demo-001", "name": "Average of two datasets",
     "algorithm": {"kind": "python" | "wasm" | "binary", "sha256": "<64 hex>",
                   "provider": {"name": ..., "ed25519": "<64 hex>", "x25519": "<64 hex>"},
                   "entrypoint": "main.py", "args": [], "archive": null | "zip" | "tar",
                   "max_size": 268435456},                           # max_size optional
     "datasets": [{"name": "a", "sha256": ..., "provider": {...}, "max_size": 1048576,
                   "archive": null | "zip" | "tar",
                   "source": {"kbs": {"url": "http://127.0.0.1:8090",      # optional
                                      "resource": "kms/ds1/v1",
                                      "ciphertext": "http://... | /path/a.enc"}}}],
     "consumers": [{"name": "alice", "ed25519": ..., "x25519": ...}],
     "log_readers": [{"name": "lab", "ed25519": ..., "x25519": ...}],  # optional
     "policy": { an attestation policy document, see sealroom.attestation.policy },
     "limits": {"vcpus": 1, "memory_mb": 512, "wall_seconds": 60,
                "max_result_bytes": 10485760}}

``manifest_hash`` = SHA-256 of the RFC 8785 canonical form of the JSON object *as given*
(after parsing; whitespace and key order do not matter, every value does, and defaults
are not filled in). Parties hash the file they were given, never a re-serialisation by
some model, so a sealroom upgrade that adds a defaulted field cannot change the hash of
an existing manifest. Hex values are lowercase only, so one key has one spelling.

Slots are ``"algorithm"`` and each dataset name; each is filled by one upload signed by
its provider, or, for a dataset with ``source.kbs`` (docs/adr/0027), by the enclave itself:
it attests to the key broker at ``url``, receives the key ``resource`` (released only to
evidence that passes the broker's policy, e.g. HOST_DATA = this manifest's hash), fetches
the provider-encrypted ``ciphertext`` (``sealroom data encrypt``), decrypts it and checks
``sha256`` exactly as for an upload. The provider need not be online. Manifests without
``source`` are unchanged (and hash as before).

The run log (what the algorithm printed, and why a run failed) is sealed to every
consumer and to every party in ``log_readers`` (docs/adr/0017): the parties agree to that
list as to everything else, by the manifest hash their upload signatures cover.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from sealroom.attestation.policy import Policy
from sealroom.crypto.canonical import canonical_json
from sealroom.crypto.keys import NAME_RE, PartyPublic
from sealroom.errors import InvalidInputError, NotFoundError

MANIFEST_VERSION = 1
ALGORITHM_SLOT = "algorithm"
# An algorithm upload is limited too (the manifest may say otherwise): 256 MiB.
DEFAULT_ALGORITHM_MAX_SIZE = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
SLOT_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
# What `sealroom manifest init` writes where it does not know a value yet.
PLACEHOLDER = "REPLACE: "

AlgorithmKind = Literal["python", "wasm", "binary"]
ArchiveKind = Literal["zip", "tar"]


# --- wire models (validation only) -------------------------------------------------------


def _hex32(v: str) -> str:
    if v.startswith(PLACEHOLDER):
        raise ValueError("is still a placeholder: fill in 64 lowercase hex characters")
    if not HEX64_RE.fullmatch(v):
        detail = "not lowercase hex" if len(v) == 64 else f"got {len(v)} characters"
        raise ValueError(f"must be 64 lowercase hex characters (32 bytes), {detail}")
    return v


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(v: str) -> str:
        if not regex.fullmatch(v):
            raise ValueError(f"must be {what}")
        return v

    return AfterValidator(check)


def _relative_path(v: str) -> str:
    parts = v.split("/")
    if (
        not v
        or len(v) > 255
        or v.startswith("/")
        or "\\" in v
        or "\0" in v
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(
            "must be a relative path inside the algorithm (no leading '/', no '..' or '.' "
            "components, no empty components or backslashes)"
        )
    return v


Hex32 = Annotated[str, AfterValidator(_hex32)]
SlotName = Annotated[
    str, _pattern(SLOT_NAME_RE, "1-64 characters from lowercase letters, digits, '_', '-'")
]
PartyName = Annotated[
    str,
    _pattern(NAME_RE, "1-64 characters from [A-Za-z0-9_.-], starting with a letter or digit"),
]
RelPath = Annotated[str, AfterValidator(_relative_path)]
Size = Annotated[int, Field(gt=0, le=2**53 - 1)]


class _Model(BaseModel):
    # strict: "1" is not 1 and 1.0 is not 1; the hash covers the JSON exactly as written.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _PartyModel(_Model):
    name: PartyName
    ed25519: Hex32
    x25519: Hex32


class _AlgorithmModel(_Model):
    kind: AlgorithmKind
    sha256: Hex32
    provider: _PartyModel
    entrypoint: RelPath | None = None
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    archive: ArchiveKind | None = None
    max_size: Size = DEFAULT_ALGORITHM_MAX_SIZE


_KBS_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?")
# A segment is never "." or "..": an HTTP client would resolve it to another resource.
_SEG = r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]+"
_RESOURCE_RE = re.compile(f"{_SEG}/{_SEG}/{_SEG}")


class _KbsSourceModel(_Model):
    url: Annotated[str, _pattern(_KBS_URL_RE, "an http(s):// URL of a key broker")]
    resource: Annotated[str, _pattern(_RESOURCE_RE, "<repository>/<type>/<tag>")]
    ciphertext: Annotated[str, Field(min_length=1, max_length=2048)]


class _SourceModel(_Model):
    kbs: _KbsSourceModel


class _DatasetModel(_Model):
    name: SlotName
    sha256: Hex32
    provider: _PartyModel
    max_size: Size
    archive: ArchiveKind | None = None
    source: _SourceModel | None = None


class Limits(_Model):
    """Resource limits of the run. A frozen pydantic model (``model_dump`` works)."""

    vcpus: Annotated[int, Field(gt=0, le=1024)]
    memory_mb: Annotated[int, Field(gt=0, le=16 * 1024 * 1024)]
    wall_seconds: Annotated[int, Field(gt=0, le=30 * 24 * 3600)]
    max_result_bytes: Size


class _ManifestModel(_Model):
    version: Literal[1]
    id: Annotated[
        str,
        _pattern(ID_RE, "1-128 characters from [A-Za-z0-9_.-], starting with a letter or digit"),
    ]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    algorithm: _AlgorithmModel
    datasets: list[_DatasetModel] = Field(max_length=64)
    consumers: list[_PartyModel] = Field(min_length=1, max_length=64)
    log_readers: list[_PartyModel] = Field(default_factory=list, max_length=16)
    policy: dict[str, Any]
    limits: Limits


def _loc(parts: tuple[int | str, ...]) -> str:
    out = "manifest"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _format_errors(e: ValidationError) -> str:
    msgs = []
    for err in e.errors():
        got = err.get("input")
        shown = ""
        if err["type"] != "missing" and not isinstance(got, dict | list):
            r = repr(got)
            shown = f" (got {r[:80]}{'...' if len(r) > 80 else ''})"
        msg = err["msg"].removeprefix("Value error, ")
        msgs.append(f"{_loc(tuple(err['loc']))}: {msg}{shown}")
    if len(msgs) == 1:
        return msgs[0]
    more = [f"  ... and {len(msgs) - 12} more"] if len(msgs) > 12 else []
    return "\n".join(
        [f"manifest has {len(msgs)} problems:", *(f"  - {m}" for m in msgs[:12]), *more]
    )


# --- domain types ----------------------------------------------------------------------


@dataclass(frozen=True)
class Algorithm:
    kind: AlgorithmKind
    sha256: bytes
    provider: PartyPublic
    entrypoint: str | None
    args: tuple[str, ...]
    archive: ArchiveKind | None
    max_size: int


@dataclass(frozen=True)
class KbsSource:
    """A dataset the enclave fetches itself: key from a key broker, ciphertext from
    ``ciphertext`` (URL or path)."""

    url: str
    resource: str
    ciphertext: str


@dataclass(frozen=True)
class Dataset:
    name: str
    sha256: bytes
    provider: PartyPublic
    max_size: int
    archive: ArchiveKind | None
    kbs: KbsSource | None = None


@dataclass(frozen=True)
class Slot:
    """One upload the computation waits for: who signs it, what it must hash to, how
    large it may be, and how to unpack it."""

    name: str
    kind: Literal["algorithm", "dataset"]
    sha256: bytes
    provider: PartyPublic
    max_size: int
    archive: ArchiveKind | None
    kbs: KbsSource | None = None


def _party(m: _PartyModel, where: str) -> PartyPublic:
    try:
        return PartyPublic(m.name, bytes.fromhex(m.ed25519), bytes.fromhex(m.x25519))
    except InvalidInputError as e:
        raise InvalidInputError(f"{where}: {e.message}", code="invalid-manifest") from e


def _parse_json(text: str | bytes, source: str) -> Any:
    if len(text) > MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"{source}: {len(text)} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit",
            code="invalid-manifest",
        )

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for k, v in pairs:
            if k in obj:
                # Parsers disagree on which duplicate wins; the hash must not be ambiguous.
                raise InvalidInputError(
                    f"{source}: key {k!r} appears twice in one object", code="invalid-manifest"
                )
            obj[k] = v
        return obj

    def no_constant(name: str) -> Any:
        raise InvalidInputError(f"{source}: {name} is not JSON", code="invalid-manifest")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{source}: not valid JSON: {e}", code="invalid-manifest") from e
    except RecursionError as e:
        raise InvalidInputError(f"{source}: nested too deeply", code="invalid-manifest") from e


def _path_with_nul(obj: Any, where: str) -> str | None:
    """The path of the first key or string in ``obj`` that holds a NUL character."""
    if isinstance(obj, str):
        return where if "\x00" in obj else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and "\x00" in k:
                return f"{where} (a key)"
            found = _path_with_nul(v, f"{where}.{k}")
            if found is not None:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _path_with_nul(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class Manifest:
    version: int
    id: str
    name: str
    algorithm: Algorithm
    datasets: tuple[Dataset, ...]
    consumers: tuple[PartyPublic, ...]
    log_readers: tuple[PartyPublic, ...]
    limits: Limits
    manifest_hash: bytes = field(repr=False)
    _policy: Policy = field(repr=False)
    _canonical: bytes = field(repr=False)
    _slots: Mapping[str, Slot] = field(repr=False, default_factory=lambda: MappingProxyType({}))

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, obj: Any, source: str = "manifest") -> Manifest:
        if not isinstance(obj, dict):
            raise InvalidInputError(
                f"{source}: must be a JSON object, got {type(obj).__name__}",
                code="invalid-manifest",
            )
        if "version" not in obj:
            raise InvalidInputError(
                f"{source}: 'version' is required (current: {MANIFEST_VERSION})",
                code="invalid-manifest",
            )
        if obj["version"] != MANIFEST_VERSION or isinstance(obj["version"], bool):
            raise InvalidInputError(
                f"manifest.version: {obj['version']!r} is not supported (this sealroom reads "
                f"version {MANIFEST_VERSION})",
                code="invalid-manifest",
            )
        try:
            nul = _path_with_nul(obj, "manifest")
        except RecursionError as e:
            raise InvalidInputError(f"{source}: nested too deeply", code="invalid-manifest") from e
        if nul is not None:
            # No text field holds a NUL: C strings, file names and PostgreSQL's text all
            # refuse it, so a create would otherwise fail late, as a store error.
            raise InvalidInputError(
                f"{nul}: contains a NUL character (\\u0000), which no text field may hold",
                code="invalid-manifest",
            )
        try:
            m = _ManifestModel.model_validate(obj)
        except ValidationError as e:
            raise InvalidInputError(_format_errors(e), code="invalid-manifest") from e
        try:
            canonical = canonical_json(obj)
        except InvalidInputError as e:
            raise InvalidInputError(
                f"manifest: {e.message.replace('$', 'manifest', 1)}", code="invalid-manifest"
            ) from e

        if m.algorithm.kind == "python" and m.algorithm.entrypoint is None:
            raise InvalidInputError(
                "manifest.algorithm.entrypoint: required for kind 'python' (the script to "
                "run, e.g. 'main.py', relative to the algorithm's root)",
                code="invalid-manifest",
            )
        seen: dict[str, int] = {}
        for i, d in enumerate(m.datasets):
            if d.name == ALGORITHM_SLOT:
                raise InvalidInputError(
                    f"manifest.datasets[{i}].name: 'algorithm' is reserved for the "
                    "algorithm's slot",
                    code="invalid-manifest",
                )
            if d.name in seen:
                raise InvalidInputError(
                    f"manifest.datasets[{i}].name: {d.name!r} is also datasets[{seen[d.name]}]"
                    "; dataset names must be unique",
                    code="invalid-manifest",
                )
            seen[d.name] = i
        cseen: dict[str, int] = {}
        for i, c in enumerate(m.consumers):
            if c.name in cseen:
                raise InvalidInputError(
                    f"manifest.consumers[{i}].name: {c.name!r} is also consumers"
                    f"[{cseen[c.name]}]; consumer names must be unique",
                    code="invalid-manifest",
                )
            cseen[c.name] = i
        for i, r in enumerate(m.log_readers):
            if r.name in cseen:
                raise InvalidInputError(
                    f"manifest.log_readers[{i}].name: {r.name!r} is a consumer, and consumers "
                    "receive the run log already",
                    code="invalid-manifest",
                )
            if any(o.name == r.name for o in m.log_readers[:i]):
                raise InvalidInputError(
                    f"manifest.log_readers[{i}].name: {r.name!r} appears twice",
                    code="invalid-manifest",
                )
        try:
            policy = Policy.from_dict(m.policy, source="manifest.policy")
        except InvalidInputError as e:
            raise InvalidInputError(e.message, code="invalid-manifest") from e

        algorithm = Algorithm(
            kind=m.algorithm.kind,
            sha256=bytes.fromhex(m.algorithm.sha256),
            provider=_party(m.algorithm.provider, "manifest.algorithm.provider"),
            entrypoint=m.algorithm.entrypoint,
            args=tuple(m.algorithm.args),
            archive=m.algorithm.archive,
            max_size=m.algorithm.max_size,
        )
        datasets = tuple(
            Dataset(
                name=d.name,
                sha256=bytes.fromhex(d.sha256),
                provider=_party(d.provider, f"manifest.datasets[{i}].provider"),
                max_size=d.max_size,
                archive=d.archive,
                kbs=KbsSource(**d.source.kbs.model_dump()) if d.source else None,
            )
            for i, d in enumerate(m.datasets)
        )
        consumers = tuple(_party(c, f"manifest.consumers[{i}]") for i, c in enumerate(m.consumers))
        log_readers = tuple(
            _party(r, f"manifest.log_readers[{i}]") for i, r in enumerate(m.log_readers)
        )
        slots = {
            ALGORITHM_SLOT: Slot(
                ALGORITHM_SLOT,
                "algorithm",
                algorithm.sha256,
                algorithm.provider,
                algorithm.max_size,
                algorithm.archive,
            )
        }
        for ds in datasets:
            slots[ds.name] = Slot(
                ds.name, "dataset", ds.sha256, ds.provider, ds.max_size, ds.archive, ds.kbs
            )
        return cls(
            version=m.version,
            id=m.id,
            name=m.name,
            algorithm=algorithm,
            datasets=datasets,
            consumers=consumers,
            log_readers=log_readers,
            limits=m.limits,
            manifest_hash=hashlib.sha256(canonical).digest(),
            _policy=policy,
            _canonical=canonical,
            _slots=MappingProxyType(slots),
        )

    @classmethod
    def loads(cls, text: str | bytes, source: str = "manifest") -> Manifest:
        return cls.from_dict(_parse_json(text, source), source)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
        except OSError as e:
            raise InvalidInputError(
                f"cannot read manifest {path}: {e.strerror or e}", code="invalid-manifest"
            ) from e
        return cls.loads(data, str(path))

    # -- views --------------------------------------------------------------------------

    def canonical_bytes(self) -> bytes:
        """The RFC 8785 form that ``manifest_hash`` covers."""
        return self._canonical

    @property
    def manifest_hash_hex(self) -> str:
        return self.manifest_hash.hex()

    def to_json_obj(self) -> dict[str, Any]:
        """A fresh copy of the manifest as given (its canonical form, parsed)."""
        obj: dict[str, Any] = json.loads(self._canonical)
        return obj

    def policy(self) -> Policy:
        return self._policy

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(self._slots)

    def slots(self) -> tuple[Slot, ...]:
        return tuple(self._slots.values())

    def slot(self, name: str) -> Slot:
        try:
            return self._slots[name]
        except KeyError:
            raise NotFoundError(
                f"slot {name!r} is not in manifest {self.id!r} (slots: {', '.join(self._slots)})",
                code="unknown-slot",
            ) from None

    def consumer(self, name: str) -> PartyPublic:
        return _find(
            self.consumers,
            name,
            f"is not a result consumer of manifest {self.id!r} (consumers",
            "unknown-consumer",
        )

    @property
    def log_recipients(self) -> tuple[PartyPublic, ...]:
        """Who receives the sealed run log: every consumer, then every log reader."""
        return self.consumers + self.log_readers

    def log_recipient(self, name: str) -> PartyPublic:
        return _find(
            self.log_recipients,
            name,
            f"may not read the run log of manifest {self.id!r} (consumers and log_readers",
            "not-a-log-reader",
        )


def _find(parties: tuple[PartyPublic, ...], name: str, why: str, code: str) -> PartyPublic:
    for p in parties:
        if p.name == name:
            return p
    raise NotFoundError(f"{name!r} {why}: {', '.join(p.name for p in parties)})", code=code)
