"""The REST API's optional key and per-client rate limit."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api import guard
from api.guard import RateLimiter, guarded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_its_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=30, burst=3, clock=clock)  # one token every 2 s

    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)  # empty: a whole token is 2 s away
    assert limiter.take("b") == 0.0  # another client has its own bucket
    clock.now += 1.0
    assert limiter.take("a") == pytest.approx(1.0)  # half a token back, half to go
    clock.now += 1.0
    assert limiter.take("a") == 0.0
    clock.now += 60.0  # refills to the burst, never beyond
    assert [limiter.take("a") for _ in range(4)][-1] == pytest.approx(2.0)


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _client(limiter: RateLimiter) -> TestClient:
    app = Starlette(routes=[
        Route("/api/models", guarded(_ok, limiter=limiter)),
        Route("/api/predict", guarded(_ok, limiter=limiter), methods=["POST"]),
        Route("/api/health", _ok),
    ])  # fmt: skip
    return TestClient(app)


def test_over_the_limit_answers_429_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    client = _client(RateLimiter(per_minute=6, burst=2, clock=Clock()))  # a token per 10 s

    assert [client.get("/api/models").status_code for _ in range(2)] == [200, 200]
    refused = client.post("/api/predict", files={"image": ("a.jpg", b"x" * 100_000)})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    assert "too many requests" in refused.json()["error"]
    assert client.get("/api/health").status_code == 200  # liveness is never limited


def test_an_api_key_is_required_once_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guard.KEY_ENV, "s3cret")
    client = _client(RateLimiter(per_minute=600, burst=100, clock=Clock()))

    missing = client.get("/api/models")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/api/models", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/api/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    bearer = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/models", headers=bearer).status_code == 200
    assert client.get("/api/health").status_code == 200


def test_with_a_key_each_key_has_its_own_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guard.KEY_ENV, "k")
    limiter = RateLimiter(per_minute=1, burst=1, clock=Clock())
    client = _client(limiter)

    assert client.get("/api/models", headers={"X-API-Key": "k"}).status_code == 200
    assert client.get("/api/models", headers={"X-API-Key": "k"}).status_code == 429
    assert limiter.take("testclient") == 0.0  # the address's bucket was never touched
