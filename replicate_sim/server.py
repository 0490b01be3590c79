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
from .routes import creates, delivery, files, models, predictions, sim
from .routes.common import ENGINE, MAX_UPLOAD
from .routes.gate import account_middleware


def build_app(config: SimConfig, catalog: Catalog | None = None) -> web.Application:
    engine = Engine(config, catalog or load_catalog())
    app = web.Application(middlewares=[account_middleware], client_max_size=MAX_UPLOAD + 1024 * 1024)
    app[ENGINE] = engine
    for routes in (creates, predictions, models, files, delivery, sim):
        routes.add_routes(app.router)

    async def shutdown(app: web.Application) -> None:
        await app[ENGINE].close()

    app.on_cleanup.append(shutdown)
    return app


__all__ = ["build_app", "ENGINE", "TERMINAL"]
