"""GET with timeouts and bounded retries (exponential backoff, full jitter, Retry-After).

Retried: connection errors and timeouts, 429 and 5xx. Not retried: any other status (a
404 is an answer). A server asking to wait longer than ``max_retry_after`` is not waited
for: the fetch fails at once, naming the URL and the wait asked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from sealroom.errors import UnavailableError

USER_AGENT = "sealroom-collateral/1"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries in all, the first included
    base_delay: float = 0.5  # seconds; the n-th retry waits up to base * 2**n
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"bad retry policy {self}")


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpFetcher:
    """One httpx client; ``sleep`` and ``rng`` are injectable so tests count waits instead
    of timing them."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_bytes: int = 16 << 20,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.max_bytes = max_bytes
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )
        self.requests = 0  # requests sent, retries included

    def close(self) -> None:
        self._client.close()

    def _backoff(self, n: int) -> float:
        cap = min(self.retry.max_delay, self.retry.base_delay * (2**n))
        return self._rng.uniform(0, cap)

    def _once(self, url: str) -> Response:
        self.requests += 1
        with self._client.stream("GET", url) as r:
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise UnavailableError(
                        f"{url} answered with more than {self.max_bytes} bytes",
                        code="collateral-response-too-large",
                    )
            headers = {k.lower(): v for k, v in r.headers.items()}
            return Response(str(r.url), r.status_code, headers, bytes(body))

    def get(self, url: str) -> Response:
        """The first non-retryable response; UnavailableError when every try failed."""
        last = ""
        for n in range(self.retry.attempts):
            try:
                resp = self._once(url)
            except httpx.TransportError as e:  # connect/read errors, timeouts
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                wait = self._backoff(n)
            else:
                if resp.status not in RETRY_STATUSES:
                    return resp
                last = f"HTTP {resp.status}"
                wait = self._backoff(n)
                asked = retry_after_seconds(resp.headers.get("retry-after"))
                if asked is not None:
                    if asked > self.retry.max_retry_after:
                        raise UnavailableError(
                            f"cannot fetch {url}: {last}, and the server asks to retry after "
                            f"{asked:.0f} s (more than {self.retry.max_retry_after:.0f} s)",
                            code="collateral-unavailable",
                        )
                    wait = asked + self._rng.uniform(0, self.retry.base_delay)
            if n + 1 < self.retry.attempts:
                self._sleep(wait)
        raise UnavailableError(
            f"cannot fetch {url}: {last} (after {self.retry.attempts} tries)",
            code="collateral-unavailable",
        )
