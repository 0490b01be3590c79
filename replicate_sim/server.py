"""The stand-in's app: the engine, the account's gate, and every route (replicate_sim.routes, a
module per resource) on one aiohttp application.

Every /v1 route is tagged "create" or "read"; one middleware does auth, injected 5xx and the
account's limits before the handler runs. Downloads and /_sim routes are "free": they count
against nothing (Replicate serves files from replicate.delivery, outside its API limits).
"""

from __future__ import annotations

from aiohttp import web

from .catalog import Catalog, load_catalog
from .config import SimConfig
from .engine import TERMINAL, Engine
from .routes.common import ENGINE, MAX_UPLOAD
from .routes.delivery import download_output, web_page
from .routes.files import create_file, delete_file, download_file, get_file, list_files
from .routes.gate import account_middleware
from .routes.models import (
    get_account,
    get_deployment,
    get_model,
    get_version,
    get_webhook_secret,
    list_deployments,
    list_models,
    list_versions,
)
from .routes.predictions import (
    cancel_prediction,
    create_by_deployment,
    create_by_model,
    create_by_version,
    get_prediction,
    list_predictions,
)
from .routes.sim import sim_events, sim_get_config, sim_health, sim_ledger, sim_reset, sim_set_config


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
