"""The enclave's HTTPS answers are one contract (sealroom.protocol.enclave_api): the
runtime's server builds them, the pinned client parses them into the same models, and an
answer that breaks the contract is a typed error, never a KeyError.

The malformed-answer tests run a real attested enclave in this process (sim TEE service,
the runtime's Computation and HTTPS server on 127.0.0.1) whose server is made to answer
one endpoint out of contract; the client attests it for real, pins its TLS key, and then
meets the bad answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.sim.service import SimTeeService
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys
from sealroom.errors import MalformedEvidenceError, UnavailableError
from sealroom.hostagent.launcher import runtime_measurement
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import EnclavePublicKeys
from sealroom.protocol.enclave_api import (
    AttestationAnswer,
    ChallengeAnswer,
    EnclaveEvent,
    EventsAnswer,
    PublicKeysWire,
    StatusAnswer,
    UploadAnswer,
    _Answer,
    parse_answer,
)
from sealroom.protocol.lifecycle import State
from sealroom.runtime.computation import Computation
from sealroom.runtime.server import EnclaveServer, _BodyReader, _Handler, serve_in_thread
from sealroom.tee.base import open_provider

SHA = "ab" * 32
KEYS = EnclavePublicKeys(b"\x30" * 44, b"\x01" * 32, b"\x02" * 32)


@pytest.mark.parametrize(
    "answer",
    [
        AttestationAnswer(
            evidence={"format": "sealroom-evidence/v1", "items": []},
            enclave_keys=PublicKeysWire.of(KEYS),
            keys_digest=KEYS.digest.hex(),
            manifest_hash=SHA,
            manifest={"version": 1, "id": "x"},
            nonce="00" * 32,
        ),
        StatusAnswer(
            manifest_hash=SHA,
            state=State.AWAITING_INPUTS,
            reason="",
            slots={"algorithm": "filled", "a": "uploading", "b": "empty"},
            limits={"vcpus": 1},
        ),
        EventsAnswer(
            events=[
                EnclaveEvent(time="2026-01-01T00:00:00+00:00", seq=1, type="started"),
                EnclaveEvent(seq=2, type="upload_rejected", slot="a", code="upload-too-large"),
                EnclaveEvent(seq=3, type="completed", message="ok", ok=True),
            ]
        ),
        ChallengeAnswer(challenge="cd" * 32),
        UploadAnswer(slot="a", sha256=SHA, size=2),
    ],
    ids=lambda a: type(a).__name__,
)
def test_enclave_answer_round_trips_through_json(answer: _Answer) -> None:
    body = json.dumps(answer.wire()).encode()
    assert parse_answer(type(answer), body, "test") == answer


def test_event_wire_omits_absent_data_fields() -> None:
    """Byte-compatible with the runtime's event dicts: a field the event has not is absent,
    not null (public views carry only the fields PUBLIC_EVENT_FIELDS allows and has)."""
    wire = EnclaveEvent(time="t", seq=1, type="started", message="m").wire()
    assert wire == {"time": "t", "seq": 1, "type": "started", "message": "m"}


def test_attestation_answer_keys_are_the_enclave_keys() -> None:
    assert PublicKeysWire.of(KEYS).keys() == KEYS


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (StatusAnswer, b"not json"),
        (StatusAnswer, b"[]"),
        (StatusAnswer, json.dumps({"manifest_hash": SHA, "state": "exited"}).encode()),
        (StatusAnswer, json.dumps({"manifest_hash": SHA, "state": "running", "slots": 5}).encode()),
        (EventsAnswer, json.dumps({"events": [{"type": "started"}]}).encode()),  # no seq
        (EventsAnswer, json.dumps({"evnts": []}).encode()),
        (ChallengeAnswer, json.dumps({"challenge": "zz"}).encode()),
        (ChallengeAnswer, json.dumps({"challenge": "00"}).encode()),  # too short to be one
        (UploadAnswer, json.dumps({"slot": "a", "sha256": "12", "size": 2}).encode()),
        (UploadAnswer, json.dumps({"slot": "a", "sha256": SHA, "size": -1}).encode()),
    ],
)
def test_answer_out_of_contract_is_bad_response(model: type[_Answer], body: bytes) -> None:
    with pytest.raises(UnavailableError) as e:
        parse_answer(model, body, "GET /x")
    assert e.value.code == "bad-response"
    assert "GET /x" in e.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        json.dumps({"evidence": {}, "enclave_keys": {"tls_spki": "zz"}}).encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_attestation_answer_is_malformed_evidence(body: bytes) -> None:
    with pytest.raises(MalformedEvidenceError, match="GET /attestation"):
        parse_answer(AttestationAnswer, body, "GET /attestation")


# ---- a real attested enclave whose server breaks the contract on one endpoint ---------


def _manifest(tmp: Path, provider: PartyKeys, consumer: PartyKeys) -> Manifest:
    def pub(k: PartyKeys) -> dict[str, str]:
        return k.public.to_json_obj()

    return Manifest.from_dict(
        {
            "version": 1,
            "id": "answers",
            "name": "enclave answers",
            "algorithm": {
                "kind": "python",
                "sha256": hashlib.sha256(b"print(1)").hexdigest(),
                "provider": pub(provider),
                "entrypoint": "main.py",
                "args": [],
            },
            "datasets": [
                {
                    "name": "a",
                    "sha256": hashlib.sha256(b"20").hexdigest(),
                    "provider": pub(provider),
                    "max_size": 1024,
                }
            ],
            "consumers": [pub(consumer)],
            "policy": {
                "version": 1,
                "allow_simulated": True,
                "require": ["snp"],
                "snp": {"measurements": [runtime_measurement().hex()], "vmpl": [0]},
            },
            "limits": {
                "vcpus": 1,
                "memory_mb": 256,
                "wall_seconds": 30,
                "max_result_bytes": 1 << 20,
            },
        }
    )


#: What the broken server sends instead of the contract's answer, by path.
BROKEN: dict[str, bytes] = {}


class _OutOfContractHandler(_Handler):
    def _route(self, method: str, path: list[str], query: dict[str, str]) -> None:
        body = BROKEN.get("/" + "/".join(path))
        if body is None:
            super()._route(method, path, query)
            return
        if self._body is None and method == "PUT":  # read the upload, as the runtime does
            self._body = _BodyReader(self.rfile, int(self.headers.get("Content-Length", "0")))
            self._body.read()
        self.send_response(201 if method == "PUT" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Enclave:
    def __init__(self, url: str, manifest: Manifest, root: Any, party: PartyKeys) -> None:
        self.url, self.manifest, self.root, self.party = url, manifest, root, party

    def client(self) -> EnclaveClient:
        return EnclaveClient(self.url, self.manifest, extra_roots=(self.root,))


@pytest.fixture
def enclave(tmp_path: Path) -> Iterator[Enclave]:
    party = PartyKeys.generate("p")
    manifest = _manifest(tmp_path, party, PartyKeys.generate("c"))
    authority = SimAuthority.load_or_create(tmp_path / "sim-authority")
    service = SimTeeService(
        authority,
        measurement=runtime_measurement(),
        host_data=manifest.manifest_hash,
        socket_path=tmp_path / "sim-tee.sock",
    )
    service.start()
    comp = Computation(manifest, tmp_path / "work", open_provider(f"sim:{service.socket_path}"))
    server = EnclaveServer(("127.0.0.1", 0), comp)
    server.RequestHandlerClass = _OutOfContractHandler
    serve_in_thread(server)
    try:
        yield Enclave(server.url, manifest, authority.root, party)
    finally:
        BROKEN.clear()
        server.shutdown()
        server.server_close()
        service.stop()


def test_enclave_in_contract_answers_parse(enclave: Enclave, tmp_path: Path) -> None:
    """The runtime's own answers fit the contract (the control for the tests below)."""
    c = enclave.client()
    c.attest()
    status = c.status()
    assert status.state is State.AWAITING_INPUTS
    assert status.slots == {"algorithm": "empty", "a": "empty"}
    assert [e.type for e in c.events(0)] == ["started"]
    data = tmp_path / "a"
    data.write_bytes(b"20")
    accepted = c.upload("a", data, enclave.party)
    assert (accepted.slot, accepted.size) == ("a", 2)
    assert accepted.sha256 == hashlib.sha256(b"20").hexdigest()
    assert c.status().slots["a"] == "filled"
    last = c.events(0)[-1]
    assert (last.type, last.slot) == ("upload_accepted", "a")


