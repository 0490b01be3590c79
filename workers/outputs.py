"""A terminal prediction becomes the item's files, or the error that decides what comes next.

Every output is fetched without the Replicate token (workers.download) and written atomically
(workers.storage). An output that is gone (404/410) needs a new prediction; any other download
trouble fetches the same finished prediction again later (the attempt resumes it, never pays
again).
"""
from __future__ import annotations

from pathlib import Path

from shared.errors import CanceledError, PermanentModelError, RequeueError, TransientError
from shared.models import ModelSpec
from shared.request import ImageRequest
from workers.attempts import AttemptRef
from workers.download import extension_of, output_urls
from workers.replicate_calls import PredictionView, failure_error
from workers.stage import AttemptStage
from workers.storage import output_paths


class OutputSaver(AttemptStage):
    def conclude(self, ref: AttemptRef, request: ImageRequest, spec: ModelSpec, view: PredictionView) -> list[str]:
        """The paths written for a succeeded prediction; the error its end means otherwise."""
        if view.status == "succeeded":
            return self.save(ref, request, spec, view)
        if view.status == "failed":
            raise failure_error(view)
        if view.status == "canceled":
            raise CanceledError("batch canceled" if self.ctx.ledger.is_canceled(ref.batch_id)
                                else f"prediction {view.id} was canceled at Replicate")
        # aborted: the deadline passed before it started; nothing ran, try again
        raise TransientError(f"prediction {view.id} {view.status}: {view.error or 'never started'}",
                             prediction_id=view.id)

    def save(self, ref: AttemptRef, request: ImageRequest, spec: ModelSpec, view: PredictionView) -> list[str]:
        urls = output_urls(view.output)
        if not urls:
            raise PermanentModelError(f"prediction {view.id} succeeded without any output", prediction_id=view.id)
        ext = extension_of(urls[0]) or spec.default_format or "png"
        relative = request.output or f"{ref.batch_id}/{ref.index:04d}.{ext}"
        paths = output_paths(Path(self.ctx.settings.output_dir), relative, len(urls), default_ext=ext)
        for url, path in zip(urls, paths):
            try:
                self.ctx.downloader.save(url, path)
            except TransientError as exc:
                if exc.status in (404, 410):
                    raise TransientError(f"output of {view.id} is gone ({exc}); a new prediction is needed",
                                         prediction_id=view.id) from None
                raise RequeueError(f"{exc}; the finished prediction will be fetched again",
                                   countdown=self._backoff(1)) from None
        return [str(p) for p in paths]
