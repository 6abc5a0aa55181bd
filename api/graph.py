"""Google Model Explorer's web app and the few backend calls it makes, served by the app itself.

Community Cloud exposes one port, so the graph on the Layers page cannot be a
second server: the built web app (inside the ``ai-edge-model-explorer`` wheel)
is served from ``/model-explorer/``, and the calls it makes are answered here:

- ``/api/v1/load_graphs_json?graph_index=N`` and ``/api/v1/load_node_data?node_data_index=N``:
  what the page put in :data:`inference.registry.graphs.GRAPHS`;
- ``/api/v1/check_new_version``: answered locally, nothing is asked of the internet;
- ``/api/v1/get_extensions``: the JSON loader only (models come as graphs, never as paths);
- ``/apistream/server_director``: an event stream that ends at once (no live reload).

The index page is rewritten once: its base is ``/model-explorer/``, and the
font faces it would fetch from ``fonts.gstatic.com`` are dropped (the same
fonts are in its ``static_files``). Nothing is fetched from elsewhere (a
real-browser test records every request). Without the wheel, the routes are
not added and the page says so.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from inference.formats.graph_json import web_app_dir
from inference.registry.graphs import GRAPHS

__all__ = ["PREFIX", "graph_routes", "web_app_dir"]

PREFIX = "/model-explorer"


@functools.cache
def _index(folder: Path) -> str:
    html = (folder / "index.html").read_text(encoding="utf-8")
    html = html.replace('<base href="/">', f'<base href="{PREFIX}/">')
    html = re.sub(r'<link rel="preconnect" href="https://fonts\.gstatic\.com"[^>]*>', "", html)
    # The first <style> holds @font-face rules pointing at fonts.gstatic.com; the
    # second holds the same faces from static_files, which stay.
    html = re.sub(r"<style>[^<]*fonts\.gstatic\.com[^<]*</style>", "", html)
    if "fonts.gstatic.com" in html or "fonts.googleapis.com" in html:
        raise RuntimeError("Model Explorer's index.html still names an outside font host")
    return html


def _number(request: Request, name: str) -> int | None:
    try:
        return int(request.query_params.get(name, ""))
    except ValueError:
        return None


async def _load(request: Request, name: str, wrap: bool) -> Response:
    number = _number(request, name)
    text = GRAPHS.get(number) if number is not None else None
    if text is None:
        return JSONResponse({"error": "no such graph; open it again from the Layers page"}, 404)
    if wrap:  # node data: the JSON text inside {"content": ...}, as Model Explorer's server does
        return JSONResponse({"content": text})
    return Response(text, media_type="application/json")


async def load_graphs(request: Request) -> Response:
    return await _load(request, "graph_index", wrap=False)


async def load_node_data(request: Request) -> Response:
    return await _load(request, "node_data_index", wrap=True)


async def no_new_version(request: Request) -> JSONResponse:
    # Model Explorer's server asks PyPI here; this one never asks anything of the internet.
    empty = {"version": "", "runningVersion": "", "releaseUrl": "", "desktopAppUrl": ""}
    return JSONResponse(empty)


async def json_loader_only(request: Request) -> JSONResponse:
    # Graphs arrive as JSON from this server (graphs://), which needs the built-in loader.
    loader = {"fileExts": ["json"], "type": "adapter", "id": "builtin_json",
              "name": "JSON adapter", "description": "Graphs from QuantLens."}  # fmt: skip
    return JSONResponse([loader])


async def no_directives(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        "", media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def graph_routes() -> list[BaseRoute]:
    """The routes, or none when Model Explorer's wheel is not installed."""
    folder = web_app_dir()
    if folder is None:
        return []

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(_index(folder), headers={"Cache-Control": "no-cache"})

    static = StaticFiles(directory=folder)
    return [
        Route(f"{PREFIX}/", index, methods=["GET"]),
        Route("/api/v1/load_graphs_json", load_graphs, methods=["GET"]),
        Route("/api/v1/load_node_data", load_node_data, methods=["GET"]),
        Route("/api/v1/check_new_version", no_new_version, methods=["GET"]),
        Route("/api/v1/get_extensions", json_loader_only, methods=["GET"]),
        Route("/apistream/server_director", no_directives, methods=["GET"]),
        Mount("/static_files", StaticFiles(directory=folder / "static_files")),
        Mount(PREFIX, static),
    ]
