"""The REST API's optional key and per-client rate limit."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api import guard
from api.guard import RateLimiter, guarded
from tests.helpers.streamlit_server import streamlit_server


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
        Route("/api/browser-file", guarded(_ok, limiter=limiter, key=False)),
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


# -- The key from secrets.toml: an unreadable file closes the API (503), never opens it.

UNREADABLE_SECRETS = {
    "a TOML syntax error": b'QUANTLENS_API_KEY = "s3cret\n',
    "bytes that are not UTF-8": b'QUANTLENS_API_KEY = "s3cret\xff"\n',
}


@pytest.fixture
def secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where Streamlit looks for secrets by default: ``<cwd>/.streamlit/secrets.toml``.

    The working directory and the home folder (``~/.streamlit/secrets.toml``)
    are empty temporary folders; the test writes the file, or leaves it out.
    """
    import streamlit as st
    from streamlit import config
    from streamlit.runtime.secrets import Secrets

    config.get_config_options()  # read the project's config.toml before leaving its folder
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    # A parsed file is watched by a polling thread; a test needs no watcher.
    monkeypatch.setattr(Secrets, "_maybe_install_file_watchers", lambda self: None)
    st.secrets._reset()  # nothing parsed by an earlier test
    (tmp_path / ".streamlit").mkdir()
    yield tmp_path / ".streamlit" / "secrets.toml"
    st.secrets._reset()  # also takes back the secrets Streamlit copied to os.environ


def _generous() -> RateLimiter:
    return RateLimiter(per_minute=6000, burst=1000, clock=Clock())


