"""EAR (EAT Attestation Result) tokens: an appraisal, signed, for parties downstream.

An EAR is a JWT (Veraison profile ``tag:github.com,2023:veraison/ear``) whose claims say,
per submodule, an overall status and an AR4SI trustworthiness vector
(draft-ietf-rats-ar4si-07 section 2.3; values from section 2.3.4, tiers from 2.3.2). A
relying party that trusts the verifier's key can act on the result without re-running
the appraisal. See docs/adr/0005-ear-tokens.md.

Verification trusts only keys the caller supplies (a JWKS). A ``jwk`` in the token header
is a hint at most: it is used only if the very same key is in the caller's JWKS, because
anyone can sign a token with a fresh key and put that key in the header. Only ES256 is
accepted, time is a parameter (``now``), and every claim the profile requires is checked.
``eat_profile`` must be the EAR profile (or one the caller lists), and a token without
``exp`` never expires, so it is refused unless the caller allows that explicitly.

Errors: bytes that are not a JWT (or not JSON) are MalformedEvidenceError; a token that is
well-formed but not authentic, stale, or missing required claims is AttestationError with a
specific ``code``; a bad JWKS or key file is InvalidInputError.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

import sealroom
from sealroom.attestation.appraise import AppraisalResult, RuleResult, SubmodResult, Trust
from sealroom.errors import AttestationError, InvalidInputError, MalformedEvidenceError
from sealroom.files import write_private

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
#: The profile Trustee's attestation service writes into its (EAR-shaped) tokens. Not the
#: EAR profile: accepted only where the caller lists it (``profiles=``, ``--accept-profile``).
TRUSTEE_EAR_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ALGORITHM = "ES256"
DEVELOPER = "sealroom"

#: Name of the extra submodule that carries bundle-level rules (required kinds, ...).
BUNDLE_SUBMOD = "bundle"

# A NumericDate beyond 9999-12-31 cannot be a real issuance time; refusing it early keeps
# datetime conversion total.
_MAX_NUMERIC_DATE = 253402300799
# EAR draft section 3: eat_nonce is 8..64 bytes.
_NONCE_MIN, _NONCE_MAX = 8, 64
# Refuse absurdly large inputs before decoding anything.
_MAX_TOKEN_CHARS = 16 * 1024 * 1024

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# --------------------------------------------------------------------------------------
# AR4SI trust tiers and the vector derived from an appraisal


class EarStatus(enum.StrEnum):
    """AR4SI trustworthiness tiers (draft-ietf-rats-ar4si-07 section 2.3.2)."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"

    @property
    def rank(self) -> int:
        """Severity: none < affirming < warning < contraindicated."""
        return _RANK[self]


_RANK = {
    EarStatus.NONE: 0,
    EarStatus.AFFIRMING: 1,
    EarStatus.WARNING: 2,
    EarStatus.CONTRAINDICATED: 3,
}


def tier_of(value: int) -> EarStatus:
    """The tier of one trustworthiness-claim value (signed 8-bit, section 2.3.2).

    0, 1 and -1 make no claim; 2..31 / -2..-32 affirm; 32..95 / -33..-96 warn;
    96..127 / -97..-128 contraindicate.
    """
    if not -128 <= value <= 127:
        raise ValueError(f"trustworthiness claim {value} is outside -128..127")
    if value < 0:
        # Non-standard bands mirror the standard ones below zero; -1 is verifier malfunction.
        if value == -1:
            return EarStatus.NONE
        if value >= -32:
            return EarStatus.AFFIRMING
        if value >= -96:
            return EarStatus.WARNING
        return EarStatus.CONTRAINDICATED
    if value <= 1:
        return EarStatus.NONE
    if value <= 31:
        return EarStatus.AFFIRMING
    if value <= 95:
        return EarStatus.WARNING
    return EarStatus.CONTRAINDICATED


def status_of(vector: Mapping[str, int]) -> EarStatus:
    """Worst tier over a vector; ``none`` when every claim is 0, 1 or -1 (or there is none)."""
    worst = EarStatus.NONE
    for v in vector.values():
        t = tier_of(v)
        if t.rank > worst.rank:
            worst = t
    return worst


