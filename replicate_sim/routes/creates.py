"""Creating a prediction (by model, by version, by deployment): the only routes that count
against the account's creation limit, with `Prefer: wait` and the faults injected around a create
(a stalled, late, lost or cut answer)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from ..catalog import Catalog, ModelInfo, validate_input
from ..engine import Engine, Prediction
from ..webhooks import EVENTS
from .common import (
    DEPLOYMENT,
    DROPPED,
    ENGINE,
    MODEL,
    api,
    bad_request,
    base_url,
    json_response,
    not_found,
    owner_name,
    problem,
    server_error,
)


def parse_prefer(value: str | None, max_wait: int) -> int | None:
    """Seconds to hold the request for `Prefer: wait` / `wait=N`; None if not asked; -1 if malformed."""
    if not value:
        return None
    for part in value.split(","):
        part = part.strip()
        if part == "wait":
            return max_wait
        match = re.fullmatch(r"wait=(\d+)", part)
        if match:
            seconds = int(match.group(1))
            return seconds if 1 <= seconds <= max_wait else -1
    return None


async def _create(
    request: web.Request, model_name: str | None, route: str, deployment: str | None = None
) -> web.StreamResponse:
    engine = request.app[ENGINE]
    body = await _json_object(request)
    if isinstance(body, web.Response):
        return body
    target = _target(engine.catalog, body, model_name, deployment)
    if isinstance(target, web.Response):
        return target
    model, version = target
    wait = parse_prefer(request.headers.get("Prefer"), engine.config.max_wait)
    if wait == -1:
        return bad_request(f"Prefer: wait=N needs 1 <= N <= {engine.config.max_wait}")
    hook = _webhook(body)
    if isinstance(hook, web.Response):
        return hook
    webhook, events = hook
    values = body.get("input", {})
    invalid = validate_input(model, values, strict=engine.config.strict_inputs)
    if invalid:
        detail = "\n".join(f"- {p.field}: {p.description}" for p in invalid)
        return problem(
            422, detail, title="Input validation failed", invalid_fields=[p.to_dict() for p in invalid]
        )
    where: dict[str, Any] = {
        "version": version,
        "base_url": base_url(request),
        "webhook": webhook,
        "webhook_events": frozenset(events),
        "route": route,
        "deployment": deployment,
    }
    failed = await _fault_before_create(engine, model, values, where)
    if failed is not None:
        return failed
    prediction = engine.create_prediction(model, values, **where)
    return await _answer_create(request, engine, prediction, wait)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object body, or the 400 that refuses it."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return bad_request("The request body is not valid JSON.")
    if not isinstance(body, dict):
        return bad_request("The request body must be a JSON object.")
    return body


def _target(
    catalog: Catalog, body: dict[str, Any], model_name: str | None, deployment: str | None
) -> tuple[ModelInfo, str] | web.Response:
    """The model a create runs and the version it reports (from the deployment, the model's
    route, or the body's "version"), or the 404/422 Replicate answers when there is none."""
    if deployment is not None:
        found = catalog.deployment(deployment)
        if found is None:
            return not_found(f"Deployment {deployment} not found.")
        return found.model, found.model.version_id
    if model_name is not None:
        model = catalog.get(model_name)
        if model is None:
            return not_found(
                f"Model {model_name} not found (replicate-sim knows: {', '.join(catalog.names())})."
            )
        return model, "hidden" if model.official else model.version_id
    ref = body.get("version")
    model = catalog.resolve_version_ref(ref) if isinstance(ref, str) else None
    if model is None:
        return problem(
            422,
            "Invalid version or not permitted",
            title="Invalid version",
            invalid_fields=[
                {"type": "invalid", "field": "version", "description": "Invalid version or not permitted"}
            ],
        )
    return model, model.version_id


def _webhook(body: dict[str, Any]) -> tuple[str | None, list[str]] | web.Response:
    """The create's webhook URL and events (all of them unless filtered), or the 422 that
    refuses them."""
    webhook = body.get("webhook")
    events = body.get("webhook_events_filter")
    if body.get("webhook_completed") and not webhook:
        webhook, events = body["webhook_completed"], ["completed"]
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
    ):
        return problem(
            422,
            "webhook must be an http(s) URL",
            title="Input validation failed",
            invalid_fields=[{"type": "format", "field": "webhook", "description": "Invalid URL"}],
        )
    if events is None:
        events = list(EVENTS)
    if not isinstance(events, list) or any(e not in EVENTS for e in events):
        return problem(
            422,
            f"webhook_events_filter items must be among {', '.join(EVENTS)}",
            title="Input validation failed",
            invalid_fields=[
                {
                    "type": "enum",
                    "field": "webhook_events_filter",
                    "description": f"must be among {', '.join(EVENTS)}",
                }
            ],
        )
    return webhook, events


