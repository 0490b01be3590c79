"""What every route shares: the engine's key in the app, the tag that says which of the
account's limits a route counts against, and the JSON and problem+json answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..engine import Engine

ENGINE = web.AppKey("engine", Engine)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE_SIZE = 100
DROPPED = 499  # the status of a "response" to a connection the stand-in reset (never sent)
MAX_UPLOAD = 100 * 1024 * 1024
# The two resources whose routes both predictions and the catalog hang under.
MODEL = "/v1/models/{owner}/{name}"
DEPLOYMENT = "/v1/deployments/{owner}/{name}"


def api(kind: str, route: str) -> Callable[[Handler], Handler]:
    """Tag a handler with the limit it counts against ("create" or "read") and a route name."""

    def tag(handler: Handler) -> Handler:
        # The tags ride on the function (account_middleware reads them); a Callable type has no
        # attributes, hence the ignores.
        handler.sim_kind = kind  # type: ignore[attr-defined]
        handler.sim_route = route  # type: ignore[attr-defined]
        return handler

    return tag


def problem(
    status: int, detail: str, *, title: str | None = None, headers: dict | None = None, **extra: Any
) -> web.Response:
    body: dict[str, Any] = {}
    if title:
        body["title"] = title
    body.update({"detail": detail, "status": status, **extra})
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json", headers=headers
    )


def not_found(detail: str = "Not found.") -> web.Response:
    return problem(404, detail, title="Not found")


def bad_request(detail: str) -> web.Response:
    return problem(400, detail, title="Bad request")


def one_page(results: list[Any]) -> web.Response:
    """A list that Replicate would page, whole on one page (no cursor either way)."""
    return json_response({"previous": None, "next": None, "results": results})


def throttled(retry_after: int, kind: str) -> web.Response:
    if kind == "in_flight":
        detail = (
            f"You have reached the maximum number of predictions in flight for this account. "
            f"Try again in ~{retry_after}s."
        )
    else:
        detail = f"Request was throttled. Your rate limit resets in ~{retry_after}s."
    return problem(429, detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


def server_error(status: int) -> web.Response:
    if status == 500:
        return problem(
            500, "An internal error occurred (replicate-sim injected fault).", title="Internal Server Error"
        )
    reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Error")
    # Gateways answer with HTML, not problem+json; clients must cope with both.
    return web.Response(
        status=status, text=f"<html><body><h1>{status} {reason}</h1></body></html>", content_type="text/html"
    )


def base_url(request: web.Request) -> str:
    engine = request.app[ENGINE]
    if engine.config.public_url:
        return engine.config.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def owner_name(request: web.Request) -> str:
    """The `owner/name` of a model or deployment route (MODEL, DEPLOYMENT)."""
    return f"{request.match_info['owner']}/{request.match_info['name']}"


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )
