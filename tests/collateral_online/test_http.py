"""Timeouts, bounded retries with backoff and jitter, Retry-After: against a real server on
127.0.0.1. Waits are recorded by an injected sleep and requests counted, never timed."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from sealroom.collateral_online.http import HttpFetcher, RetryPolicy, retry_after_seconds
from sealroom.errors import UnavailableError
from sealroom.testing.fake_vendor_services import FakeVendorServer, Reply

PATH = "/vcek/v1/Milan/cert_chain"


@pytest.fixture
def server() -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as s:
        s.add_kds(PATH, b"chain")
        yield s


def fetcher(sleeps: list[float], **kw: object) -> HttpFetcher:
    retry = RetryPolicy(**kw) if kw else RetryPolicy()  # type: ignore[arg-type]
    return HttpFetcher(retry=retry, sleep=sleeps.append, rng=random.Random(7), timeout=5.0)  # noqa: S311


def test_retry_on_503_then_success(server: FakeVendorServer) -> None:
    server.script(PATH, Reply(503), Reply(503))
    sleeps: list[float] = []
    resp = fetcher(sleeps).get(server.url + PATH)
    assert resp.status == 200 and resp.body == b"chain"
    assert server.count(PATH) == 3 and len(sleeps) == 2


def test_retry_after_honoured(server: FakeVendorServer) -> None:
    server.script(PATH, Reply(429, headers={"Retry-After": "7"}))
    sleeps: list[float] = []
    resp = fetcher(sleeps, base_delay=0.5).get(server.url + PATH)
    assert resp.status == 200 and server.count(PATH) == 2
    # waited what the server asked, plus jitter no larger than the base delay
    assert len(sleeps) == 1 and 7.0 <= sleeps[0] <= 7.5


def test_retry_after_longer_than_allowed_fails_at_once(server: FakeVendorServer) -> None:
    server.script(PATH, Reply(503, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    with pytest.raises(UnavailableError) as e:
        fetcher(sleeps, max_retry_after=60).get(server.url + PATH)
    assert server.url + PATH in e.value.message and "3600" in e.value.message
    assert server.count(PATH) == 1 and sleeps == []


def test_retries_are_bounded_and_backoff_grows_capped(server: FakeVendorServer) -> None:
    server.script(PATH, *[Reply(500)] * 10)
    sleeps: list[float] = []
    with pytest.raises(UnavailableError) as e:
        fetcher(sleeps, attempts=5, base_delay=1.0, max_delay=3.0).get(server.url + PATH)
    assert server.count(PATH) == 5 and "HTTP 500" in e.value.message
    assert server.url + PATH in e.value.message
    caps = [1.0, 2.0, 3.0, 3.0]  # base * 2**n, capped at max_delay; full jitter below
    assert len(sleeps) == 4 and all(0 <= s <= c for s, c in zip(sleeps, caps, strict=True))


def test_not_found_is_an_answer_not_retried(server: FakeVendorServer) -> None:
    sleeps: list[float] = []
    resp = fetcher(sleeps).get(server.url + "/vcek/v1/Milan/crl")
    assert resp.status == 404 and server.count("/vcek/v1/Milan/crl") == 1 and sleeps == []


def test_timeout_is_retried_then_unavailable(server: FakeVendorServer) -> None:
    server.delay(PATH, 1.5)
    sleeps: list[float] = []
    f = HttpFetcher(
        timeout=0.2,
        retry=RetryPolicy(attempts=2),
        sleep=sleeps.append,
        rng=random.Random(1),  # noqa: S311
    )
    with pytest.raises(UnavailableError) as e:
        f.get(server.url + PATH)
    assert "Timeout" in e.value.message and server.url + PATH in e.value.message
    assert server.count(PATH) == 2 and len(sleeps) == 1


def test_connection_refused_is_unavailable_naming_the_url() -> None:
    with FakeVendorServer() as s:
        url = s.url + PATH
    sleeps: list[float] = []
    with pytest.raises(UnavailableError) as e:
        fetcher(sleeps, attempts=2).get(url)
    assert url in e.value.message and "ConnectError" in e.value.message


def test_oversized_response_is_refused(server: FakeVendorServer) -> None:
    server.add_kds(PATH, b"x" * 5000)
    f = HttpFetcher(max_bytes=1000, sleep=lambda _: None)
    with pytest.raises(UnavailableError, match="more than 1000 bytes"):
        f.get(server.url + PATH)


@pytest.mark.parametrize(
    ("value", "want"),
    [("12", 12.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_parsing(value: str | None, want: float | None) -> None:
    assert retry_after_seconds(value) == want