# Values from draft-ietf-rats-ar4si-07 section 2.3.4 ("Specific Claims").
# Every rule of a category passed -> the category's affirming value:
AFFIRMING_VALUE: Mapping[Trust, int] = {
    Trust.INSTANCE_IDENTITY: 2,  # recognized, not known to be compromised
    Trust.CONFIGURATION: 2,  # known and approved config
    Trust.EXECUTABLES: 2,  # only approved executables loaded, during and after boot
    Trust.FILE_SYSTEM: 2,  # only approved files found
    Trust.HARDWARE: 2,  # genuine / supported hardware and firmware
    Trust.RUNTIME_OPAQUE: 2,  # encrypted memory inside a TEE
    Trust.STORAGE_OPAQUE: 2,  # secrets encrypted with keys that never leave the TEE/HSM
    Trust.SOURCED_DATA: 2,  # sources were attested and affirming
}
# Any rule of a category failed -> the category's contraindicated value:
CONTRAINDICATED_VALUE: Mapping[Trust, int] = {
    Trust.INSTANCE_IDENTITY: 96,  # recognized, but its key indicates an untrustworthy device
    Trust.CONFIGURATION: 96,  # unsupportable: unacceptable security vulnerabilities
    Trust.EXECUTABLES: 96,  # contraindicated executables in runtime memory
    Trust.FILE_SYSTEM: 96,  # contraindicated files
    Trust.HARDWARE: 97,  # hardware/firmware not recognized although it should be
    Trust.RUNTIME_OPAQUE: 96,  # memory unacceptably visible to the host
    Trust.STORAGE_OPAQUE: 96,  # persistent secrets stored unencrypted
    Trust.SOURCED_DATA: 96,  # data from contraindicated sources
}
#: hardware 32 ("genuine, but known security vulnerabilities"): the warning used for
#: simulated evidence, which proves nothing about confidentiality, even when allowed.
HARDWARE_UNSAFE = 32

#: Kinds whose verified, non-simulated evidence shows encrypted guest memory in a TEE
#: (AR4SI runtime-opaque 2). A TPM or GPU quote alone says nothing about CPU memory
#: encryption (AR4SI section 2.3.6), so those kinds make no runtime-opaque claim.
ENCRYPTED_MEMORY_KINDS = frozenset({"snp", "tdx", "sgx"})


def trust_vector(
    rules: Sequence[RuleResult],
    *,
    kind: str | None = None,
    simulated: bool = False,
    verified: bool = False,
) -> dict[str, int]:
    """AR4SI trustworthiness vector for one submodule's rules (all eight claims)."""
    vec: dict[str, int] = {}
    for cat in Trust:
        in_cat = [r for r in rules if r.trust is cat]
        if not in_cat:
            vec[cat.value] = 0  # no claim
        elif all(r.passed for r in in_cat):
            vec[cat.value] = AFFIRMING_VALUE[cat]
        else:
            vec[cat.value] = CONTRAINDICATED_VALUE[cat]
    hw = Trust.HARDWARE.value
    ro = Trust.RUNTIME_OPAQUE.value
    if simulated:
        # Simulated evidence is never "affirming" hardware, whatever the policy allows
        # (section 2.3.3: a warning value applies, so the affirming one must not be used).
        if tier_of(vec[hw]) is not EarStatus.CONTRAINDICATED:
            vec[hw] = HARDWARE_UNSAFE
        # A simulated enclave is a host process: its memory is not opaque. Make no claim
        # unless a rule already contraindicated it.
        if vec[ro] == AFFIRMING_VALUE[Trust.RUNTIME_OPAQUE]:
            vec[ro] = 0
    elif verified and kind in ENCRYPTED_MEMORY_KINDS and vec[ro] == 0:
        vec[ro] = AFFIRMING_VALUE[Trust.RUNTIME_OPAQUE]
    return vec


def _submod_claims(sub: SubmodResult, policy_id: str) -> dict[str, Any]:
    if not sub.claims.verified:
        raise ValueError(
            f"submodule {sub.name!r}: an EAR can only be issued for verified claims "
            "(these came from inspect)"
        )
    vec = trust_vector(
        sub.rules,
        kind=sub.claims.kind,
        simulated=sub.claims.simulated,
        verified=sub.claims.verified,
    )
    return {
        "ear.status": status_of(vec).value,
        "ear.trustworthiness-vector": vec,
        "ear.appraisal-policy-id": policy_id,
        "sealroom.kind": sub.claims.kind,
        "sealroom.simulated": bool(sub.claims.simulated),
        # "nonce": a rule bound the verifier's nonce; "not-checked": said plainly, so a
        # relying party never takes an appraisal of archived evidence for a fresh one.
        "sealroom.freshness": sub.freshness,
        "sealroom.claims": sub.claims.to_dict(),
        "sealroom.failed-rules": [r.to_dict() for r in sub.rules if not r.passed],
    }


