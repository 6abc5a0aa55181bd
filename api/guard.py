"""Who may call the API, and how often: an optional key and a per-client token bucket.

- ``QUANTLENS_API_KEY`` (environment) or ``QUANTLENS_API_KEY`` in ``st.secrets``:
  when set, every route but ``/api/health`` needs it, as ``X-API-Key: KEY`` or
  ``Authorization: Bearer KEY``; otherwise 401.
- ``QUANTLENS_API_RATE`` (requests per minute, default 60) and
  ``QUANTLENS_API_BURST`` (default 10): each client gets a bucket of ``burst``
  tokens refilled at ``rate``; an empty bucket answers 429 with
  ``Retry-After`` (whole seconds until a token is back).
- A client is its API key if it sent one, else its address. Behind a proxy
  (Community Cloud) every request comes from the proxy; set
  ``QUANTLENS_TRUST_PROXY=1`` to use the first ``X-Forwarded-For`` address
  instead (only where the proxy sets it: a client can write that header).

Hand-written rather than a package (slowapi, limits): it is twenty lines, and
those packages hook into FastAPI or need a storage backend this single-process
app does not have.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["KEY_ENV", "RateLimiter", "api_key", "drain", "guarded"]

KEY_ENV = "QUANTLENS_API_KEY"
RATE_ENV = "QUANTLENS_API_RATE"
BURST_ENV = "QUANTLENS_API_BURST"
PROXY_ENV = "QUANTLENS_TRUST_PROXY"
MAX_CLIENTS = 10_000
"""Buckets kept; the least recently seen client is forgotten first (a full bucket)."""

Endpoint = Callable[[Request], Awaitable[Response]]
DRAIN_LIMIT_BYTES = 100_000_000


async def drain(request: Request, limit: int = DRAIN_LIMIT_BYTES) -> None:
    """Read and discard a body that will not be used (up to ``limit``) before answering.

    A client that sends its whole body before reading (urllib, requests) sees a
    reset connection, not the answer, if the server replies without reading.
    """
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            break


class RateLimiter:
    """Token buckets per client: ``burst`` tokens, refilled at ``per_minute`` a minute."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Spend one token; 0.0 if granted, else the seconds until one is back."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


def api_key() -> str | None:
    """The deployment's key: the environment first, then Streamlit's secrets."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    try:
        import streamlit as st  # noqa: PLC0415 - only deployments with secrets need it

        value = st.secrets.get(KEY_ENV)
    except Exception:  # no secrets file: Streamlit raises its own error type
        return None
    return str(value) if value else None


def _sent_key(request: Request) -> str | None:
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _client(request: Request, key: str | None) -> str:
    if key:
        return f"key:{key}"
    if os.environ.get(PROXY_ENV) == "1" and request.headers.get("x-forwarded-for"):
        return request.headers["x-forwarded-for"].split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def _limiter_from_env() -> RateLimiter:
    def number(name: str, default: float) -> float:
        try:
            value = float(os.environ.get(name, default))
        except ValueError:
            return default
        return value if value > 0 else default

    return RateLimiter(number(RATE_ENV, 60), int(number(BURST_ENV, 10)))


LIMITER = _limiter_from_env()


def guarded(
    endpoint: Endpoint, *, limiter: RateLimiter | None = None, key: bool = True
) -> Endpoint:
    """``endpoint`` behind the API key (if one is set and ``key``) and the client's rate limit."""

    async def call(request: Request) -> Response:
        expected = api_key() if key else None
        sent = _sent_key(request)
        if expected is not None and (
            sent is None or not hmac.compare_digest(sent.encode(), expected.encode())
        ):
            await drain(request)
            return JSONResponse(
                {"error": "this API needs a key: send it as X-API-Key or Authorization: Bearer"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = (limiter or LIMITER).take(_client(request, sent if expected else None))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            await drain(request)
            return JSONResponse(
                {"error": f"too many requests; try again in {seconds} s"},
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
        return await endpoint(request)

    return call
