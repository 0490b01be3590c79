"""Outputs as replicate.delivery serves them (outside the API's limits), and a prediction's web page."""

from __future__ import annotations

import time

from aiohttp import web

from ..media import CONTENT_TYPES
from .common import ENGINE, json_response


async def download_output(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    prediction = engine.predictions.get(request.match_info["id"])
    filename = request.match_info["filename"]
    if prediction is None or prediction.status != "succeeded" or engine.config.data_uri_outputs:
        raise web.HTTPNotFound()
    if prediction.data_removed(engine.config.output_ttl, time.time()):
        raise web.HTTPNotFound(text="output removed (older than output_ttl)")
    names = engine.output_names(prediction)
    if filename not in names:
        raise web.HTTPNotFound()
    index = names.index(filename)
    data = await engine.render(prediction, index)
    engine.record_served(request.path, prediction.id, index, data)
    ext = filename.rsplit(".", 1)[-1]
    return web.Response(body=data, content_type=CONTENT_TYPES.get(ext, "application/octet-stream"))


async def web_page(request: web.Request) -> web.StreamResponse:
    prediction = request.app[ENGINE].predictions.get(request.match_info["id"])
    if prediction is None:
        raise web.HTTPNotFound()
    return json_response(prediction.to_json(request.app[ENGINE].config.output_ttl))


def add_routes(router: web.UrlDispatcher) -> None:
    """Output downloads and prediction pages."""
    router.add_get("/delivery/{id}/{filename}", download_output)
    router.add_get("/p/{id}", web_page)