def _bundle_claims(result: AppraisalResult) -> dict[str, Any]:
    vec = trust_vector(result.bundle_rules)
    return {
        "ear.status": status_of(vec).value,
        "ear.trustworthiness-vector": vec,
        "ear.appraisal-policy-id": result.policy_id,
        "sealroom.kind": BUNDLE_SUBMOD,
        "sealroom.simulated": any(s.claims.simulated for s in result.submods),
        "sealroom.claims": {},
        "sealroom.failed-rules": [r.to_dict() for r in result.bundle_rules if not r.passed],
    }


def ear_claims(
    result: AppraisalResult,
    *,
    now: datetime,
    ttl: timedelta,
    nonce: bytes | None = None,
    verifier_build: str = f"sealroom {sealroom.__version__}",
) -> dict[str, Any]:
    """The unsigned EAR claims-set for ``result`` (what :func:`issue_ear` signs)."""
    _require_aware(now)
    if ttl <= timedelta(0):
        raise ValueError(f"EAR ttl must be positive, got {ttl}")
    if not result.submods and not result.bundle_rules:
        raise ValueError("an EAR needs at least one submodule; the appraisal has none")
    submods: dict[str, Any] = {}
    for sub in result.submods:
        if sub.name == BUNDLE_SUBMOD and result.bundle_rules:
            raise InvalidInputError(
                f"submodule name {BUNDLE_SUBMOD!r} is reserved in EAR tokens for bundle-level "
                "rules; rename the evidence item",
                code="ear-submod-name-reserved",
            )
        if sub.name in submods:
            raise ValueError(f"appraisal names submodule {sub.name!r} twice")
        submods[sub.name] = _submod_claims(sub, result.policy_id)
    if result.bundle_rules:
        submods[BUNDLE_SUBMOD] = _bundle_claims(result)
    iat = int(now.timestamp())
    claims: dict[str, Any] = {
        "eat_profile": EAR_PROFILE,
        "iat": iat,
        "exp": iat + max(1, int(ttl.total_seconds())),
        "ear.verifier-id": {"developer": DEVELOPER, "build": verifier_build},
        "submods": submods,
    }
    if nonce is not None:
        if not _NONCE_MIN <= len(nonce) <= _NONCE_MAX:
            raise InvalidInputError(
                f"EAR nonce is {len(nonce)} bytes, eat_nonce wants {_NONCE_MIN}..{_NONCE_MAX} "
                "bytes",
                code="ear-nonce-length",
            )
        claims["eat_nonce"] = _b64url_encode(nonce)
    return claims


def issue_ear(
    result: AppraisalResult,
    key: VerifierKey,
    *,
    now: datetime,
    ttl: timedelta,
    nonce: bytes | None = None,
    verifier_build: str = f"sealroom {sealroom.__version__}",
) -> str:
    """Sign ``result`` as an EAR JWT (ES256, header ``kid`` = the key's JWK thumbprint).

    One submodule per :class:`SubmodResult`, plus a ``bundle`` submodule when the appraisal
    has bundle-level rules. ``now`` is the issue time; the token expires ``ttl`` later.
    """
    claims = ear_claims(result, now=now, ttl=ttl, nonce=nonce, verifier_build=verifier_build)
    return jwt.encode(
        claims,
        key.private_key,
        algorithm=ALGORITHM,
        headers={"typ": "JWT", "kid": key.kid},
    )


