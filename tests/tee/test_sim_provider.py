"""The sim TEE over a real Unix socket: host-side service, guest-side provider."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.sim.service import MAX_REQUEST, SimTeeService
from sealroom.attestation.snp.abi import parse_report
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    UnavailableError,
)
from sealroom.tee.base import EvidenceProvider, open_provider
from sealroom.tee.sim import SimProvider
from sealroom.testing.fake_snp import FakeSnpPki

if TYPE_CHECKING:
    from tests.tee.conftest import Swtpm

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
MEASUREMENT = hashlib.sha384(b"the runtime code the host launched").digest()
HOST_DATA = hashlib.sha256(b"manifest").digest()


@pytest.fixture(scope="module")
def pki() -> FakeSnpPki:
    return FakeSnpPki(NOW)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sr-sim-") as d:
        yield Path(d)


@pytest.fixture
def service(pki: FakeSnpPki, sockdir: Path) -> Iterator[SimTeeService]:
    svc = SimTeeService(
        pki.authority, measurement=MEASUREMENT, host_data=HOST_DATA, socket_path=sockdir / "tee"
    )
    with svc:
        yield svc


def _raw(path: Path, payload: bytes, *, shutdown: bool = True) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(os.fspath(path))
        s.sendall(payload)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    answer = json.loads(buf)
    assert isinstance(answer, dict)
    return answer


def _verify(pki: FakeSnpPki, provider: SimProvider, report_data: bytes) -> SnpClaims:
    item = provider.collect(report_data)
    claims = kinds.get("snp").verify(item, VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert isinstance(claims, SnpClaims)
    return claims


def test_round_trip_verifies_with_sim_root(pki: FakeSnpPki, service: SimTeeService) -> None:
    provider = SimProvider(service.socket_path)
    assert isinstance(provider, EvidenceProvider) and provider.kind == "snp"
    report_data = hashlib.sha512(b"nonce").digest()
    claims = _verify(pki, provider, report_data)
    assert claims.verified and claims.simulated
    assert claims.report_data == report_data
    assert claims.measurement == MEASUREMENT
    assert claims.host_data == HOST_DATA


def test_evidence_without_the_sim_root_is_not_authentic(service: SimTeeService) -> None:
    item = SimProvider(service.socket_path).collect(bytes(64))
    with pytest.raises(AttestationError):
        kinds.get("snp").verify(item, VerifyContext(now=NOW))


def test_concurrent_guests_each_get_their_own_report(
    pki: FakeSnpPki, service: SimTeeService
) -> None:
    provider = SimProvider(service.socket_path)
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            results[n] = _verify(pki, provider, bytes([n]) * 64).report_data
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {n: bytes([n]) * 64 for n in range(8)}


@pytest.mark.parametrize(
    "request_obj",
    [
        {"report_data": "00" * 64, "measurement": "11" * 48},
        {"report_data": "00" * 64, "host_data": "22" * 32},
        {"report_data": "00" * 64, "vmpl": 3},
    ],
    ids=["guest_sets_measurement", "guest_sets_host_data", "guest_sets_other_field"],
)
def test_guest_cannot_choose_launch_fields(
    pki: FakeSnpPki, service: SimTeeService, request_obj: dict[str, object]
) -> None:
    answer = _raw(service.socket_path, json.dumps(request_obj).encode() + b"\n")
    assert "error" in answer and "unknown keys" in str(answer["error"])
    # and what the host fixed is what every report says
    claims = _verify(pki, SimProvider(service.socket_path), bytes(64))
    assert claims.measurement == MEASUREMENT and claims.host_data == HOST_DATA


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"x" * (MAX_REQUEST + 10), "larger than"),
        (b"\xff\xfe garbage\n", "not JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"report_data": "00"}\n', "expected 128"),
        (b'{"report_data": "' + b"zz" * 64 + b'"}\n', "not hex"),
        (b'{"report_data": 7}\n', "hex string"),
        (b"", "empty request"),
        (b'{"report_data": "' + b"00" * 64 + b'"}\n{"report_data": "x"}\n', "one request"),
    ],
    ids=[
        "oversized_request",
        "garbage_bytes",
        "json_array",
        "short_report_data",
        "non_hex_report_data",
        "report_data_not_string",
        "empty_request",
        "two_requests_on_one_connection",
    ],
)
def test_bad_requests_get_an_error_and_the_service_survives(
    pki: FakeSnpPki, service: SimTeeService, payload: bytes, why: str
) -> None:
    answer = _raw(service.socket_path, payload)
    assert why in str(answer.get("error")), answer
    assert _verify(pki, SimProvider(service.socket_path), bytes(64)).verified


def test_silent_client_does_not_block_others(pki: FakeSnpPki, sockdir: Path) -> None:
    svc = SimTeeService(
        pki.authority,
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        socket_path=sockdir / "tee",
        io_timeout=1.0,
    )
    with svc, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(os.fspath(svc.socket_path))  # connects, sends nothing
        assert _verify(pki, SimProvider(svc.socket_path), b"\x01" * 64).verified
        # the silent client is eventually told it took too long, and released
        silent.settimeout(30)
        answer = json.loads(silent.recv(65536))
        assert "in time" in answer["error"]


def test_connections_beyond_the_cap_wait_for_a_slot(pki: FakeSnpPki, sockdir: Path) -> None:
    svc = SimTeeService(
        pki.authority,
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        socket_path=sockdir / "tee",
        io_timeout=0.5,
        max_connections=1,
    )
    with svc, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(os.fspath(svc.socket_path))  # holds the only slot until io_timeout
        assert _verify(pki, SimProvider(svc.socket_path, timeout=30), bytes(64)).verified
        silent.settimeout(30)
        assert "in time" in json.loads(silent.recv(65536))["error"]


def test_socket_is_0600_and_stop_removes_it(pki: FakeSnpPki, sockdir: Path) -> None:
    path = sockdir / "tee"
    svc = SimTeeService(
        pki.authority, measurement=MEASUREMENT, host_data=HOST_DATA, socket_path=path
    )
    svc.start()
    st = path.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert [p.name for p in sockdir.iterdir()] == ["tee"]  # no temporary name left behind
    svc.stop()
    assert not path.exists()
    with pytest.raises(UnavailableError) as e:
        SimProvider(path).collect(bytes(64))
    assert e.value.code == "sim-tee-unavailable"


def test_stale_socket_is_replaced(pki: FakeSnpPki, sockdir: Path) -> None:
    path = sockdir / "tee"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(path))
    stale.close()  # the file stays, nobody listens
    with SimTeeService(
        pki.authority, measurement=MEASUREMENT, host_data=HOST_DATA, socket_path=path
    ):
        assert _verify(pki, SimProvider(path), bytes(64)).verified


def test_refuses_to_replace_a_regular_file_or_a_live_service(
    pki: FakeSnpPki, service: SimTeeService, sockdir: Path
) -> None:
    other = SimTeeService(
        pki.authority, measurement=MEASUREMENT, host_data=HOST_DATA, socket_path=service.socket_path
    )
    with pytest.raises(InvalidInputError, match="already listening"):
        other.start()
    regular = sockdir / "file"
    regular.write_text("not a socket")
    with pytest.raises(InvalidInputError, match="not a socket"):
        SimTeeService(
            pki.authority, measurement=MEASUREMENT, host_data=HOST_DATA, socket_path=regular
        ).start()
    assert regular.read_text() == "not a socket"


@pytest.mark.parametrize(
    ("measurement", "host_data", "match"),
    [(bytes(47), HOST_DATA, "measurement"), (MEASUREMENT, bytes(31), "host_data")],
    ids=["short_measurement", "short_host_data"],
)
def test_launch_fields_have_their_sizes(
    pki: FakeSnpPki, sockdir: Path, measurement: bytes, host_data: bytes, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        SimTeeService(
            pki.authority, measurement=measurement, host_data=host_data, socket_path=sockdir / "t"
        )


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_report_data_must_be_64_bytes(service: SimTeeService, size: int) -> None:
    with pytest.raises(InvalidInputError, match="expected exactly 64"):
        SimProvider(service.socket_path).collect(bytes(size))
    assert service.requests_served == 0


def test_unreachable_service(sockdir: Path) -> None:
    with pytest.raises(UnavailableError, match="unreachable"):
        SimProvider(sockdir / "nothing-here").collect(bytes(64))


# ---- a hostile or broken host: the guest refuses answers not for its request ----------


def _one_shot_server(path: Path, respond: Callable[[bytes], bytes]) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.fspath(path))
    server.listen(1)

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                buf = b""
                while b"\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                conn.sendall(respond(buf))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _answer_for(pki: FakeSnpPki, report_data: bytes) -> bytes:
    report = pki.authority.report(measurement=MEASUREMENT, report_data=report_data)
    item = pki.authority.evidence(report)
    return (
        json.dumps(
            {
                "report": base64.b64encode(item.data).decode(),
                "attachments": {
                    k: base64.b64encode(v).decode() for k, v in item.attachments.items()
                },
            }
        ).encode()
        + b"\n"
    )


def test_report_for_other_report_data_is_refused(pki: FakeSnpPki, sockdir: Path) -> None:
    path = sockdir / "evil"
    t = _one_shot_server(path, lambda _req: _answer_for(pki, b"\x07" * 64))
    with pytest.raises(AttestationError, match="REPORT_DATA") as e:
        SimProvider(path).collect(bytes(64))
    assert e.value.code == "tee-report-data-mismatch"
    t.join()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"not json\n", MalformedEvidenceError),
        (b'{"report": "!!!"}\n', MalformedEvidenceError),
        (b'{"report": "AAAA"}\n', MalformedEvidenceError),  # 3 bytes: not a report
        (b'{"report": "AAAA", "extra": 1}\n', MalformedEvidenceError),
        (b'{"report": "AAAA", "attachments": {"evil": "AAAA"}}\n', MalformedEvidenceError),
        (b'{"report": "AAAA", "attachments": []}\n', MalformedEvidenceError),
        (b"[]\n", MalformedEvidenceError),
        (b"", UnavailableError),
        (b'{"error": "no"}\n', UnavailableError),
    ],
    ids=[
        "not_json",
        "report_not_base64",
        "report_too_short",
        "unknown_answer_key",
        "unknown_attachment",
        "attachments_not_object",
        "answer_not_object",
        "closed_without_answer",
        "service_error",
    ],
)
def test_bad_answers_are_refused(sockdir: Path, answer: bytes, error: type[Exception]) -> None:
    path = sockdir / "broken"
    t = _one_shot_server(path, lambda _req: answer)
    with pytest.raises(error):
        SimProvider(path).collect(bytes(64))
    t.join()


def test_open_provider_sim(sockdir: Path) -> None:
    p = open_provider(f"sim:{sockdir / 'tee'}")
    assert isinstance(p, SimProvider) and p.socket_path == sockdir / "tee"


@pytest.mark.parametrize("spec", ["", "sim", "sim:", "tpm2:", "sgx:/dev/sgx", "nonsense"], ids=repr)
def test_open_provider_unknown_spec(spec: str) -> None:
    with pytest.raises(InvalidInputError):
        open_provider(spec)


def test_open_provider_configfs_without_tee(sockdir: Path) -> None:
    with pytest.raises(UnavailableError, match="configfs-tsm"):
        open_provider(f"configfs-tsm:{sockdir / 'no-tsm'}")


def test_sim_report_layout_is_real_snp(service: SimTeeService) -> None:
    item = SimProvider(service.socket_path).collect(b"\x42" * 64)
    report = parse_report(item.data)
    assert report.report_data == b"\x42" * 64 and set(item.attachments) == {"vcek", "ask"}


def test_open_provider_tpm2_collects_a_quote_from_swtpm(
    swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path / "home"))
    provider = open_provider(f"tpm2:{swtpm.tcti}")
    assert isinstance(provider, EvidenceProvider) and provider.kind == "tpm"
    report_data = hashlib.sha512(b"bound").digest()
    item = provider.collect(report_data)
    assert item.kind == "tpm"
    claims = kinds.get("tpm").inspect(item)
    assert getattr(claims, "extra_data") == report_data  # noqa: B009 - TpmClaims field


def test_open_provider_tpm2_absent_module_is_invalid_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sealroom.tee.tpm2", None)
    with pytest.raises(InvalidInputError, match="tpm2"):
        open_provider("tpm2:device:/dev/tpmrm0")
