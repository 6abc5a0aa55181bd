"""One resolution of models and variants for the pages, both API routes and the CLI."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api import guard, routes
from api.guard import KEY_ENV, ORIGINAL_ENV, RateLimiter
from inference import ZOO, Variant
from inference.core.errors import InputError, NotAllowedError, UsageError
from inference.core.specs import TFLITE_VARIANTS, RecipeVariant
from inference.engine.convert import ensure_variants
from inference.formats.recipes import builtin_recipe
from inference.pipeline import Pipeline
from inference.registry.catalog import MAX_SESSION_VARIANTS, Session, find_session, resolve

LITE0 = "efficientnet_lite0"
FASHION = ZOO["fashion_mnist_cnn"]
MINE = RecipeVariant("mine", builtin_recipe(Variant.INT8).keeping_float(("softmax",)).text)


def test_a_sessions_variant_resolves_for_that_session_only() -> None:
    session = Session()
    session.add_variant(ZOO[LITE0], MINE)

    spec, variants = resolve(LITE0, "int8,mine", session=session)

    assert variants == (Variant.INT8, MINE) and MINE in spec.variants
    assert find_session(session.token) is session
    with pytest.raises(UsageError, match="mine"):
        resolve(LITE0, "mine", session=Session())
    with pytest.raises(UsageError, match="mine"):
        resolve(LITE0, "mine")


def test_a_session_that_ends_takes_its_token_with_it() -> None:
    token = Session().token
    gc.collect()

    assert find_session(token) is None
    assert find_session("") is None and find_session("made-up") is None


def test_a_session_adds_at_most_its_share_of_variants() -> None:
    session = Session()
    for number in range(MAX_SESSION_VARIANTS):
        session.add_variant(ZOO[LITE0], RecipeVariant(f"r{number}", MINE.recipe))
    session.add_variant(ZOO[LITE0], RecipeVariant("r0", MINE.recipe))  # replacing is fine

    with pytest.raises(InputError, match="most allowed"):
        session.add_variant(ZOO[LITE0], RecipeVariant("one-more", MINE.recipe))


def test_the_original_is_refused_or_left_out_where_it_is_not_allowed() -> None:
    with pytest.raises(NotAllowedError, match="API key"):
        resolve(LITE0, "int8,original", original=False)

    _, everything = resolve(LITE0, "all", original=False)
    _, with_original = resolve(LITE0, "all")

    assert everything == TFLITE_VARIANTS
    assert with_original[0] is Variant.ORIGINAL and with_original[1:] == TFLITE_VARIANTS


@pytest.mark.parametrize("text", ["all", "fp32,int8"])
def test_one_variant_is_expected_where_one_file_is_served(text: str) -> None:
    with pytest.raises(UsageError, match=f"expected one variant; received '{text}'"):
        resolve(LITE0, text, single=True)


# The API routes, in process, with the model's work replaced by a recorder: these tests
# are about which variants a caller gets, not about predictions (tests/test_e2e.py).


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, list]:
    calls: list = []

    def record(pipeline: Pipeline, source: object, *, name: str) -> list:
        calls.append((pipeline.spec.name, tuple(v.value for v in pipeline.variants)))
        return []

    monkeypatch.setattr(Pipeline, "__call__", record)
    monkeypatch.setattr(guard, "LIMITER", RateLimiter(6000, 1000))
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(ORIGINAL_ENV, raising=False)
    return TestClient(Starlette(routes=routes.routes)), calls


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _post(client: TestClient, query: str, **headers: str):
    return client.post(
        f"/api/predict?{query}", files={"image": ("a.png", _png(), "image/png")}, headers=headers
    )


def test_anonymous_callers_get_403_for_the_original_and_tflite_for_all(api) -> None:
    client, calls = api

    refused = _post(client, "variant=original")
    everything = _post(client, "variant=all")

    assert refused.status_code == 403 and "API key" in refused.json()["error"]
    assert everything.status_code == 200
    assert calls == [(LITE0, tuple(v.value for v in TFLITE_VARIANTS))]


def test_key_holders_and_an_open_server_may_load_the_original(
    api, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, calls = api
    monkeypatch.setenv(KEY_ENV, "s3cret")

    assert _post(client, "variant=original", **{"X-API-Key": "s3cret"}).status_code == 200
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(ORIGINAL_ENV, "1")
    assert _post(client, "variant=original").status_code == 200
    assert calls == [(LITE0, ("original",)), (LITE0, ("original",))]


def test_unknown_models_and_variants_get_their_status(api) -> None:
    client, _ = api

    assert _post(client, "model=nope").status_code == 404
    assert _post(client, "variant=int9").status_code == 400
    many = client.get("/api/browser-file?model=efficientnet_lite0&variant=all")
    assert many.status_code == 400 and many.json()["error"] == (
        "expected one variant; received 'all'"
    )
    assert client.get("/api/browser-file?variant=original").status_code == 403


@pytest.mark.slow
def test_a_sessions_recipe_variant_is_served_to_the_browser_and_to_predict(api) -> None:
    client, calls = api
    mine = RecipeVariant("mine", builtin_recipe(Variant.DYNAMIC).text)
    path: Path = ensure_variants(FASHION.with_variants((mine,)), [mine])[mine]
    session = Session()
    session.add_variant(FASHION, mine)
    query = f"model={FASHION.name}&variant=mine"

    served = client.get(f"/api/browser-file?{query}&session={session.token}")
    strangers = client.get(f"/api/browser-file?{query}&session=not-a-token")
    predicted = _post(client, f"{query}&session={session.token}")

    assert served.status_code == 200 and served.content[4:8] == b"TFL3"
    assert path.stat().st_size > 0
    assert strangers.status_code == 400 and "mine" in strangers.json()["error"]
    assert predicted.status_code == 200 and calls == [(FASHION.name, ("mine",))]