# --------------------------------------------------------------------------------------
# Keys


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict base64url (RFC 7515 section 2: no padding, URL-safe alphabet)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _coordinate(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidInputError(f"JWK {name} is {value!r}, want a base64url string")
    try:
        raw = _b64url_decode(value)
    except (ValueError, binascii.Error) as e:
        raise InvalidInputError(f"JWK {name} is not base64url: {value!r}") from e
    if len(raw) != 32:
        raise InvalidInputError(f"JWK {name} is {len(raw)} bytes, P-256 wants 32")
    return raw


def public_key_from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """An EC P-256 public key from a JWK; InvalidInputError for anything else."""
    if not isinstance(jwk, Mapping):
        raise InvalidInputError(f"JWK is a {type(jwk).__name__}, want a JSON object")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidInputError(
            f"JWK kty/crv is {jwk.get('kty')!r}/{jwk.get('crv')!r}, want 'EC'/'P-256'"
        )
    if "d" in jwk:
        raise InvalidInputError("JWK carries a private key ('d'); publish only public keys")
    x, y = _coordinate(jwk, "x"), _coordinate(jwk, "y")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError as e:
        raise InvalidInputError("JWK x/y is not a point on P-256") from e


def _public_members(pub: ec.EllipticCurvePublicKey) -> dict[str, str]:
    nums = pub.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url_encode(nums.x.to_bytes(32, "big")),
        "y": _b64url_encode(nums.y.to_bytes(32, "big")),
    }


def thumbprint(pub: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key.

    Section 3.2: the required members (crv, kty, x, y for EC) in lexicographic order,
    no whitespace.
    """
    canonical = json.dumps(_public_members(pub), separators=(",", ":"), sort_keys=True)
    h = hashes.Hash(hashes.SHA256())
    h.update(canonical.encode("ascii"))
    return _b64url_encode(h.finalize())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    return thumbprint(public_key_from_jwk(jwk))


@dataclass(frozen=True)
class VerifierKey:
    """The ES256 (P-256) key this verifier signs EAR tokens with."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.private_key.curve, ec.SECP256R1
        ):
            raise TypeError("VerifierKey needs an EC P-256 private key")

    def __repr__(self) -> str:
        return f"VerifierKey(kid={self.kid!r})"

    @classmethod
    def generate(cls) -> VerifierKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VerifierKey:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InvalidInputError(
                f"cannot read verifier key {p}: {e.strerror or e}", code="key-unreadable"
            ) from e
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise InvalidInputError(
                f"verifier key {p} is not an unencrypted PEM private key", code="key-invalid"
            ) from e
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise InvalidInputError(
                f"verifier key {p} is a {type(key).__name__.lstrip('_')}, want EC P-256 (ES256)",
                code="key-invalid",
            )
        return cls(key)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        """Write PEM PKCS#8, mode 0600, atomically (temp file in the same folder, then
        rename). With ``overwrite=False`` an existing file is left alone (FileExistsError)."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(Path(path), pem, overwrite=overwrite, what="verifier key")

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> VerifierKey:
        p = Path(path)
        if p.exists():
            return cls.load(p)
        # The folder holds a private key: create it private (an existing one is left as is).
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = cls.generate()
        try:
            key.save(p, overwrite=False)
        except FileExistsError:
            # Another process created it first: use theirs, so every token verifies.
            return cls.load(p)
        return key

    # The key never changes (frozen): its public half, members and thumbprint are computed
    # once, not on every EAR signed or JWKS served.
    @functools.cached_property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @functools.cached_property
    def _members(self) -> dict[str, str]:
        return _public_members(self.public_key)

    @functools.cached_property
    def kid(self) -> str:
        return thumbprint(self.public_key)

    def public_jwk(self) -> dict[str, str]:
        return {**self._members, "alg": ALGORITHM, "use": "sig", "kid": self.kid}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.public_jwk()]}


class _TrustedKey(NamedTuple):
    thumbprint: str
    kid: str | None
    key: ec.EllipticCurvePublicKey


def _strict_json(data: bytes, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate member {k!r}")
            out[k] = v
        return out

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedEvidenceError(f"{what} is not valid JSON: {e}", code="ear-malformed") from e


def load_jwks(data: bytes) -> dict[str, Any]:
    """Parse a JWKS (``{"keys": [...]}``) or a single JWK (wrapped into a JWKS).

    Every ES256-capable key (EC P-256) is checked; other key types are kept but never used.
    """
    try:
        doc = _strict_json(data, "JWKS")
    except MalformedEvidenceError as e:
        raise InvalidInputError(e.message, code="jwks-invalid") from e
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        jwks = {"keys": list(doc["keys"])}
    elif isinstance(doc, dict) and "kty" in doc:
        jwks = {"keys": [doc]}
    else:
        raise InvalidInputError(
            'want a JWKS ({"keys": [...]}) or a single JWK ({"kty": ...}), got '
            + (
                f"an object with members {sorted(doc)[:6]}"
                if isinstance(doc, dict)
                else f"a JSON {type(doc).__name__}"
            ),
            code="jwks-invalid",
        )
    _trusted_keys(jwks)  # validate now, not at first use
    return jwks


def _trusted_keys(jwks: Mapping[str, Any]) -> list[_TrustedKey]:
    """The usable keys of ``jwks``. Parsed once per JWKS text: a relying party (the key
    broker on every resource request) passes the same JWKS each time, and building the
    EC points and thumbprints again cost more than the signature check."""
    try:
        text = json.dumps(jwks, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return _parse_trusted_keys(jwks)  # not JSON (a caller's odd mapping): no cache
    return list(_trusted_keys_of(text))


@functools.lru_cache(maxsize=32)
def _trusted_keys_of(text: str) -> tuple[_TrustedKey, ...]:
    return tuple(_parse_trusted_keys(json.loads(text)))


def _parse_trusted_keys(jwks: Mapping[str, Any]) -> list[_TrustedKey]:
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise InvalidInputError('JWKS must be an object {"keys": [...]}', code="jwks-invalid")
    out: list[_TrustedKey] = []
    for i, jwk in enumerate(jwks["keys"]):
        if not isinstance(jwk, Mapping):
            raise InvalidInputError(f"JWKS key {i} is not a JSON object", code="jwks-invalid")
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue  # not usable for ES256
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", ALGORITHM) != ALGORITHM:
            continue  # published for something else
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidInputError(
                f"JWKS key {i} kid is {kid!r}, want a string", code="jwks-invalid"
            )
        try:
            pub = public_key_from_jwk(jwk)
        except InvalidInputError as e:
            raise InvalidInputError(f"JWKS key {i}: {e.message}", code="jwks-invalid") from e
        out.append(_TrustedKey(thumbprint(pub), kid, pub))
    return out


# --------------------------------------------------------------------------------------
# Parsed tokens


@dataclass(frozen=True)
class VerifierId:
    developer: str
    build: str


class EarSubmod(NamedTuple):
    status: EarStatus
    vector: dict[str, int]
    policy_id: str | None


@dataclass(frozen=True)
class EarToken:
    """A verified EAR (or, from :func:`parse_ear_claims`, a checked claims-set).

    ``key_thumbprint`` is the RFC 7638 thumbprint of the key that verified the signature
    (None when only the claims were parsed).
    """

    header: dict[str, Any]
    claims: dict[str, Any]
    eat_profile: str
    iat: datetime
    exp: datetime | None
    not_before: datetime | None
    nonce: bytes | None
    nonces: tuple[bytes, ...]
    verifier_id: VerifierId
    submods: dict[str, EarSubmod]
    key_thumbprint: str | None = None

    @property
    def status(self) -> EarStatus:
        """Worst submodule status."""
        worst = EarStatus.NONE
        for s in self.submods.values():
            if s.status.rank > worst.rank:
                worst = s.status
        return worst

    def simulated(self, submod: str) -> bool:
        """True when sealroom marked the submodule's evidence as simulated."""
        sub = self.claims.get("submods", {}).get(submod, {})
        return isinstance(sub, dict) and sub.get("sealroom.simulated") is True


