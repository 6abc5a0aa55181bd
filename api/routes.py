"""The REST API served next to the dashboard, by the same ``streamlit run`` process.

- ``POST /api/predict?model=&variant=&top_k=``: multipart field ``image``;
  returns the CLI's ``predict --json`` list (one object per variant).
- ``GET /api/models``: the zoo, as ``python -m inference models --json``.
- ``GET /api/health``: liveness, with the memory in use.
- ``GET /api/browser-file?model=&variant=&session=``: a converted variant as
  LiteRT.js runs it (batch 1, float interface), for the Classify page's browser
  panel; ``session`` is the page's token, which opens that visitor's own
  recipe variants.

Models and variants are resolved as every front end resolves them
(:func:`inference.registry.catalog.resolve`): built-in, saved with ``quantize --name``,
and the session's. The Keras ``original`` (TensorFlow in the server; weights
fetched for a download model) is served only to callers holding the API key,
or to everyone where ``QUANTLENS_API_ORIGINAL=1``; otherwise 403, and
``variant=all`` means every TFLite variant.

``/api/models`` and ``/api/predict`` sit behind :func:`api.guard.guarded`: an
optional API key, and a per-client rate limit (429 with ``Retry-After``).

Bad requests get a 4xx status and ``{"error": "..."}``. Inference runs in
Starlette's thread pool, so a prediction never blocks the event loop that also
carries the dashboard's websockets. Runners come from
:data:`inference.registry.runner_cache.RUNNERS`, so the API and the dashboard share one
copy of each model.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from api.graph import graph_routes
from api.guard import drain, guarded, may_load_original
from inference import (
    DEFAULT_MODEL,
    ZOO,
    InputError,
    ModelUnavailableError,
    UsageError,
)
from inference.core.errors import NotAllowedError, one_line
from inference.core.machine import resident_bytes
from inference.engine.convert import browser_path, is_converted
from inference.formats.images import MAX_IMAGE_BYTES, MAX_IMAGE_MB
from inference.pipeline import NotConvertedError, Pipeline, PipelineOptions
from inference.registry.catalog import find_session, resolve, resolve_spec
from inference.registry.zoo import describe

log = logging.getLogger("quantlens.api")

MAX_TOP_K = 1000
DRAIN_LIMIT_BYTES = 4 * MAX_IMAGE_BYTES


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "rss_mb": round(resident_bytes() / 1e6, 1)})


async def models(request: Request) -> JSONResponse:
    return JSONResponse([describe(resolve_spec(spec)) for spec in ZOO.values()])


def _pipeline(request: Request, **options: object) -> Pipeline:
    """The request's model and variants, resolved as every front end resolves them."""
    params = request.query_params
    return Pipeline(
        params.get("model", DEFAULT_MODEL),
        params.get("variant", "int8"),
        session=find_session(params.get("session")),
        # Shared runners, and never a conversion started by an anonymous request.
        options=PipelineOptions(shared=True, convert=False, **options),
    )


def _refusal(exc: InputError | NotAllowedError) -> JSONResponse:
    if isinstance(exc, NotAllowedError):
        return _error(403, str(exc))
    return _error(400 if isinstance(exc, UsageError) else 404, str(exc))


async def predict(request: Request) -> JSONResponse:
    params = request.query_params
    try:
        k = int(params.get("top_k", "5"))
        if not 1 <= k <= MAX_TOP_K:
            raise ValueError
    except ValueError:
        await drain(request, DRAIN_LIMIT_BYTES)
        return _error(400, f"expected top_k to be an integer from 1 to {MAX_TOP_K}")
    try:
        pipeline = _pipeline(request, original=may_load_original(request), top_k=k)
    except (InputError, NotAllowedError) as exc:
        await drain(request, DRAIN_LIMIT_BYTES)
        return _refusal(exc)
    if "content-length" not in request.headers:
        # A chunked body has no size up front; refusing it keeps the limit enforceable.
        return _error(411, "send the upload with a Content-Length header")
    try:
        declared = int(request.headers["content-length"])
    except ValueError:
        return _error(400, "the Content-Length header is not a number")
    if declared > MAX_IMAGE_BYTES + 64 * 1024:
        await drain(request, DRAIN_LIMIT_BYTES)
        return _error(413, f"uploads are limited to {MAX_IMAGE_MB} MB")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception:  # malformed multipart bodies raise several types
        return _error(400, "expected a multipart/form-data body with a file field 'image'")
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            return _error(400, "expected a multipart/form-data body with a file field 'image'")
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        filename = upload.filename
    finally:
        await form.close()
    if len(data) > MAX_IMAGE_BYTES:
        return _error(413, f"uploads are limited to {MAX_IMAGE_MB} MB")
    # The client's file name is only ever a label in the answer, never a path.
    name = (filename or "image")[-200:]
    try:
        answers = await run_in_threadpool(pipeline, data, name=name)
        return JSONResponse([answer.as_dict() for answer in answers])
    except InputError as exc:
        return _error(400, str(exc))
    except (ModelUnavailableError, NotConvertedError) as exc:
        return _error(503, str(exc))
    except Exception as exc:  # an InferenceError's own line, or a bug logged with its traceback
        return _error(500, one_line(exc, context="POST /api/predict", log=log))


async def browser_file(request: Request) -> Response:
    """``GET /api/browser-file?model=&variant=``: a converted variant as LiteRT.js runs it."""
    params = request.query_params
    try:
        spec, (variant,) = resolve(
            params.get("model", DEFAULT_MODEL),
            params.get("variant", "int8"),
            session=find_session(params.get("session")),
            original=False,
            single=True,
        )
    except (InputError, NotAllowedError) as exc:
        return _refusal(exc)
    if not is_converted(spec, variant):
        return _error(503, f"{spec.name} {variant} is not converted yet")
    try:
        path = await run_in_threadpool(browser_path, spec, variant)
    except Exception as exc:
        return _error(500, one_line(exc, context="GET /api/browser-file", log=log))
    return FileResponse(path, media_type="application/octet-stream")


routes = [
    Route("/api/health", health, methods=["GET"]),
    Route("/api/models", guarded(models), methods=["GET"]),
    Route("/api/predict", guarded(predict), methods=["POST"]),
    # The dashboard's own browser panel fetches these: rate limited, but no API key.
    Route("/api/browser-file", guarded(browser_file, key=False), methods=["GET"]),
    # Model Explorer's web app for the Layers page's graph, and the calls it makes.
    *graph_routes(),
]
