"""The appraisal policy: typed, versioned, loaded from YAML or JSON.

Top level (common to every evidence kind)::

    version: 1                  # required; the only version so far
    id: prod-snp                # names the policy in results and EAR tokens
    allow_simulated: false      # sim evidence passes only where this is true
    max_evidence_age: 300       # seconds between collected_at and now (null: unchecked)
    require: [snp]              # kinds that must all be present (default: at least one item)
    snp: {...}                  # one section per accepted evidence kind

Each section's schema belongs to its evidence kind (``kinds.py``); a key that is neither a
common field nor a known kind is an error. There is no default policy anywhere: callers
load one, or spell :meth:`Policy.unsafe_accept_all` and get a logged warning.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from sealroom.attestation import kinds
from sealroom.attestation.appraise import Rules, Trust
from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.errors import InvalidInputError

log = logging.getLogger(__name__)

POLICY_VERSION = 1


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a hex string")
    s = value.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return bytes.fromhex(s)
    except ValueError as e:
        raise ValueError(f"is not hex: {value!r}") from e


HexBytes = Annotated[bytes, BeforeValidator(_hex_bytes)]


def _is_bool_field(model: type[BaseModel], name: str) -> bool:
    ann = model.model_fields[name].annotation
    return ann is bool or ann == (bool | None)


def _strict_bool(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """Booleans are YAML/JSON booleans: ``"yes"``, ``1`` or ``"false"`` are errors.

    pydantic's lax mode would read ``allow_simulated: "no"`` as false but ``"yes"`` as true
    and ``"off"`` as false: a policy typo must never flip a security switch silently. Applied
    to every bool field of every policy model (present and future) by the bases below."""
    name = info.field_name
    bool_field = name is not None and _is_bool_field(model, name)
    if bool_field and value is not None and not isinstance(value, bool):
        raise ValueError("must be true or false (a boolean, unquoted)")
    return value


class Section(BaseModel):
    """Base for policy sections: frozen, unknown keys are errors, booleans strict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        return _strict_bool(cls, value, info)


class ReportDataPolicy(Section):
    """How REPORT_DATA (or its equivalent) must look.

    - ``any``: not checked (the default; say so on purpose)
    - ``exact``: equals ``value`` (zero-padded to the field size)
    - ``nonce``: equals the verifier's nonce, zero-padded. With no nonce given the rule
      fails, unless ``require_nonce: false``: then it is recorded as passed but the result
      says freshness was not checked (verifying archived evidence)
    - ``sealroom-v1``: equals SHA-512("sealroom/report-data/v1" || manifest_hash ||
      keys_digest || nonce), see ``binding.py`` (the verifier must pass all three)

    A verifier that passes a nonce gets it checked: if no rule of the policy binds it, the
    verification is refused (``nonce-not-bound``), never silently unchecked.
    """

    mode: Literal["any", "exact", "nonce", "sealroom-v1"] = "any"
    value: HexBytes | None = None
    require_nonce: bool = True


