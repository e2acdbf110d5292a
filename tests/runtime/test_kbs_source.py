"""The enclave side of KBS-sourced datasets, at its seams: the ciphertext bound (decided
from the header as the bytes arrive) and the header-names-the-resource check."""

from __future__ import annotations

import io
import os

import pytest

from sealroom.crypto.dataset import encrypt_dataset, read_header
from sealroom.errors import InvalidInputError, MalformedEvidenceError
from sealroom.runtime.kbs_source import _Ciphertext, check_header_names_resource

KEY = os.urandom(32)


def _encrypted(plain: bytes, chunk_size: int = 16) -> bytes:
    out = io.BytesIO()
    encrypt_dataset(io.BytesIO(plain), out, KEY, key_id="ds", version=1, chunk_size=chunk_size)
    return out.getvalue()


def _feed(data: bytes, max_size: int, step: int = 7) -> _Ciphertext:
    sink = _Ciphertext(io.BytesIO(), max_size, "src")
    for i in range(0, len(data), step):
        sink.write(data[i : i + step])
    return sink


@pytest.mark.parametrize("chunk_size", [1, 16, 65536])
def test_ciphertext_of_a_dataset_at_max_size_is_accepted(chunk_size: int) -> None:
    data = _encrypted(b"x" * 100, chunk_size)
    sink = _feed(data, max_size=100)
    assert sink.header is not None and sink.size == len(data)


def test_ciphertext_longer_than_max_size_allows_is_refused_while_streaming() -> None:
    data = _encrypted(b"x" * 101)
    with pytest.raises(InvalidInputError) as e:
        _feed(data, max_size=100)
    assert e.value.code == "upload-too-large"


def test_ciphertext_that_is_not_an_encrypted_dataset_is_refused_at_its_first_bytes() -> None:
    with pytest.raises(MalformedEvidenceError):
        _feed(b"GARBAGE!" + b"\xff" * 100, max_size=100)


@pytest.mark.parametrize(
    ("resource", "ok"),
    [
        ("kms/ds/v1", True),
        ("kms/ds/primary", True),
        ("kms/ds/v2", False),  # another version of the key
        ("kms/other/v1", False),  # another key
        ("default/key/x", True),  # not a KMS key: the broker decides
    ],
)
def test_header_names_the_resource(resource: str, ok: bool) -> None:
    header = read_header(io.BytesIO(_encrypted(b"x")))
    if ok:
        check_header_names_resource(header, resource)
    else:
        with pytest.raises(InvalidInputError) as e:
            check_header_names_resource(header, resource)
        assert e.value.code == "kbs-dataset-key-mismatch"
