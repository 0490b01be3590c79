"""The private /_sim routes that tests and benches drive: health, the ledger, events, run-time
config, reset. They count against nothing."""

from __future__ import annotations

import json

from aiohttp import web

from .common import ENGINE, bad_request, json_response, problem


async def sim_health(request: web.Request) -> web.StreamResponse:
    import os

    engine = request.app[ENGINE]
    return json_response({"ok": True, "pid": os.getpid(), "models": engine.catalog.names()})


async def sim_ledger(request: web.Request) -> web.StreamResponse:
    detail = request.query.get("detail", "1") not in ("0", "false", "no")
    return json_response(request.app[ENGINE].ledger(detail=detail))


async def sim_events(request: web.Request) -> web.StreamResponse:
    events = request.app[ENGINE].events
    try:
        since = max(0, int(request.query.get("since", "0")))
    except ValueError:
        raise web.HTTPBadRequest(text="since must be an integer") from None
    return json_response({"events": events[since:], "next": len(events)})


async def sim_get_config(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[ENGINE].config.to_dict())


async def sim_set_config(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("send a JSON object of option: value")
        engine.config.update(changes)
    except (ValueError, TypeError) as exc:
        return problem(400, str(exc), title="Bad config")
    engine.config_changed()
    return json_response(engine.config.to_dict())


async def sim_reset(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    changes = {}
    if request.can_read_body:
        try:
            changes = await request.json()
        except json.JSONDecodeError:
            return bad_request("body must be JSON (config changes) or empty")
    try:
        engine.config.update(changes or {})
    except (ValueError, TypeError) as exc:
        return problem(400, str(exc), title="Bad config")
    await engine.reset()
    return json_response({"ok": True, "config": engine.config.to_dict()})


def add_routes(router: web.UrlDispatcher) -> None:
    """The /_sim control routes."""
    router.add_get("/_sim/health", sim_health)
    router.add_get("/_sim/ledger", sim_ledger)
    router.add_get("/_sim/events", sim_events)
    router.add_get("/_sim/config", sim_get_config)
    router.add_post("/_sim/config", sim_set_config)
    router.add_post("/_sim/reset", sim_reset)