@pytest.mark.parametrize(
    ("path", "body", "call"),
    [
        ("/status", b'{"state": "running"}', lambda c, f, p: c.status()),
        ("/status", b"<html>proxy error</html>", lambda c, f, p: c.status()),
        ("/events", b'{"events": [{"seq": "x", "type": 1}]}', lambda c, f, p: c.events(0)),
        ("/events", b'{"events": {}}', lambda c, f, p: c.events(0)),
        ("/slots/a", b'{"slot": "a"}', lambda c, f, p: c.upload("a", f, p)),
        ("/challenge", b'{"nonce": "00"}', lambda c, f, p: c._challenge_signed(p, _msg)),
        ("/receipt", b"[]", lambda c, f, p: c.receipt()),
        ("/receipt", b"{not json", lambda c, f, p: c.receipt()),
    ],
    ids=[
        "status-missing-fields",
        "status-not-json",
        "events-bad-event",
        "events-not-list",
        "upload-answer-missing-fields",
        "challenge-missing",
        "receipt-not-object",
        "receipt-not-json",
    ],
)
def test_malformed_enclave_answer_is_typed_error_not_crash(
    enclave: Enclave, tmp_path: Path, path: str, body: bytes, call: Any
) -> None:
    """An attested enclave (or whatever answers on its pinned key) that sends an answer out
    of contract gets an UnavailableError naming the request, not a KeyError."""
    c = enclave.client()
    c.attest()
    data = tmp_path / "a"
    data.write_bytes(b"20")
    BROKEN[path] = body
    with pytest.raises(UnavailableError) as e:
        call(c, data, enclave.party)
    assert e.value.code == "bad-response"
    assert path in e.value.message


def _msg(mh: bytes, kd: bytes, name: str, ch: bytes) -> bytes:
    return mh + kd + name.encode() + ch


def test_malformed_attestation_answer_from_enclave_is_malformed_evidence(
    enclave: Enclave,
) -> None:
    BROKEN["/attestation"] = json.dumps({"evidence": [], "enclave_keys": {}}).encode()
    with pytest.raises(MalformedEvidenceError, match="GET /attestation"):
        enclave.client().attest()
