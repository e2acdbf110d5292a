"""Receiving an upload: the bytes of a request body hashed and written to enclave storage,
with receive and hash+write overlapped on two threads (ADR 0038).

The receiving thread reads the body into a small ring of preallocated buffers
(``readinto`` on a memoryview: no bytes object per read, nothing allocated per chunk);
a second thread hashes and writes each filled buffer from the same memoryview and hands
it back. TLS reads (``SSL_read``), SHA-256 and ``write`` all release the GIL on buffers
this large, so the two threads really run at once. Memory is the ring (``DEPTH`` x
``BUFFER``), whatever the upload's size.

This module decides nothing: the caller bounds ``size`` (the slot's ``max_size``),
compares the digest with the manifest's and keeps the file only if it matches.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import Protocol

BUFFER = 256 << 10  # a quarter MiB: still in cache when the second thread hashes it
DEPTH = 4  # buffers in the ring: 1 MiB in flight at most


class Readable(Protocol):
    """What the receiver reads from: a body that fills a buffer, short only at its end."""

    def readinto(self, buffer: memoryview, /) -> int: ...


class Truncated(Exception):
    """The body ended before ``size`` bytes (``received`` says how many came)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"body ended after {received} bytes")
        self.received = received


def _fill(body: Readable, view: memoryview) -> int:
    """Read until ``view`` is full or the body ends; the count read."""
    got = 0
    while got < len(view):
        n = body.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def receive(body: Readable, size: int, fd: int) -> bytes:
    """Read exactly ``size`` bytes of ``body``, write them to ``fd`` and return their
    SHA-256. Raises :class:`Truncated` if the body ends early; I/O errors of either side
    propagate (the other thread is stopped first)."""
    if size <= BUFFER:
        return _receive_inline(body, size, fd)
    return _receive_pipelined(body, size, fd)


def _receive_inline(body: Readable, size: int, fd: int) -> bytes:
    """Small bodies (an algorithm file, a small dataset): one buffer, no second thread."""
    h = hashlib.sha256()
    view = memoryview(bytearray(size))
    got = _fill(body, view)
    if got < size:
        raise Truncated(got)
    h.update(view)
    _write_all(fd, view)
    return h.digest()


_STOP = -1


def _receive_pipelined(body: Readable, size: int, fd: int) -> bytes:
    h = hashlib.sha256()
    views = [memoryview(bytearray(BUFFER)) for _ in range(DEPTH)]
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    filled: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    for i in range(DEPTH):
        free.put(i)
    failure: list[BaseException] = []

    def hash_and_write() -> None:
        try:
            while True:
                i, n = filled.get()
                if i == _STOP:
                    return
                part = views[i][:n]
                h.update(part)
                _write_all(fd, part)
                free.put(i)
        except BaseException as e:  # handed to the receiving thread, which raises it
            failure.append(e)
            free.put(_STOP)

    worker = threading.Thread(target=hash_and_write, name="sealroom-ingest", daemon=True)
    worker.start()
    remaining = size
    try:
        while remaining > 0:
            i = free.get()
            if i == _STOP:
                break  # the writer failed; raised below
            want = min(BUFFER, remaining)
            got = _fill(body, views[i][:want])
            if got:
                filled.put((i, got))
                remaining -= got
            if got < want:
                raise Truncated(size - remaining)
    finally:
        filled.put((_STOP, 0))
        worker.join()
    if failure:
        raise failure[0]
    return h.digest()
