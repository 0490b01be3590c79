"""HTTP layer: Replicate's API routes, output downloads and the private /_sim control routes.

Every /v1 route is tagged "create" or "read"; one middleware does auth, injected 5xx and the
account's limits before the handler runs. Downloads and /_sim routes are "free": they count
against nothing (Replicate serves files from replicate.delivery, outside its API limits).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from .catalog import (
    Catalog,
    ModelInfo,
    deployment_json,
    load_catalog,
    model_json,
    validate_input,
    version_json,
)
from .config import SimConfig
from .engine import TERMINAL, Engine, Prediction
from .media import CONTENT_TYPES
from .webhooks import EVENTS

log = logging.getLogger("replicate_sim")

ENGINE = web.AppKey("engine", Engine)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE_SIZE = 100
DROPPED = 499  # the status of a "response" to a connection the stand-in reset (never sent)
MAX_UPLOAD = 100 * 1024 * 1024


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


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


@web.middleware
async def account_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    engine = request.app[ENGINE]
    kind = getattr(handler, "sim_kind", None)
    if kind is None:
        if request.path.startswith("/v1/"):
            try:
                return await handler(request)
            except web.HTTPException as exc:  # unknown API route: answer like an API, not HTML
                return problem(exc.status, "The requested resource could not be found.", title="Not found")
        return await handler(request)
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if (
        scheme.lower() not in ("bearer", "token")
        or not token
        or (engine.config.token is not None and token != engine.config.token)
    ):
        engine.unauthorized += 1
        return problem(401, "You did not pass a valid authentication token", title="Unauthenticated")
    status = engine.injected_error()
    if status is not None:
        return server_error(status)
    rejection = engine.admit(kind, handler.sim_route)  # type: ignore[attr-defined]  # api()'s tag
    if rejection is not None:
        return throttled(rejection.retry_after or 1, rejection.kind)
    response = await handler(request)
    if 400 <= response.status < 500 and response.status != DROPPED:
        engine.invalid_requests[response.status] += 1
    return response


# --- predictions ----------------------------------------------------------------------------------


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
        return problem(400, f"Prefer: wait=N needs 1 <= N <= {engine.config.max_wait}", title="Bad request")
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
        return problem(400, "The request body is not valid JSON.", title="Bad request")
    if not isinstance(body, dict):
        return problem(400, "The request body must be a JSON object.", title="Bad request")
    return body


def _target(
    catalog: Catalog, body: dict[str, Any], model_name: str | None, deployment: str | None
) -> tuple[ModelInfo, str] | web.Response:
    """The model a create runs and the version it reports (from the deployment, the model's
    route, or the body's "version"), or the 404/422 Replicate answers when there is none."""
    if deployment is not None:
        found = catalog.deployment(deployment)
        if found is None:
            return problem(404, f"Deployment {deployment} not found.", title="Not found")
        return found.model, found.model.version_id
    if model_name is not None:
        model = catalog.get(model_name)
        if model is None:
            return problem(
                404,
                f"Model {model_name} not found (replicate-sim knows: {', '.join(catalog.names())}).",
                title="Not found",
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
    return await _create(
        request, f"{request.match_info['owner']}/{request.match_info['name']}", "models.predictions.create"
    )


@api("create", "predictions.create")
async def create_by_version(request: web.Request) -> web.StreamResponse:
    return await _create(request, None, "predictions.create")


@api("create", "predictions.create")
async def create_by_deployment(request: web.Request) -> web.StreamResponse:
    return await _create(
        request,
        None,
        "deployments.predictions.create",
        deployment=f"{request.match_info['owner']}/{request.match_info['name']}",
    )


def _prediction_or_404(request: web.Request):
    return request.app[ENGINE].predictions.get(request.match_info["id"])


@api("read", "predictions.get")
async def get_prediction(request: web.Request) -> web.StreamResponse:
    prediction = _prediction_or_404(request)
    if prediction is None:
        return problem(404, "Not found.", title="Not found")
    return json_response(prediction.to_json(request.app[ENGINE].config.output_ttl))


@api("read", "predictions.cancel")
async def cancel_prediction(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    prediction = _prediction_or_404(request)
    if prediction is None:
        return problem(404, "Not found.", title="Not found")
    engine.cancel(prediction)
    return json_response(prediction.to_json(engine.config.output_ttl))


@api("read", "predictions.list")
async def list_predictions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    try:
        before = int(request.query.get("cursor", len(engine.order)))
    except ValueError:
        return problem(400, "Invalid cursor.", title="Bad request")
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


# --- models, account, webhooks ----------------------------------------------------------------------


def _model_or_none(request: web.Request):
    return request.app[ENGINE].catalog.get(f"{request.match_info['owner']}/{request.match_info['name']}")


@api("read", "models.get")
async def get_model(request: web.Request) -> web.StreamResponse:
    model = _model_or_none(request)
    if model is None:
        return problem(404, "Not found.", title="Not found")
    return json_response(model_json(model, run_count=request.app[ENGINE].creations_by_model[model.name]))


@api("read", "models.list")
async def list_models(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    models = [
        model_json(model, run_count=engine.creations_by_model[model.name])
        for model in engine.catalog.latest()
    ]
    return json_response({"previous": None, "next": None, "results": models})


@api("read", "models.versions.list")
async def list_versions(request: web.Request) -> web.StreamResponse:
    versions = request.app[ENGINE].catalog.versions(
        f"{request.match_info['owner']}/{request.match_info['name']}"
    )
    if not versions:
        return problem(404, "Not found.", title="Not found")
    return json_response({"previous": None, "next": None, "results": [version_json(v) for v in versions]})


@api("read", "models.versions.get")
async def get_version(request: web.Request) -> web.StreamResponse:
    model = request.app[ENGINE].catalog.by_version(request.match_info["version"])
    if model is None or model.name != f"{request.match_info['owner']}/{request.match_info['name']}":
        return problem(404, "Not found.", title="Not found")
    return json_response(version_json(model))


@api("read", "deployments.get")
async def get_deployment(request: web.Request) -> web.StreamResponse:
    found = request.app[ENGINE].catalog.deployment(
        f"{request.match_info['owner']}/{request.match_info['name']}"
    )
    if found is None:
        return problem(404, "Not found.", title="Not found")
    return json_response(deployment_json(found))


@api("read", "deployments.list")
async def list_deployments(request: web.Request) -> web.StreamResponse:
    found = request.app[ENGINE].catalog.deployments()
    return json_response({"previous": None, "next": None, "results": [deployment_json(d) for d in found]})


@api("read", "account.get")
async def get_account(request: web.Request) -> web.StreamResponse:
    return json_response(
        {"type": "organization", "username": "replicate-sim", "name": "Replicate Sim", "github_url": None}
    )


@api("read", "webhooks.secret")
async def get_webhook_secret(request: web.Request) -> web.StreamResponse:
    return json_response({"key": request.app[ENGINE].config.webhook_secret})


# --- files --------------------------------------------------------------------------------------------


@api("read", "files.create")
async def create_file(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    if not request.content_type.startswith("multipart/"):
        return problem(
            400, "Send the file as multipart/form-data in a part named 'content'.", title="Bad request"
        )
    content, name, content_type, metadata = None, "file", "application/octet-stream", {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue  # a multipart inside the multipart: no file part of the API's
        if part.name == "content":
            name = part.filename or name
            content_type = part.headers.get("Content-Type", content_type)
            content = await part.read(decode=False)
        elif part.name == "metadata":
            try:
                metadata = json.loads(await part.text())
            except json.JSONDecodeError:
                return problem(400, "metadata must be JSON.", title="Bad request")
    if content is None:
        return problem(400, "Missing multipart part 'content'.", title="Bad request")
    stored = engine.store_file(name, content_type, bytes(content), metadata, base_url(request))
    return json_response(stored.to_json(), status=201)


@api("read", "files.get")
async def get_file(request: web.Request) -> web.StreamResponse:
    stored = request.app[ENGINE].files.get(request.match_info["id"])
    if stored is None:
        return problem(404, "Not found.", title="Not found")
    return json_response(stored.to_json())


@api("read", "files.list")
async def list_files(request: web.Request) -> web.StreamResponse:
    files = [f.to_json() for f in reversed(list(request.app[ENGINE].files.values()))]
    return json_response({"previous": None, "next": None, "results": files})


@api("read", "files.delete")
async def delete_file(request: web.Request) -> web.StreamResponse:
    if request.app[ENGINE].files.pop(request.match_info["id"], None) is None:
        return problem(404, "Not found.", title="Not found")
    return web.Response(status=204)


async def download_file(request: web.Request) -> web.StreamResponse:
    stored = request.app[ENGINE].files.get(request.match_info["id"])
    if stored is None:
        raise web.HTTPNotFound()
    return web.Response(body=stored.data, content_type=stored.content_type)


# --- outputs (replicate.delivery's part) --------------------------------------------------------------


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


# --- control --------------------------------------------------------------------------------------------


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
            return problem(400, "body must be JSON (config changes) or empty", title="Bad request")
    try:
        engine.config.update(changes or {})
    except (ValueError, TypeError) as exc:
        return problem(400, str(exc), title="Bad config")
    await engine.reset()
    return json_response({"ok": True, "config": engine.config.to_dict()})


def build_app(config: SimConfig, catalog: Catalog | None = None) -> web.Application:
    engine = Engine(config, catalog or load_catalog())
    app = web.Application(middlewares=[account_middleware], client_max_size=MAX_UPLOAD + 1024 * 1024)
    app[ENGINE] = engine
    model = "/v1/models/{owner}/{name}"
    app.router.add_post(f"{model}/predictions", create_by_model)
    app.router.add_post("/v1/predictions", create_by_version)
    app.router.add_get("/v1/predictions", list_predictions)
    app.router.add_get("/v1/predictions/{id}", get_prediction)
    app.router.add_post("/v1/predictions/{id}/cancel", cancel_prediction)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get(model, get_model)
    app.router.add_get(f"{model}/versions", list_versions)
    app.router.add_get(f"{model}/versions/{{version}}", get_version)
    deployment = "/v1/deployments/{owner}/{name}"
    app.router.add_get("/v1/deployments", list_deployments)
    app.router.add_get(deployment, get_deployment)
    app.router.add_post(f"{deployment}/predictions", create_by_deployment)
    app.router.add_get("/v1/account", get_account)
    app.router.add_get("/v1/webhooks/default/secret", get_webhook_secret)
    app.router.add_post("/v1/files", create_file)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{id}", get_file)
    app.router.add_delete("/v1/files/{id}", delete_file)
    app.router.add_get("/v1/files/{id}/download", download_file)
    app.router.add_get("/delivery/{id}/{filename}", download_output)
    app.router.add_get("/p/{id}", web_page)
    app.router.add_get("/_sim/health", sim_health)
    app.router.add_get("/_sim/ledger", sim_ledger)
    app.router.add_get("/_sim/events", sim_events)
    app.router.add_get("/_sim/config", sim_get_config)
    app.router.add_post("/_sim/config", sim_set_config)
    app.router.add_post("/_sim/reset", sim_reset)

    async def shutdown(app: web.Application) -> None:
        await app[ENGINE].close()

    app.on_cleanup.append(shutdown)
    return app


__all__ = ["build_app", "ENGINE", "TERMINAL"]