class _Common(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    version: Literal[1]
    id: str = Field(default="unnamed", min_length=1, max_length=200)
    allow_simulated: bool = False
    max_evidence_age: int | None = Field(default=None, gt=0)
    require: list[str] = Field(default_factory=list)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        return _strict_bool(cls, value, info)


def _format_validation(e: ValidationError, prefix: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        got = err.get("input")
        got_s = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}{got_s}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Policy:
    version: int
    id: str
    allow_simulated: bool
    max_evidence_age: int | None
    require: tuple[str, ...]
    sections: Mapping[str, BaseModel] = field(default_factory=lambda: MappingProxyType({}))
    unsafe: bool = False

    @classmethod
    def from_dict(cls, obj: Any, source: str = "policy") -> Policy:
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{source}: must be a mapping, got {type(obj).__name__}")
        if "version" not in obj:
            raise InvalidInputError(f"{source}: 'version' is required (current: {POLICY_VERSION})")
        try:
            common = _Common.model_validate(obj)
        except ValidationError as e:
            raise InvalidInputError(f"{source}: {_format_validation(e, '')}") from e
        sections: dict[str, BaseModel] = {}
        for key, raw in (common.model_extra or {}).items():
            if key not in kinds.names():
                raise InvalidInputError(
                    f"{source}: unknown key {key!r} (common keys: version, id, allow_simulated, "
                    f"max_evidence_age, require; evidence kinds: {', '.join(kinds.names())})"
                )
            model = kinds.get(key).policy_model
            try:
                sections[key] = model.model_validate(raw if raw is not None else {})
            except ValidationError as e:
                raise InvalidInputError(f"{source}: {_format_validation(e, key)}") from e
        if not sections:
            raise InvalidInputError(
                f"{source}: accepts no evidence kind; add a section for at least one of "
                f"{', '.join(kinds.names())}"
            )
        for r in common.require:
            if r not in sections:
                raise InvalidInputError(
                    f"{source}: require lists {r!r} but the policy has no {r!r} section"
                )
        return cls(
            version=common.version,
            id=common.id,
            allow_simulated=common.allow_simulated,
            max_evidence_age=common.max_evidence_age,
            require=tuple(common.require),
            sections=MappingProxyType(sections),
        )

    @classmethod
    def loads(cls, text: str, source: str = "policy") -> Policy:
        # Imported here: the enclave runtime validates policies from manifests (dicts)
        # and never parses YAML, and importing yaml is a cost on every enclave start.
        import yaml

        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InvalidInputError(f"{source}: not valid YAML/JSON: {e}") from e
        return cls.from_dict(obj, source)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            text = path.read_text()
        except OSError as e:
            raise InvalidInputError(f"cannot read policy {path}: {e.strerror}") from e
        return cls.loads(text, str(path))

    @classmethod
    def unsafe_accept_all(cls, *, allow_simulated: bool = False) -> Policy:
        """Accepts any authentic evidence of any kind. For inspection and tests only."""
        log.warning("using Policy.unsafe_accept_all(): authentic evidence of any content will pass")
        return cls(
            version=POLICY_VERSION,
            id="unsafe-accept-all",
            allow_simulated=allow_simulated,
            max_evidence_age=None,
            require=(),
            unsafe=True,
        )

    def to_json(self) -> str:
        obj: dict[str, Any] = {
            "version": self.version,
            "id": self.id,
            "allow_simulated": self.allow_simulated,
            "max_evidence_age": self.max_evidence_age,
            "require": list(self.require),
        }
        for k, s in self.sections.items():
            obj[k] = s.model_dump(mode="json")
        return json.dumps(obj, indent=2)


def starter_policy(kind_names: list[str] | None = None) -> str:
    """A commented starter policy for ``sealroom attest policy init``."""
    chosen = kind_names or ["snp"]
    head = f"""\
# sealroom appraisal policy. Every rule below is checked and reported; evidence passes
# only if all of them pass. Delete a rule to stop checking it (say so on purpose).
version: {POLICY_VERSION}
id: my-policy
# Simulated TEEs (the sim authority) prove nothing about confidentiality. Keep false
# for anything real; set true only for development on machines without TEE hardware.
allow_simulated: false
# Oldest evidence accepted, in seconds since it was collected (null: not checked).
# Collection time is the presenter's word; for real freshness bind a nonce (report_data).
max_evidence_age: null
# Evidence kinds that must all be present (e.g. [snp, nvidia] for CPU + GPU).
require: [{", ".join(chosen)}]
"""
    body = []
    for n in chosen:
        section = kinds.get(n).starter_policy()
        indented = "\n".join(("  " + line) if line else "" for line in section.splitlines())
        body.append(f"{n}:\n{indented}\n")
    return head + "".join(body)


def check_report_data(
    rules: Rules,
    field_name: str,
    got: bytes,
    pol: ReportDataPolicy,
    nonce: bytes | None,
    inputs: ReportDataInputs | None,
    *,
    pad: bool = True,
) -> None:
    """Shared REPORT_DATA rule for every kind whose evidence carries one.

    ``pad=True``: a fixed-size field (SNP/TDX 64 bytes); shorter expectations are
    zero-padded and the sealroom-v1 digest truncated to the field. ``pad=False``: a
    variable-size field (TPM extraData) that must equal the expectation exactly."""
    if pol.mode == "any":
        return
    if pol.mode == "nonce" and nonce is None and not pol.require_nonce:
        rules.add(
            field_name,
            got,
            "the verifier's nonce, but none was given: freshness NOT checked "
            "(require_nonce: false)",
            True,
            Trust.INSTANCE_IDENTITY,
        )
        return
    size = len(got)
    want: bytes | None = None
    reason = ""
    if pol.mode == "exact":
        want = pol.value
        reason = "exact mode without a value"
    elif pol.mode == "nonce":
        want = nonce
        reason = "a nonce, but the verifier was given none (--nonce)"
    elif nonce is not None and inputs is not None:
        want = sealroom_report_data(inputs, nonce)
    else:
        reason = "the sealroom-v1 binding, but manifest hash, keys digest or nonce is missing"
    if want is not None and pad:
        if pol.mode == "sealroom-v1":
            want = want[:size]
        elif len(want) > size:
            reason, want = f"a value of at most {size} bytes (got {len(want)})", None
        else:
            want = want + bytes(size - len(want))
    if want is None:
        rules.add(field_name, got, reason, False, Trust.INSTANCE_IDENTITY)
        return
    rules.add(
        field_name,
        got,
        f"{want.hex() or '(empty)'} ({pol.mode})",
        len(got) == len(want) and hmac.compare_digest(got, want),
        Trust.INSTANCE_IDENTITY,
        binds_nonce=pol.mode in ("nonce", "sealroom-v1"),
    )
