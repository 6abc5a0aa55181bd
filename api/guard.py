"""Who may call the API, and how often: an optional key and a per-client token bucket.

- ``QUANTLENS_API_KEY`` (environment) or ``QUANTLENS_API_KEY`` in ``st.secrets``:
  when set, every route but ``/api/health`` needs it, as ``X-API-Key: KEY`` or
  ``Authorization: Bearer KEY``; otherwise 401. It fails closed: when a
  secrets file exists but cannot be read (a TOML syntax error, bytes that are
  not UTF-8, a folder in its place), those routes answer 503 and the
  ``quantlens.api`` log says why; the file is read again on the next request,
  so a mended file is picked up. No secrets file at all means no key.
  (Streamlit reads the files of its ``secrets.files`` option, by default
  ``~/.streamlit/secrets.toml`` and ``<cwd>/.streamlit/secrets.toml``, and
  raises ``StreamlitSecretNotFoundError`` for both "no file" and "bad file":
  only its ``error_id`` tells them apart.)
- ``QUANTLENS_API_RATE`` (requests per minute, default 60) and
  ``QUANTLENS_API_BURST`` (default 10): each client gets a bucket of ``burst``
  tokens refilled at ``rate``; an empty bucket answers 429 with
  ``Retry-After`` (whole seconds until a token is back).
- A client is its API key if it sent one, else its address. Behind a proxy
  (Community Cloud) every request comes from the proxy; set
  ``QUANTLENS_TRUST_PROXY=1`` to use the ``X-Forwarded-For`` address that the
  proxy appended instead: the last entry, or with ``QUANTLENS_PROXY_HOPS=N``
  (default 1) trusted proxies in a row, the Nth from the right. Entries to
  the left of those are the client's own writing and never used; a header with
  fewer than N entries falls back to the connection's address.

Hand-written rather than a package (slowapi, limits): it is twenty lines, and
those packages hook into FastAPI or need a storage backend this single-process
app does not have.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "KEY_ENV",
    "ORIGINAL_ENV",
    "RateLimiter",
    "SecretsUnreadableError",
    "api_key",
    "drain",
    "guarded",
    "may_load_original",
]

KEY_ENV = "QUANTLENS_API_KEY"
RATE_ENV = "QUANTLENS_API_RATE"
BURST_ENV = "QUANTLENS_API_BURST"
PROXY_ENV = "QUANTLENS_TRUST_PROXY"
HOPS_ENV = "QUANTLENS_PROXY_HOPS"
ORIGINAL_ENV = "QUANTLENS_API_ORIGINAL"
MAX_CLIENTS = 10_000
"""Buckets kept; the least recently seen client is forgotten first (a full bucket)."""

Endpoint = Callable[[Request], Awaitable[Response]]
DRAIN_LIMIT_BYTES = 100_000_000
WRONG_KEY_DRAIN_BYTES = 1_000_000
"""A request without the key is answered after at most this much of its body."""
log = logging.getLogger("quantlens.api")


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

    def clear(self) -> None:
        """Forget every client's bucket: each starts full again (tests start from here)."""
        with self._lock:
            self._buckets.clear()


class SecretsUnreadableError(Exception):
    """A secrets file exists but cannot be read: the key is unknown, so the API stays shut."""


SECRETS_UNREADABLE = "the API key could not be read from secrets.toml; the server's log says why"
_NO_SECRETS_FILE = "no-secrets-found"
"""``error_id`` of Streamlit's ``StreamlitSecretNotFoundError`` when no secrets file exists."""
_logged_secrets_error: str | None = None


def api_key() -> str | None:
    """The deployment's key: the environment first, then Streamlit's secrets.

    Streamlit re-reads the files on every call until one parses (it caches only
    a success, and watches the files it parsed), so a mended file is picked up.

    Raises:
        SecretsUnreadableError: a secrets file exists but cannot be read or
            parsed. Each new reason is logged once, as one line.
    """
    global _logged_secrets_error
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    import streamlit as st  # noqa: PLC0415 - only the server needs it, and it has it loaded
    from streamlit import config  # noqa: PLC0415

    try:
        value = st.secrets.get(KEY_ENV)
    except Exception as exc:  # parse errors, OSError, UnicodeDecodeError: all but "no file"
        if getattr(exc, "error_id", None) == _NO_SECRETS_FILE:
            _logged_secrets_error = None
            return None
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        files = ", ".join(config.get_option("secrets.files"))
        if f"{files}: {reason}" != _logged_secrets_error:
            _logged_secrets_error = f"{files}: {reason}"
            log.error(
                "%s could not be read from the secrets (%s): %s; "
                "the routes that need the key answer 503 until the file is mended",
                KEY_ENV,
                files,
                reason,
            )
        raise SecretsUnreadableError(reason) from exc
    _logged_secrets_error = None
    return str(value) if value else None


def may_load_original(request: Request) -> bool:
    """Whether this caller may load the Keras original: TensorFlow in the server, maybe weights.

    Callers holding the API key may; everyone may where the operator set
    ``QUANTLENS_API_ORIGINAL=1``.
    """
    return getattr(request.state, "key_holder", False) or os.environ.get(ORIGINAL_ENV) == "1"


def _sent_key(request: Request) -> str | None:
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _client(request: Request, key: str | None) -> str:
    if key:
        return f"key:{key}"
    peer = request.client.host if request.client else "unknown"
    if os.environ.get(PROXY_ENV) != "1":
        return peer
    # Each proxy appends the address it was called from; the client writes whatever
    # it likes to the left of those. Several header lines are one list, in order.
    entries = [
        entry.strip()
        for line in request.headers.getlist("x-forwarded-for")
        for entry in line.split(",")
    ]
    hops = _proxy_hops()
    if len(entries) < hops or not entries[-hops]:
        return peer  # no entry from the trusted proxy: never one the client wrote
    return entries[-hops]


def _proxy_hops() -> int:
    """``QUANTLENS_PROXY_HOPS``: trusted proxies in front of the server (1 if unset or unusable)."""
    try:
        hops = int(os.environ.get(HOPS_ENV, "1"))
    except ValueError:
        return 1
    return hops if hops >= 1 else 1


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
        try:
            expected = api_key() if key else None
        except SecretsUnreadableError:  # fail closed: the key exists, but nobody knows it
            await drain(request)
            return JSONResponse({"error": SECRETS_UNREADABLE}, status_code=503)
        sent = _sent_key(request)
        allowed = expected is None or (
            sent is not None and hmac.compare_digest(sent.encode(), expected.encode())
        )
        # Wrong keys spend the address's tokens too, so guessing is rate limited.
        wait = (limiter or LIMITER).take(_client(request, sent if allowed and expected else None))
        if not allowed and wait == 0:
            await drain(request, WRONG_KEY_DRAIN_BYTES)
            return JSONResponse(
                {"error": "this API needs a key: send it as X-API-Key or Authorization: Bearer"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            await drain(request)
            return JSONResponse(
                {"error": f"too many requests; try again in {seconds} s"},
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
        request.state.key_holder = expected is not None  # the key was asked for and matched
        return await endpoint(request)

    return call