async def _fault_before_create(
    engine: Engine, model: ModelInfo, values: dict[str, Any], where: dict[str, Any]
) -> web.Response | None:
    """The injected faults that strike before the prediction exists (a create held with no
    answer, a gateway's 504 for a prediction created later): their answer, else None."""
    cfg = engine.config
    if cfg.stall_create_next > 0:
        # Held with no answer (the client's read timeout is what ends it on its side); the
        # handler goes on even if the client hangs up, like a server that got the request.
        cfg.stall_create_next -= 1
        engine.stalled_creates += 1
        seconds, creates = cfg.stall_create_seconds, cfg.stall_create_creates
        engine._event("stall", seconds=seconds, creates=creates)
        await asyncio.sleep(seconds)
        if not creates:
            engine.errors_5xx[504] += 1
            return server_error(504)
    if cfg.late_create_next > 0:
        # A gateway's 504 now; Replicate creates (and bills) the prediction a little later.
        cfg.late_create_next -= 1
        engine.late_creates += 1
        engine.errors_5xx[504] += 1
        engine._event("late_create", after=cfg.late_create_after)
        engine.create_later(cfg.late_create_after, model, values, **where)
        return server_error(504)
    return None


async def _answer_create(
    request: web.Request, engine: Engine, prediction: Prediction, wait: int | None
) -> web.StreamResponse:
    """The answer to a create that made its prediction: lost or cut when a fault is injected,
    else 201, held first for `Prefer: wait`."""
    cfg = engine.config
    if cfg.ghost_create_next > 0:
        # Created and billed, but the answer is lost on the way: the client cannot know the id.
        cfg.ghost_create_next -= 1
        engine.ghost_creates += 1
        engine.errors_5xx[502] += 1
        return server_error(502)
    if cfg.drop_create_next > 0:
        cfg.drop_create_next -= 1
        return await _drop_connection(request, prediction, wait)
    headers = {}
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait}"
        await _hold(prediction, wait, cfg.wait_overrun)
    return json_response(prediction.to_json(cfg.output_ttl), status=201, headers=headers)


async def _hold(prediction, seconds: float, overrun: float = 0.0) -> None:
    """`Prefer: wait`: until the prediction ends or `seconds` pass (then it is answered as it is,
    `overrun` s later)."""
    try:
        await asyncio.wait_for(asyncio.shield(prediction.done.wait()), timeout=seconds)
    except asyncio.TimeoutError:
        await asyncio.sleep(overrun)


async def _drop_connection(request: web.Request, prediction, wait: int | None) -> web.StreamResponse:
    """A created (and billed) prediction whose connection is reset before any answer, after
    `drop_create_after` s (or at the end of the wait asked, if sooner), whether or not the
    prediction ended meanwhile: what a client sees when a proxy or the network cuts a sync
    create that was held open (or its answer on the way)."""
    engine = request.app[ENGINE]
    engine.dropped_creates += 1
    after = engine.config.drop_create_after
    engine._event("drop", prediction=prediction.id, after=after)
    await asyncio.sleep(after if wait is None else min(after, wait))
    if request.transport is not None:
        request.transport.abort()
    # Never written: the connection is gone. aiohttp drops a response it cannot send.
    return web.Response(status=DROPPED)


@api("create", "predictions.create")
async def create_by_model(request: web.Request) -> web.StreamResponse:
    return await _create(request, owner_name(request), "models.predictions.create")


@api("create", "predictions.create")
async def create_by_version(request: web.Request) -> web.StreamResponse:
    return await _create(request, None, "predictions.create")


@api("create", "predictions.create")
async def create_by_deployment(request: web.Request) -> web.StreamResponse:
    return await _create(
        request,
        None,
        "deployments.predictions.create",
        deployment=owner_name(request),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    """The three ways to create a prediction, on `router`."""
    router.add_post(f"{MODEL}/predictions", create_by_model)
    router.add_post("/v1/predictions", create_by_version)
    router.add_post(f"{DEPLOYMENT}/predictions", create_by_deployment)
