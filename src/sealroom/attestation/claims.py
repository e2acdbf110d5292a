"""Typed claims: what verified (or merely parsed) evidence says.

Each evidence kind defines a frozen dataclass deriving from :class:`Claims`. The base
gives a JSON-ready view (bytes as lowercase hex, nested dataclasses as objects) so the
CLI, EAR tokens and later the control plane can show claims without knowing the kind.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_jsonable(value: Any) -> Any:
    """Bytes → hex, dataclasses → dicts, enums → values, datetimes → ISO 8601."""
    if type(value) in _PLAIN:  # most leaves: skip the checks below (exact types only)
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Claims:
    """Common part of every claim set.

    ``simulated`` is derived by the verifier from the trust anchor that validated the
    evidence (a sim authority root, not a vendor root); evidence cannot declare itself real.
    ``verified`` is False only for claims produced by ``inspect`` (parse without checks).
    """

    kind: str
    simulated: bool
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        out = to_jsonable(self)
        assert isinstance(out, dict)
        return out