def _invalid(field: str, got: Any, want: str) -> AttestationError:
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return AttestationError(f"EAR claim {field} is {shown}, want {want}", code="ear-claims-invalid")


def _missing(field: str) -> AttestationError:
    return AttestationError(
        f"EAR claim {field} is absent, the EAR profile requires it", code="ear-claim-missing"
    )


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> datetime | None:
    if name not in claims:
        if required:
            raise _missing(name)
        return None
    v = claims[name]
    # EAT (RFC 9711 section 4.3.1) and the EAR draft forbid floating-point times.
    if isinstance(v, bool) or not isinstance(v, int):
        raise _invalid(name, v, "an integer NumericDate (seconds since the epoch)")
    if not 0 <= v <= _MAX_NUMERIC_DATE:
        raise _invalid(name, v, f"a NumericDate in 0..{_MAX_NUMERIC_DATE}")
    return datetime.fromtimestamp(v, tz=UTC)


def _decode_nonce(field: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise _invalid(field, value, "a base64url string")
    text = value.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return _b64url_decode(text)
    except (ValueError, binascii.Error) as e:
        raise _invalid(field, value, "a base64url string") from e


def _nonces(claims: Mapping[str, Any]) -> tuple[bytes, ...]:
    if "eat_nonce" not in claims:
        return ()
    v = claims["eat_nonce"]
    if isinstance(v, list):
        if not v:
            raise _invalid("eat_nonce", v, "a base64url string or a non-empty array of them")
        return tuple(_decode_nonce(f"eat_nonce[{i}]", x) for i, x in enumerate(v))
    return (_decode_nonce("eat_nonce", v),)


def _parse_vector(name: str, v: Any) -> dict[str, int]:
    field = f"submods.{name}.ear.trustworthiness-vector"
    if not isinstance(v, dict):
        raise _invalid(field, v, "an object of trustworthiness claims")
    out: dict[str, int] = {}
    for k, x in v.items():
        if isinstance(x, bool) or not isinstance(x, int) or not -128 <= x <= 127:
            raise _invalid(f"{field}.{k}", x, "an integer in -128..127")
        out[k] = x
    return out


def _parse_submod(name: str, sub: Any) -> EarSubmod:
    if not isinstance(sub, dict):
        raise _invalid(f"submods.{name}", sub, "an EAR appraisal object")
    if "ear.status" not in sub:
        raise AttestationError(
            f"EAR submodule {name!r} has no ear.status", code="ear-status-invalid"
        )
    raw = sub["ear.status"]
    try:
        status = EarStatus(raw) if isinstance(raw, str) else None
    except ValueError:
        status = None
    if status is None:
        raise AttestationError(
            f"EAR claim submods.{name}.ear.status is {raw!r}, want one of "
            f"{', '.join(s.value for s in EarStatus)}",
            code="ear-status-invalid",
        )
    vector = (
        _parse_vector(name, sub["ear.trustworthiness-vector"])
        if "ear.trustworthiness-vector" in sub
        else {}
    )
    # EAR draft section 3.1: ear.status is of no higher trust than the worst claim in the
    # vector. A token saying "affirming" over a contraindicated vector is not believed.
    worst = status_of(vector)
    if worst.rank >= EarStatus.WARNING.rank and status.rank < worst.rank:
        raise AttestationError(
            f"EAR submodule {name!r} says ear.status {status.value} but its trustworthiness "
            f"vector is {worst.value} ({_fmt_vector(vector)})",
            code="ear-status-inconsistent",
        )
    policy = sub.get("ear.appraisal-policy-id")
    if policy is not None and not isinstance(policy, str):
        raise _invalid(f"submods.{name}.ear.appraisal-policy-id", policy, "a string")
    return EarSubmod(status, vector, policy)


def _fmt_vector(vector: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in vector.items() if v not in (0, 1, -1)) or "no claims"


def parse_ear_claims(
    claims: Mapping[str, Any],
    *,
    header: Mapping[str, Any] | None = None,
    key_thumbprint: str | None = None,
    profiles: Collection[str] = (EAR_PROFILE,),
) -> EarToken:
    """Check an EAR claims-set against the profile; no signature, time or nonce checks.

    ``eat_profile`` must be one of ``profiles`` (default: the EAR profile only): claims
    written to another profile mean other things, even where the names look alike.
    Used by :func:`verify_ear` after the signature verified, and directly for unsigned
    claim sets (tests, tooling).
    """
    if not profiles:
        raise ValueError("profiles must name at least one accepted eat_profile")
    if not isinstance(claims, Mapping):
        raise MalformedEvidenceError(
            f"EAR claims are a JSON {type(claims).__name__}, want an object", code="ear-malformed"
        )
    if "eat_profile" not in claims:
        raise _missing("eat_profile")
    profile = claims["eat_profile"]
    if not isinstance(profile, str) or not profile:
        raise _invalid("eat_profile", profile, "a profile URI string")
    if profile not in profiles:
        raise AttestationError(
            f"EAR eat_profile is {profile!r}, want {' or '.join(map(repr, profiles))} "
            "(a token of another profile is not an EAR this verifier understands)",
            code="ear-profile-unknown",
        )
    iat = _numeric_date(claims, "iat", required=True)
    assert iat is not None
    exp = _numeric_date(claims, "exp", required=False)
    nbf = _numeric_date(claims, "nbf", required=False)
    if "ear.verifier-id" not in claims:
        raise _missing("ear.verifier-id")
    vid = claims["ear.verifier-id"]
    if not isinstance(vid, dict):
        raise _invalid("ear.verifier-id", vid, "an object {developer, build}")
    for member in ("developer", "build"):
        if not isinstance(vid.get(member), str) or not vid[member]:
            raise _invalid(f"ear.verifier-id.{member}", vid.get(member), "a non-empty string")
    if "submods" not in claims:
        raise _missing("submods")
    raw_submods = claims["submods"]
    if not isinstance(raw_submods, dict) or not raw_submods:
        raise _invalid("submods", raw_submods, "a non-empty object of EAR appraisals")
    submods = {name: _parse_submod(name, sub) for name, sub in raw_submods.items()}
    nonces = _nonces(claims)
    return EarToken(
        header=dict(header or {}),
        claims=dict(claims),
        eat_profile=profile,
        iat=iat,
        exp=exp,
        not_before=nbf,
        nonce=nonces[0] if nonces else None,
        nonces=nonces,
        verifier_id=VerifierId(vid["developer"], vid["build"]),
        submods=submods,
        key_thumbprint=key_thumbprint,
    )


# --------------------------------------------------------------------------------------
# Verification


#: PyJWT's ES256 (ECDSA P-256, SHA-256, raw r||s signature) over the JWS signing input.
_ES256 = ECAlgorithm(ECAlgorithm.SHA256)


def _split(token: str | bytes) -> tuple[str, list[str]]:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as e:
            raise MalformedEvidenceError("EAR token is not ASCII", code="ear-malformed") from e
    if not isinstance(token, str):
        raise TypeError(f"token must be str or bytes, got {type(token).__name__}")
    if len(token) > _MAX_TOKEN_CHARS:
        raise MalformedEvidenceError(
            f"EAR token is {len(token)} characters, more than {_MAX_TOKEN_CHARS}",
            code="ear-malformed",
        )
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedEvidenceError(
            f"EAR token has {len(parts)} dot-separated parts, a JWS compact token has 3",
            code="ear-malformed",
        )
    for name, part in zip(("header", "payload"), parts[:2], strict=True):
        if not part:
            raise MalformedEvidenceError(f"EAR token {name} is empty", code="ear-malformed")
    for name, part in zip(("header", "payload", "signature"), parts, strict=True):
        if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
            raise MalformedEvidenceError(f"EAR token {name} is not base64url", code="ear-malformed")
    return token, parts


def _select_keys(header: Mapping[str, Any], jwks: Mapping[str, Any]) -> list[_TrustedKey]:
    keys = _trusted_keys(jwks)
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedEvidenceError(
            f"EAR header kid is {kid!r}, want a string", code="ear-malformed"
        )
    if "jwk" in header:
        # RFC 7515 section 4.1.3 lets a token carry its key; trusting it would let anyone
        # mint tokens. It only narrows the choice among keys the caller already trusts.
        try:
            embedded = jwk_thumbprint(header["jwk"])
        except InvalidInputError as e:
            raise AttestationError(
                f"EAR header jwk is not a usable ES256 key ({e.message}) and is never trusted "
                "by itself",
                code="ear-key-untrusted",
            ) from e
        keys = [k for k in keys if k.thumbprint == embedded]
        if not keys:
            raise AttestationError(
                f"EAR header carries its own key (JWK thumbprint {embedded}) that is not in "
                "the caller's JWKS; a key embedded in a token is never trusted by itself",
                code="ear-key-untrusted",
            )
    if kid is not None:
        keys = [k for k in keys if kid in (k.kid, k.thumbprint)]
        if not keys:
            raise AttestationError(
                f"EAR header kid {kid!r} names no ES256 key in the caller's JWKS",
                code="ear-key-unknown",
            )
    if not keys:
        raise AttestationError(
            "the caller's JWKS holds no ES256 (EC P-256) signing key to verify the EAR with",
            code="ear-key-unknown",
        )
    return keys


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")


def verify_ear(
    token: str | bytes,
    jwks: Mapping[str, Any],
    *,
    now: datetime,
    expected_nonce: bytes | None = None,
    leeway: timedelta = timedelta(0),
    profiles: Collection[str] = (EAR_PROFILE,),
    allow_missing_exp: bool = False,
) -> EarToken:
    """Verify an EAR JWT against the caller's keys at time ``now``; return its claims.

    Steps: strict JWS compact syntax; header ``alg`` is ES256 (nothing else, ever); the
    verifying key comes from ``jwks`` (by ``kid`` if present, a header ``jwk`` only if it is
    in ``jwks``); signature; profile claims (``eat_profile`` one of ``profiles``);
    ``exp`` present unless ``allow_missing_exp``; ``iat``/``nbf``/``exp`` against ``now``
    with ``leeway``; ``eat_nonce`` equals ``expected_nonce`` when one is given.
    """
    _require_aware(now)
    if leeway < timedelta(0):
        raise ValueError("leeway must not be negative")
    text, parts = _split(token)
    header = _strict_json(_b64url_decode(parts[0]), "EAR header")
    if not isinstance(header, dict):
        raise MalformedEvidenceError("EAR header is not a JSON object", code="ear-malformed")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise AttestationError(
            f"EAR header alg is {alg!r}, only {ALGORITHM} is accepted",
            code="ear-algorithm-not-allowed",
        )
    if "crit" in header:
        raise AttestationError(
            f"EAR header marks {header['crit']!r} critical; no JWS extension is supported",
            code="ear-header-unsupported",
        )
    payload = _strict_json(_b64url_decode(parts[1]), "EAR payload")
    if not isinstance(payload, dict):
        raise MalformedEvidenceError("EAR payload is not a JSON object", code="ear-malformed")
    signature = _b64url_decode(parts[2])
    if len(signature) != 64:
        raise AttestationError(
            f"EAR signature is {len(signature)} bytes, ES256 (r||s) is 64",
            code="ear-signature-invalid",
        )
    candidates = _select_keys(header, jwks)
    used: str | None = None
    # The token's syntax, header and payload are checked above (strict base64url, strict
    # JSON, alg ES256 only, no crit); what is left is the ES256 signature over the JWS
    # signing input, checked by PyJWT's ES256 algorithm (jwt.decode would parse and check
    # every character of the token again in Python: a third of a resource request).
    signing_input = text.rsplit(".", 1)[0].encode("ascii")
    for cand in candidates:
        if _ES256.verify(signing_input, cand.key, signature):
            used = cand.thumbprint
            break
    if used is None:
        which = (
            f"key {candidates[0].thumbprint}"
            if len(candidates) == 1
            else f"any of {len(candidates)} keys"
        )
        raise AttestationError(
            f"EAR signature does not verify with {which} in the caller's JWKS",
            code="ear-signature-invalid",
        )
    result = parse_ear_claims(payload, header=header, key_thumbprint=used, profiles=profiles)
    if result.exp is None and not allow_missing_exp:
        raise AttestationError(
            "EAR exp is absent: the token never expires, so an old appraisal could be replayed "
            "forever; refused unless the caller allows it explicitly (allow_missing_exp, "
            "--allow-no-exp)",
            code="ear-exp-missing",
        )
    _check_time(result, now, leeway)
    if expected_nonce is not None:
        _check_nonce(result, expected_nonce)
    return result


def _check_time(tok: EarToken, now: datetime, leeway: timedelta) -> None:
    when = now.astimezone(UTC).isoformat()
    # RFC 7519 section 4.1.4: reject on or after exp.
    if tok.exp is not None and now >= tok.exp + leeway:
        raise AttestationError(
            f"EAR exp is {tok.exp.isoformat()}, now is {when}: the token has expired",
            code="ear-expired",
        )
    if tok.iat > now + leeway:
        raise AttestationError(
            f"EAR iat is {tok.iat.isoformat()}, now is {when}: issued in the future",
            code="ear-not-yet-valid",
        )
    if tok.not_before is not None and now + leeway < tok.not_before:
        raise AttestationError(
            f"EAR nbf is {tok.not_before.isoformat()}, now is {when}: not valid yet",
            code="ear-not-yet-valid",
        )


def _check_nonce(tok: EarToken, expected: bytes) -> None:
    if not tok.nonces:
        raise AttestationError(
            f"EAR eat_nonce is absent, caller expected {expected.hex()}",
            code="ear-nonce-mismatch",
        )
    if expected not in tok.nonces:
        raise AttestationError(
            f"EAR eat_nonce is {', '.join(n.hex() for n in tok.nonces)}, caller expected "
            f"{expected.hex()}",
            code="ear-nonce-mismatch",
        )
