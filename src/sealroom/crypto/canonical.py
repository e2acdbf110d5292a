"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and SHA-256 helpers.

Numbers: sealroom documents carry integers only. RFC 8785 serialises numbers as ECMAScript
does; for fractions that means shortest round-trip formatting, which is where
implementations historically disagree, and a hash that depends on float formatting is a
trap for the parties that must all compute the same ``manifest_hash``. So:

- integers must lie in the I-JSON range (|n| <= 2**53 - 1, RFC 7493), else rejected;
- a float with no fractional part in that range (``1.0``, as a JSON parser may return for
  ``1.0`` or ``1e3``) is accepted and canonicalised as the integer, exactly as ECMAScript
  prints it (``1``);
- any other float (a fraction, NaN, an infinity, or beyond 2**53) is rejected.

Anything that is not a JSON value (bytes, sets, non-string keys...) is rejected with
:class:`InvalidInputError`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import rfc8785

from sealroom.errors import InvalidInputError

# I-JSON (RFC 7493 section 2.2): integers that every IEEE 754 double represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1


def _normalise(obj: object, where: str, depth: int) -> Any:
    if depth > 64:
        raise InvalidInputError(f"{where}: nested deeper than 64 levels", code="json-not-canonical")
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        if abs(obj) > MAX_SAFE_INTEGER:
            raise InvalidInputError(
                f"{where}: integer {obj} is outside the I-JSON range (|n| <= 2**53 - 1)",
                code="json-not-canonical",
            )
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj) or not obj.is_integer() or abs(obj) > MAX_SAFE_INTEGER:
            raise InvalidInputError(
                f"{where}: number {obj!r} is not an integer; sealroom documents carry "
                "integers only (RFC 8785 number formatting of fractions is not relied on)",
                code="json-not-canonical",
            )
        return int(obj)
    if isinstance(obj, list | tuple):
        return [_normalise(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"{where}: object key {k!r} is not a string", code="json-not-canonical"
                )
            out[k] = _normalise(v, f"{where}.{k}", depth + 1)
        return out
    raise InvalidInputError(
        f"{where}: a {type(obj).__name__} is not a JSON value", code="json-not-canonical"
    )


def canonical_json(obj: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (see the module doc for numbers)."""
    value = _normalise(obj, "$", 0)
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as e:
        # e.g. a string with a lone surrogate, which is not valid UTF-8.
        raise InvalidInputError(f"$: cannot canonicalise: {e}", code="json-not-canonical") from e


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
