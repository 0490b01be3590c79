"""The prediction's input for one attempt: the item's request routed to the attempt's model, and
local reference images (and local files given to a schema model's file inputs) replaced by
uploaded-file URLs, uploaded once per item (cached in Redis) so that every attempt sends the same
input and reconciliation can recognise it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shared.errors import InputError, PermanentModelError
from shared.redis_conn import text_map
from shared.request import ImageRequest
from shared.routing import build_input
from workers.attempts import AttemptRef
from workers.stage import AttemptStage

log = logging.getLogger("workers.inputs")
UPLOADS_TTL = 14 * 24 * 3600  # as long as the creation records that may need the same input


class InputBuilder(AttemptStage):
    def build(self, ref: AttemptRef, request: ImageRequest, model: str) -> dict[str, Any]:
        try:
            input_, warnings = build_input(request, model, self.ctx.models.registry_for(request.models))
        except InputError as exc:  # this model cannot take the item (a route built elsewhere)
            raise PermanentModelError(str(exc)) from None
        for warning in warnings:
            log.info("input for %s: %s", model, warning)
        return self._upload_references(ref, request, input_)

    def _upload_references(
        self, ref: AttemptRef, request: ImageRequest, input_: dict[str, Any]
    ) -> dict[str, Any]:
        # reference images, and files given to other file inputs of a model described by its schema
        local = {path for path in (*request.reference_images, *request.input_files) if not _is_url(path)}
        if not local:
            return input_
        ctx = self.ctx
        key = ctx.keys.uploads(ref.batch_id, ref.index)
        cached = text_map(ctx.redis.hgetall(key))

        def url_for(path: str) -> str:
            if path not in cached:
                url = self._read(ref.batch_id, lambda: ctx.calls.upload(Path(path)))
                ctx.redis.hset(key, path, url)
                ctx.redis.expire(key, UPLOADS_TTL)
                cached[path] = url
            return cached[path]

        def swap(value: Any) -> Any:
            if isinstance(value, str) and value in local:
                return url_for(value)
            if isinstance(value, list):
                return [swap(v) for v in value]
            return value

        return {k: swap(v) for k, v in input_.items()}


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:"))
