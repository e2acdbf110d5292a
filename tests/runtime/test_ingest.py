"""The upload receiver (sealroom.runtime.ingest, ADR 0038) over real sockets: short reads,
bodies that end early, boundaries of its buffers, and a failing writer."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealroom.runtime import ingest


class SocketBody:
    """A body as the server's reader gives it: ``readinto`` straight from a socket, so a
    read returns whatever arrived (short reads are the normal case)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls = 0

    def readinto(self, buffer: memoryview, /) -> int:
        self.calls += 1
        return self.sock.recv_into(buffer)


def _send_in_pieces(sock: socket.socket, data: bytes, piece: int, pause_every: int) -> None:
    try:
        for n, off in enumerate(range(0, len(data), piece)):
            sock.sendall(data[off : off + piece])
            if n % pause_every == 0:
                time.sleep(0.001)  # let the receiver catch up: its reads come back short
    finally:
        sock.shutdown(socket.SHUT_WR)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _receive(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], data: bytes, size: int, piece: int
) -> tuple[bytes, bytes, SocketBody]:
    sender, receiver = pair
    t = threading.Thread(target=_send_in_pieces, args=(sender, data, piece, 7))
    t.start()
    out = tmp_path / "out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    body = SocketBody(receiver)
    try:
        digest = ingest.receive(body, size, fd)
    finally:
        os.close(fd)
        t.join()
    return digest, out.read_bytes(), body


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        ingest.BUFFER - 1,
        ingest.BUFFER,
        ingest.BUFFER + 1,
        ingest.BUFFER * ingest.DEPTH * 3 + 12_345,
    ],
    ids=["empty", "one_byte", "under_buffer", "one_buffer", "buffer_plus_one", "many_rings"],
)
def test_short_reads_hash_and_write_every_byte_in_order(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    data = os.urandom(size)
    digest, written, body = _receive(tmp_path, pair, data, size, piece=4093)
    assert digest == hashlib.sha256(data).digest()
    assert written == data
    if size > ingest.BUFFER:
        assert body.calls > size // ingest.BUFFER  # reads did come back short


def test_bytes_after_the_announced_size_are_not_read(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    size = ingest.BUFFER * 2 + 5
    data = os.urandom(size)
    sender, receiver = pair
    t = threading.Thread(target=_send_in_pieces, args=(sender, data + b"NEXT REQUEST", 8191, 5))
    t.start()
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        digest = ingest.receive(_Limited(SocketBody(receiver), size), size, fd)
    finally:
        os.close(fd)
        t.join()
    assert digest == hashlib.sha256(data).digest()
    assert receiver.recv(64) == b"NEXT REQUEST"


class _Limited:
    """What the server's _BodyReader does: never more than Content-Length."""

    def __init__(self, inner: SocketBody, length: int) -> None:
        self.inner, self.remaining = inner, length

    def readinto(self, buffer: memoryview, /) -> int:
        n = self.inner.readinto(buffer[: self.remaining])
        self.remaining -= n
        return n


@pytest.mark.parametrize(
    ("sent", "announced"),
    [
        (0, 10),
        (9, 10),
        (ingest.BUFFER * 3 + 7, ingest.BUFFER * 3 + 8),  # the last byte missing
        (ingest.BUFFER, ingest.BUFFER * 5),  # ends on a buffer boundary
    ],
    ids=[
        "nothing_sent",
        "inline_one_short",
        "pipelined_last_byte_missing",
        "pipelined_on_boundary",
    ],
)
def test_truncated_body_is_reported_with_what_arrived(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], sent: int, announced: int
) -> None:
    with pytest.raises(ingest.Truncated) as err:
        _receive(tmp_path, pair, os.urandom(sent), announced, piece=65_536)
    assert err.value.received == sent


def test_failing_writer_stops_the_receiver(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A write error (here: a read-only descriptor; in an enclave, a full tmpfs) surfaces
    as itself, and the receiver does not hang waiting for a buffer back."""
    size = ingest.BUFFER * 8
    sender, receiver = pair

    def send() -> None:
        with contextlib.suppress(OSError):  # the receiver gives up and closes
            _send_in_pieces(sender, os.urandom(size), 65_536, 1000)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    (tmp_path / "ro").write_bytes(b"")
    fd = os.open(tmp_path / "ro", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            ingest.receive(SocketBody(receiver), size, fd)
    finally:
        os.close(fd)
        receiver.close()  # the sender may still be blocked on a full socket buffer
        t.join(timeout=60)
