"""Models, their versions, deployments, the account and the webhook signing secret: what the
catalog holds, as Replicate's API shows it."""

from __future__ import annotations

from aiohttp import web

from ..catalog import deployment_json, model_json, version_json
from .common import DEPLOYMENT, ENGINE, MODEL, api, json_response, not_found, one_page, owner_name


def _model_or_none(request: web.Request):
    return request.app[ENGINE].catalog.get(owner_name(request))


@api("read", "models.get")
async def get_model(request: web.Request) -> web.StreamResponse:
    model = _model_or_none(request)
    if model is None:
        return not_found()
    return json_response(model_json(model, run_count=request.app[ENGINE].creations_by_model[model.name]))


@api("read", "models.list")
async def list_models(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    models = [
        model_json(model, run_count=engine.creations_by_model[model.name])
        for model in engine.catalog.latest()
    ]
    return one_page(models)


@api("read", "models.versions.list")
async def list_versions(request: web.Request) -> web.StreamResponse:
    versions = request.app[ENGINE].catalog.versions(owner_name(request))
    if not versions:
        return not_found()
    return one_page([version_json(v) for v in versions])


@api("read", "models.versions.get")
async def get_version(request: web.Request) -> web.StreamResponse:
    model = request.app[ENGINE].catalog.by_version(request.match_info["version"])
    if model is None or model.name != owner_name(request):
        return not_found()
    return json_response(version_json(model))


@api("read", "deployments.get")
async def get_deployment(request: web.Request) -> web.StreamResponse:
    found = request.app[ENGINE].catalog.deployment(owner_name(request))
    if found is None:
        return not_found()
    return json_response(deployment_json(found))


@api("read", "deployments.list")
async def list_deployments(request: web.Request) -> web.StreamResponse:
    found = request.app[ENGINE].catalog.deployments()
    return one_page([deployment_json(d) for d in found])


@api("read", "account.get")
async def get_account(request: web.Request) -> web.StreamResponse:
    return json_response(
        {"type": "organization", "username": "replicate-sim", "name": "Replicate Sim", "github_url": None}
    )


@api("read", "webhooks.secret")
async def get_webhook_secret(request: web.Request) -> web.StreamResponse:
    return json_response({"key": request.app[ENGINE].config.webhook_secret})


def add_routes(router: web.UrlDispatcher) -> None:
    """The catalog's routes (models, versions, deployments), the account's and the webhook secret's."""
    router.add_get("/v1/models", list_models)
    router.add_get(MODEL, get_model)
    router.add_get(f"{MODEL}/versions", list_versions)
    router.add_get(f"{MODEL}/versions/{{version}}", get_version)
    router.add_get("/v1/deployments", list_deployments)
    router.add_get(DEPLOYMENT, get_deployment)
    router.add_get("/v1/account", get_account)
    router.add_get("/v1/webhooks/default/secret", get_webhook_secret)
