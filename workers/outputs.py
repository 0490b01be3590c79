"""A terminal prediction becomes the item's files, or the error that decides what comes next.

Every output is fetched without the Replicate token (workers.download), kept on this host until
written (workers.spool), and written whole, once, to the batch's output location as recorded at
submit (shared.storage, workers.stores): a folder or an object store.

- Names: the item's names reserved at submit (`output`, then `stem_1`, `stem_2` ... for the
  outputs its model was asked for). A model that returns more outputs than that gets the reserved
  ones written and the rest refused (never a `stem_N` nobody reserved, which could be another
  item's file). The extension follows the bytes received (magic numbers), whatever the URL or the
  asked-for format said; the manifest records each file's format.
- Never over another's object: a conditional write, unless the batch was submitted with
  --overwrite or the object is this item's own earlier output (recorded in Redis). The key is
  always one of `written_names(reserved name)`: the reserved name, or its stem with the
  extension of the bytes. That is all --overwrite reaches, and what submit refuses as existing
  without it: a file of the stem in another format is never touched.
- Only the run that holds the attempt's claim concludes: a run whose claim was lost while it
  waited (stalled past the claim's ttl; another run resumed the same prediction) writes no file,
  no name and no outcome (SupersededError, checked in Redis before concluding and before each
  write); the end, the files and the manifest are the claim holder's.
- Errors: an output that is gone (404/410) needs a new prediction; other download trouble fetches
  the same finished prediction again later. A store that does not answer runs the same attempt
  again later (WriteRetryError), which writes what it kept or downloads again, never creating
  again; a store that refuses (403, no such bucket, disk full) fails the item as a local error.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.errors import (
    CanceledError,
    OutputExistsError,
    PermanentModelError,
    RequeueError,
    StorageError,
    StorageUnavailableError,
    TransientError,
    WriteRetryError,
)
from shared.models import ModelSpec
from shared.request import ImageRequest
from shared.storage import Store, Written, sniff, write_once
from shared.storage.location import output_names
from shared.storage.sniff import with_extension
from workers.attempts import AttemptRef
from workers.claims import Claim
from workers.download import output_urls
from workers.replicate_calls import PredictionView, failure_error
from workers.spool import Spool
from workers.stage import AttemptStage

log = logging.getLogger("workers.outputs")


class OutputSaver(AttemptStage):
    spool = Spool()

    def conclude(
        self,
        ref: AttemptRef,
        request: ImageRequest,
        spec: ModelSpec,
        view: PredictionView,
        claim: Claim,
    ) -> list[dict[str, Any]]:
        """The files written for a succeeded prediction (see `save`); the error its end means
        otherwise. SupersededError when `claim` (this run's) is lost: whatever the end, it is
        the claim holder's to record."""
        claim.ensure_ours("concluding")
        if view.status == "succeeded":
            return self.save(ref, request, spec, view, claim)
        if view.status == "failed":
            raise failure_error(view)
        if view.status == "canceled":
            raise CanceledError(
                "batch canceled"
                if self.ctx.ledger.is_canceled(ref.batch_id)
                else f"prediction {view.id} was canceled at Replicate"
            )
        # aborted: the deadline passed before it started; nothing ran, try again
        raise TransientError(
            f"prediction {view.id} {view.status}: {view.error or 'never started'}", prediction_id=view.id
        )

    def save(
        self,
        ref: AttemptRef,
        request: ImageRequest,
        spec: ModelSpec,
        view: PredictionView,
        claim: Claim,
    ) -> list[dict[str, Any]]:
        """One record per file written: `url` (store URL or local path), `key` (under the output
        root), `format`, `content_type`, `bytes`, `sha256`. Each write is preceded by a check
        that `claim` is still this run's (a download may take long enough to lose it)."""
        urls = output_urls(view.output)
        if not urls:
            raise PermanentModelError(
                f"prediction {view.id} succeeded without any output", prediction_id=view.id
            )
        names = self.reserved_names(ref, request, spec)
        if len(urls) > len(names):
            log.warning(
                "prediction %s returned %s outputs where %s were reserved at submit; the extra %s are "
                "not kept (their names could be another item's)",
                view.id,
                len(urls),
                len(names),
                len(urls) - len(names),
            )
        store = self.ctx.stores.for_batch(ref.batch_id)
        overwrite = bool(self.ctx.ledger.options(ref.batch_id).get("overwrite"))
        files = []
        for position, (url, name) in enumerate(zip(urls, names)):
            data = self._bytes(view, position, url)
            claim.ensure_ours(f"writing {name}")
            files.append(self._write(ref, store, name, data, overwrite))
            self.spool.drop(view.id, position)
        if len(urls) > len(names):
            files[-1]["note"] = (
                f"the model returned {len(urls)} outputs; {len(names)} reserved at submit were kept"
            )
        return files

    def reserved_names(self, ref: AttemptRef, request: ImageRequest, spec: ModelSpec) -> list[str]:
        """The names checked and reserved for this item at submit: as many as its first model was
        asked for (recomputed the way submit did)."""
        output = request.output or f"{ref.batch_id}/{ref.index:04d}.{spec.default_format or 'png'}"
        try:
            count = (
                self.ctx.models.registry_for(request.models).get(request.model).output_count(request.params)
            )
        except Exception:  # noqa: BLE001 - a registry without the item's first model: one name
            count = 1
        return output_names(output, count)

    def _bytes(self, view: PredictionView, position: int, url: str) -> bytes:
        kept = self.spool.get(view.id, position)
        if kept is not None:
            return kept
        try:
            data = self.ctx.downloader.fetch(url)
        except TransientError as exc:
            if exc.status in (404, 410):
                raise TransientError(
                    f"output of {view.id} is gone ({exc}); a new prediction is needed", prediction_id=view.id
                ) from None
            raise RequeueError(
                f"{exc}; the finished prediction will be fetched again", countdown=self._backoff(1)
            ) from None
        self.spool.keep(view.id, position, data)
        return data

    def _write_once(
        self, store: Store, key: str, data: bytes, overwrite: bool, written_key: str, content_type: str | None
    ) -> Written:
        """write_once, replacing other bytes at `key` only with `overwrite` or when this item wrote
        them (an earlier run's output). Asked only when other bytes are there: one HEXISTS per
        output was a round trip per image (issue 16.4), for a case that is rare."""
        try:
            return write_once(store, key, data, overwrite=overwrite, content_type=content_type)
        except OutputExistsError:
            if overwrite or not self.ctx.redis.hexists(written_key, key):
                raise
        return write_once(store, key, data, overwrite=True, content_type=content_type)

    def _write(
        self, ref: AttemptRef, store: Store, name: str, data: bytes, overwrite: bool
    ) -> dict[str, Any]:
        media = sniff(data[:32])
        key = (
            with_extension(name, media.ext)
            if media is not None
            and not name.lower().endswith(
                ("." + media.ext, ".jpeg" if media.ext == "jpg" else "." + media.ext)
            )
            else name
        )
        if media is not None and key != name:
            log.info("output is %s, not what %r says: written as %r", media.mime, name, key)
        written_key = self.ctx.keys.written(ref.batch_id, ref.index)
        try:
            result = self._write_once(store, key, data, overwrite, written_key, media.mime if media else None)
        except StorageUnavailableError as exc:
            raise WriteRetryError(
                f"{exc}; the outputs will be written again (no new prediction)", countdown=self._backoff(2)
            ) from None
        except StorageError:
            raise  # a LocalError: the item fails, never a paid fallback
        pipe = self.ctx.redis.pipeline(transaction=False)  # one round trip
        pipe.hset(written_key, key, result.sha256)
        pipe.expire(written_key, 60 * 24 * 3600)
        pipe.execute()
        return {
            "url": store.url(key),
            "key": key,
            "format": media.ext if media else key.rpartition(".")[2],
            "content_type": media.mime if media else None,
            "bytes": result.size,
            "sha256": result.sha256,
        }
