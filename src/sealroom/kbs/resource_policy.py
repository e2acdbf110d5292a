"""Resource policies: which attested sessions may receive which resource, over EAR claims.

Typed (pydantic, ``extra="forbid"``), YAML or JSON, in the style of the appraisal policy::

    version: 1
    id: prod-keys
    rules:
      - resources: "default/key/*"        # fnmatch over <repository>/<type>/<tag>
        status: affirming                 # every submodule at least this good (default)
        allow_simulated: false            # sim evidence never, unless spelled true
        kinds: [snp]                      # evidence kinds that must all be present
        claims:                           # path in a submodule's sealroom.claims -> allowed
          measurement: ["5f1c..."]
          host_data: ["00ab..."]

A request is released when at least one rule whose ``resources`` match the path passes
every condition; with no matching rule it is refused (default deny). The refusal lists each
failed condition of each matching rule.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sealroom.errors import InvalidInputError

_RANK = {"affirming": 1, "warning": 2, "contraindicated": 3}


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    resources: str
    status: Literal["affirming", "warning"] = "affirming"
    allow_simulated: bool = False
    kinds: list[str] = Field(default_factory=list)
    claims: dict[str, list[Any]] = Field(default_factory=dict)


class ResourcePolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    version: Literal[1]
    id: str
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _non_empty(cls, v: list[Rule]) -> list[Rule]:
        if not v:
            raise ValueError("a resource policy needs at least one rule (deny-all is no policy)")
        return v

    @classmethod
    def parse(cls, text: str | bytes) -> ResourcePolicy:
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InvalidInputError(f"resource policy is not YAML/JSON: {e}") from e
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            raise InvalidInputError(f"invalid resource policy: {e}", code="invalid-policy") from e

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


@functools.lru_cache(maxsize=64)
def parse_resource_policy(text: str | bytes) -> ResourcePolicy:
    """The stored resource policy, parsed once per text (read from the store per request)."""
    return ResourcePolicy.parse(text)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...]


def _get(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _rule_failures(rule: Rule, claims: dict[str, Any]) -> list[str]:
    fails: list[str] = []
    submods = claims.get("submods")
    if not isinstance(submods, dict) or not submods:
        return ["EAR has no submodules"]
    want = _RANK[rule.status]
    kinds_present: set[str] = set()
    for name, sub in submods.items():
        if not isinstance(sub, dict):
            fails.append(f"submods.{name} is not an object")
            continue
        status = sub.get("ear.status")
        if _RANK.get(str(status), 99) > want:
            fails.append(f"submods.{name} ear.status is {status}, rule wants {rule.status}")
        if sub.get("sealroom.simulated") is not False and not rule.allow_simulated:
            fails.append(f"submods.{name} is SIMULATED evidence; rule has allow_simulated: false")
        kind = sub.get("sealroom.kind")
        if isinstance(kind, str):
            kinds_present.add(kind)
    for k in rule.kinds:
        if k not in kinds_present:
            fails.append(f"kind {k} is required, EAR has {sorted(kinds_present)}")
    for path, allowed in rule.claims.items():
        got = [
            _get(sub.get("sealroom.claims"), path)
            for sub in submods.values()
            if isinstance(sub, dict) and _get(sub.get("sealroom.claims"), path) is not None
        ]
        if not got:
            fails.append(f"claim {path} is absent, rule allows {allowed}")
        for g in got:
            if g not in allowed:
                fails.append(f"claim {path} is {g!r}, rule allows {allowed}")
    return fails


def evaluate(policy: ResourcePolicy, path: str, claims: dict[str, Any]) -> Decision:
    matching = [r for r in policy.rules if fnmatch.fnmatchcase(path, r.resources)]
    if not matching:
        return Decision(False, (f"no rule of resource policy {policy.id!r} matches {path}",))
    reasons: list[str] = []
    for i, rule in enumerate(matching):
        fails = _rule_failures(rule, claims)
        if not fails:
            return Decision(True, (f"rule {rule.resources!r} of {policy.id!r} allows {path}",))
        reasons.extend(f"rule {i} ({rule.resources}): {f}" for f in fails)
    return Decision(False, tuple(reasons))
