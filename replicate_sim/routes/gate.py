"""The one middleware every tagged (/v1) route passes: auth, injected 5xx and the account's
limits, before the handler runs. Untagged routes (downloads, /_sim) count against nothing."""

from __future__ import annotations

from aiohttp import web

from .common import DROPPED, ENGINE, Handler, problem, server_error, throttled


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
