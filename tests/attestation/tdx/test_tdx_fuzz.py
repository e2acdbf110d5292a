"""Hypothesis: only MalformedEvidenceError escapes the DCAP parsers (quote, PCK extension,
collateral JSON), and only SealroomErrors escape verification."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tdx import collateral as coll
from sealroom.attestation.tdx.abi import Quote
from sealroom.attestation.tdx.pck import parse_sgx_extension_der
from sealroom.errors import MalformedEvidenceError, SealroomError
from sealroom.testing.fake_intel import FakeIntelPki, sgx_extension_der

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 1, 15, tzinfo=UTC)
PKI = FakeIntelPki(NOW)
SEEDS = [
    PKI.quote(),
    PKI.quote(PKI.td_body(tee_tcb_svn2=bytes(16), mr_servicetd=bytes(48)), version=5),
    PKI.quote(version=3),
]
COLLATERAL = PKI.collateral()
TCB_RESPONSE = json.dumps(
    {"tcbInfo": json.loads(json.loads(COLLATERAL)["tcb_info"]), "signature": "00" * 64}
).encode()
EXT = sgx_extension_der(
    ppid=bytes(16),
    components=(1,) * 16,
    pce_svn=13,
    cpu_svn=bytes(16),
    pce_id=bytes(2),
    fmspc=bytes(6),
    sgx_type=1,
)


def _parse_or_malformed(data: bytes) -> None:
    try:
        q = Quote.from_bytes(data)
    except MalformedEvidenceError:
        return
    assert q.to_bytes() == data  # whatever parses round-trips exactly


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=6000))
def test_random_bytes_quote_parser(data: bytes) -> None:
    _parse_or_malformed(data)


@FUZZ
@given(mutated(SEEDS))
def test_mutated_quotes_parser(data: bytes) -> None:
    _parse_or_malformed(data)


@FUZZ
@given(mutated(SEEDS))
def test_mutated_quotes_verify_raise_only_sealroom_errors(data: bytes) -> None:
    for name in ("tdx", "sgx"):
        kind = kinds.get(name)
        try:
            kind.verify(
                EvidenceItem(name, data, {"collateral": COLLATERAL}),
                VerifyContext(now=NOW, extra_roots=(PKI.root.cert,)),
            )
        except SealroomError:
            pass
        try:
            kind.inspect(EvidenceItem(name, data))
        except MalformedEvidenceError:
            pass
        try:
            if kind.sniff(data):
                kind.load(data)
        except MalformedEvidenceError:
            pass


@FUZZ
@given(mutated([EXT]))
def test_mutated_pck_extension(data: bytes) -> None:
    try:
        parse_sgx_extension_der(data)
    except MalformedEvidenceError:
        pass


def _collateral_or_malformed(data: bytes) -> None:
    try:
        coll.parse_collateral_file(data)
    except MalformedEvidenceError:
        pass


@FUZZ
@given(mutated([COLLATERAL, TCB_RESPONSE]))
def test_mutated_collateral_files(data: bytes) -> None:
    _collateral_or_malformed(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def _tcb_like(data: st.DataObject) -> dict[str, Any]:
    """The real TCB info with some members replaced by arbitrary JSON."""
    info: dict[str, Any] = json.loads(json.loads(COLLATERAL)["tcb_info"])
    for key in data.draw(st.lists(st.sampled_from([*info, "tdxModuleIdentities"]), max_size=3)):
        info[key] = data.draw(JSON)
    levels = info.get("tcbLevels")
    level = levels[0] if isinstance(levels, list) and levels else None
    if isinstance(level, dict) and data.draw(st.booleans()):
        which = data.draw(st.sampled_from(["tcb", "tcbStatus", "tcbDate", "advisoryIDs"]))
        level[which] = data.draw(JSON)
    return info


@FUZZ
@given(st.data())
def test_structured_collateral_json(data: st.DataObject) -> None:
    info = _tcb_like(data)
    body = json.dumps({"tcbInfo": info, "signature": "00" * 64}).encode()
    _collateral_or_malformed(body)
    bundle = json.loads(COLLATERAL)
    bundle["tcb_info"] = json.dumps(info)
    key = data.draw(st.sampled_from(sorted(bundle)))
    if data.draw(st.booleans()):
        bundle[key] = data.draw(JSON)
    _collateral_or_malformed(json.dumps(bundle).encode())


@FUZZ
@given(JSON)
def test_arbitrary_json_collateral(value: Any) -> None:
    _collateral_or_malformed(json.dumps(value).encode())


def test_deeply_nested_json_is_malformed() -> None:
    deep = b'{"tcbInfo":' + b"[" * 100_000 + b"]" * 100_000 + b',"signature":""}'
    _collateral_or_malformed(deep)
    huge = b'{"tcb_info": "{\\"version\\": ' + b"9" * 10_000 + b'}"}'
    _collateral_or_malformed(huge)