def _assert_closed(response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"]
    assert "secrets.toml" in body["error"] and "log" in body["error"]
    assert "s3cret" not in response.text


@pytest.mark.parametrize("content", UNREADABLE_SECRETS.values(), ids=UNREADABLE_SECRETS.keys())
def test_an_unreadable_secrets_file_closes_the_protected_routes(
    secrets_file: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    secrets_file.write_bytes(content)
    client = _client(_generous())

    with caplog.at_level(logging.WARNING, logger="quantlens.api"):
        _assert_closed(client.get("/api/models"))
        _assert_closed(client.get("/api/models", headers={"X-API-Key": "s3cret"}))
        _assert_closed(client.post("/api/predict", files={"image": ("a.jpg", b"x" * 100_000)}))
    # Routes without the key (health, the browser files) are not affected.
    assert client.get("/api/browser-file").status_code == 200
    assert client.get("/api/health").status_code == 200

    records = [r for r in caplog.records if r.name == "quantlens.api"]
    assert records, "the log should say why the API answers 503"
    message = records[0].getMessage()
    assert str(secrets_file) in message and "\n" not in message
    assert "s3cret" not in message


def test_a_secrets_path_that_is_a_folder_closes_the_protected_routes(secrets_file: Path) -> None:
    secrets_file.mkdir()  # open() raises IsADirectoryError, not "no file"

    _assert_closed(_client(_generous()).get("/api/models"))


def test_the_parse_error_is_logged(secrets_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets_file.write_text('QUANTLENS_API_KEY = "s3cret\n')

    with caplog.at_level(logging.WARNING, logger="quantlens.api"):
        _client(_generous()).get("/api/models")

    records = [r for r in caplog.records if r.name == "quantlens.api"]
    assert len(records) == 1, caplog.text
    record = records[0]
    assert record.levelno >= logging.WARNING
    assert "Illegal character" in record.getMessage() or "line 1" in record.getMessage()


def test_a_mended_secrets_file_is_picked_up(secrets_file: Path) -> None:
    secrets_file.write_text('QUANTLENS_API_KEY = "s3cret\n')
    client = _client(_generous())
    _assert_closed(client.get("/api/models"))

    secrets_file.write_text('QUANTLENS_API_KEY = "s3cret"\n')

    assert client.get("/api/models").status_code == 401
    assert client.get("/api/models", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_a_readable_secrets_file_with_a_key_requires_it(secrets_file: Path) -> None:
    secrets_file.write_text('QUANTLENS_API_KEY = "s3cret"\n')
    client = _client(_generous())

    assert client.get("/api/models").status_code == 401
    assert client.get("/api/models", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/api/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/api/browser-file").status_code == 200


def test_a_readable_secrets_file_without_a_key_leaves_the_api_open(secrets_file: Path) -> None:
    secrets_file.write_text('OTHER_SETTING = "x"\n')

    assert _client(_generous()).get("/api/models").status_code == 200


def test_without_a_secrets_file_the_api_is_open(
    secrets_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not secrets_file.exists()
    client = _client(_generous())

    with caplog.at_level(logging.WARNING, logger="quantlens.api"):
        assert client.get("/api/models").status_code == 200
        assert client.post("/api/predict", files={"image": ("a.jpg", b"x")}).status_code == 200
    assert not [r for r in caplog.records if r.name == "quantlens.api"]


# -- Behind a trusted proxy: the client is the address the proxy appended, not the leftmost.

HOPS_ENV = "QUANTLENS_PROXY_HOPS"
PROXY = "203.0.113.7"
"""The address the trusted proxy appends: the client's as the proxy saw it."""


def _statuses(client: TestClient, headers_for_call) -> list[int]:
    return [client.get("/api/models", headers=headers_for_call(i)).status_code for i in range(30)]


@pytest.mark.parametrize("header_lines", ["one", "two"])
def test_behind_a_trusted_proxy_30_quick_calls_from_one_client_get_429(
    monkeypatch: pytest.MonkeyPatch, header_lines: str
) -> None:
    """However the client fills the leftmost ``X-Forwarded-For`` entry."""
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    monkeypatch.setenv(guard.PROXY_ENV, "1")
    monkeypatch.delenv(HOPS_ENV, raising=False)
    client = _client(RateLimiter(per_minute=60, burst=10, clock=Clock()))

    def headers(i: int) -> list[tuple[str, str]]:
        forged = f"10.{i}.{i * 7 % 256}.{i * 13 % 256}"  # a new address on every call
        if header_lines == "one":  # the proxy appends to the client's header
            return [("X-Forwarded-For", f"{forged}, 198.51.100.{i}, {PROXY}")]
        # the proxy adds its own header line after the client's
        return [("X-Forwarded-For", f"{forged}, 198.51.100.{i}"), ("X-Forwarded-For", PROXY)]

    statuses = _statuses(client, headers)

    assert statuses[:10] == [200] * 10
    assert statuses[10:] == [429] * 20
    other = {"X-Forwarded-For": f"10.0.0.1, {PROXY}0"}  # another client behind the proxy
    assert client.get("/api/models", headers=other).status_code == 200


def test_with_two_proxy_hops_the_second_entry_from_the_right_is_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    monkeypatch.setenv(guard.PROXY_ENV, "1")
    monkeypatch.setenv(HOPS_ENV, "2")
    client = _client(RateLimiter(per_minute=60, burst=10, clock=Clock()))
    edge_proxy = "10.1.1.1"  # the second proxy appends the first one's address

    statuses = _statuses(
        client, lambda i: {"X-Forwarded-For": f"172.16.{i}.{i}, {PROXY}, {edge_proxy}"}
    )

    assert statuses[:10] == [200] * 10 and statuses[10:] == [429] * 20
    other = {"X-Forwarded-For": f"{PROXY}, 198.51.100.1, {edge_proxy}"}  # another client
    assert client.get("/api/models", headers=other).status_code == 200


def test_fewer_entries_than_hops_fall_back_to_the_connection_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    monkeypatch.setenv(guard.PROXY_ENV, "1")
    monkeypatch.setenv(HOPS_ENV, "2")
    limiter = RateLimiter(per_minute=60, burst=10, clock=Clock())
    client = _client(limiter)

    statuses = _statuses(client, lambda i: {"X-Forwarded-For": f"172.16.{i}.{i}"})

    assert statuses[:10] == [200] * 10 and statuses[10:] == [429] * 20
    assert limiter.take("testclient") > 0  # the connection's address had the calls


@pytest.mark.parametrize("hops", ["0", "-1", "two", ""])
def test_an_unusable_hop_count_means_one(monkeypatch: pytest.MonkeyPatch, hops: str) -> None:
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    monkeypatch.setenv(guard.PROXY_ENV, "1")
    monkeypatch.setenv(HOPS_ENV, hops)
    client = _client(RateLimiter(per_minute=60, burst=10, clock=Clock()))

    statuses = _statuses(client, lambda i: {"X-Forwarded-For": f"172.16.{i}.{i}, {PROXY}"})

    assert statuses[10:] == [429] * 20


# -- A real ``streamlit run`` server with an unreadable secrets.toml.


def _call(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def broken_secrets_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``streamlit run streamlit_app.py`` whose only secrets file is invalid TOML.

    Light: no warm-start conversion, an empty cache folder, no file watcher.
    Yields the base URL and the server's log file.
    """
    secrets = tmp_path / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text('QUANTLENS_API_KEY = "s3cret\n')
    log_path = tmp_path / "streamlit.log"
    env = {"QUANTLENS_WARM_START": "0", "QUANTLENS_CACHE_DIR": str(tmp_path / "cache")}
    options = ["--server.fileWatcherType", "none", "--secrets.files", str(secrets)]
    with streamlit_server(env, log_path, options=options, unset=[guard.KEY_ENV]) as base:
        yield base, log_path


def test_a_server_with_an_unreadable_secrets_toml_refuses_api_predict(
    broken_secrets_server: tuple[str, Path],
) -> None:
    base, log_path = broken_secrets_server
    boundary = "quantlens-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        "Content-Type: application/octet-stream\r\n\r\nxxxx\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    status, answer = _call(f"{base}/api/predict", data=body, headers=multipart)

    assert status == 503, answer
    assert "secrets.toml" in answer["error"] and "\n" not in answer["error"]
    with_key = {**multipart, "X-API-Key": "s3cret"}
    assert _call(f"{base}/api/predict", data=body, headers=with_key)[0] == 503
    assert _call(f"{base}/api/models")[0] == 503
    assert _call(f"{base}/api/health")[0] == 200
    # The operator's side: one line naming the file and the parse error, once.
    reasons = [line for line in log_path.read_text().splitlines() if "answer 503" in line]
    assert len(reasons) == 1, log_path.read_text()
    assert "secrets.toml" in reasons[0] and "Error parsing secrets file" in reasons[0]


def test_wrong_keys_are_rate_limited_like_everything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guard.KEY_ENV, "s3cret")
    client = _client(RateLimiter(per_minute=60, burst=3, clock=Clock()))

    answers = [
        client.get("/api/models", headers={"X-API-Key": f"guess-{n}"}).status_code for n in range(5)
    ]

    assert answers == [401, 401, 401, 429, 429]
