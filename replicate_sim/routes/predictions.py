"""Predictions once created: get, cancel, list (newest first, pages of PAGE_SIZE)."""

from __future__ import annotations

from aiohttp import web

from .common import ENGINE, PAGE_SIZE, api, bad_request, base_url, json_response, not_found


def _prediction_or_404(request: web.Request):
    return request.app[ENGINE].predictions.get(request.match_info["id"])


@api("read", "predictions.get")
async def get_prediction(request: web.Request) -> web.StreamResponse:
    prediction = _prediction_or_404(request)
    if prediction is None:
        return not_found()
    return json_response(prediction.to_json(request.app[ENGINE].config.output_ttl))


@api("read", "predictions.cancel")
async def cancel_prediction(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    prediction = _prediction_or_404(request)
    if prediction is None:
        return not_found()
    engine.cancel(prediction)
    return json_response(prediction.to_json(engine.config.output_ttl))


@api("read", "predictions.list")
async def list_predictions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    try:
        before = int(request.query.get("cursor", len(engine.order)))
    except ValueError:
        return bad_request("Invalid cursor.")
    before = max(0, min(before, len(engine.order)))
    start = max(0, before - PAGE_SIZE)
    page = [p.to_json(engine.config.output_ttl) for p in reversed(engine.order[start:before])]
    base = base_url(request)
    return json_response(
        {
            "previous": None,
            "next": f"{base}/v1/predictions?cursor={start}" if start > 0 else None,
            "results": page,
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    """Reading and canceling predictions, on `router`."""
    router.add_get("/v1/predictions", list_predictions)
    router.add_get("/v1/predictions/{id}", get_prediction)
    router.add_post("/v1/predictions/{id}/cancel", cancel_prediction)
