"""Talking to Replicate through the official client, with errors turned into the fleet's taxonomy.

One `ReplicateCalls` per process (the client pools connections and is used from many threads).
Rate tokens are NOT taken here: a run takes a creation token right before `create`
(workers.creator) and a read token before every other call, so all hosts share one budget.

Why some calls go around the client's models:
- replicate 1.0.7's pydantic Prediction rejects the `aborted` status; `get` turns that validation
  error into a view with status "aborted" (an ambiguous-free transient failure);
- the reconciliation listing reads raw JSON pages (`client._request`), because one `aborted`
  prediction on a page would make the typed `predictions.list` fail as a whole.
Predictions are created through the endpoint the model reference names (shared.models.reference): `owner/name` by model, `owner/name:VERSION`
through POST /v1/predictions with the version, `deployments/owner/name` through the deployment.
A sync create (`wait=W`, sent as `Prefer: wait=W`) is held by Replicate until the prediction ends
or W s pass; its id is unknown to the worker until the answer comes (workers.reconcile covers a
create cut during that wait). `read_schema` reads a reference's published OpenAPI schema (the model's latest version, the
pinned version, or the version a deployment currently runs).

Every request has bounded connect/write/read/pool timeouts, creations included: replicate 1.0.7
sends a create without `wait` with `timeout=None` (no timeout at all, whatever the client was
given), so the client's transport (`BoundedTimeoutTransport`) fills in the configured value for
any phase a request leaves unbounded. That is what makes `post_in_flight_limit` true: a stalled
create ends as an ambiguous timeout instead of holding its thread (and its claim) for ever. A
sync create's read timeout is W + FLEET_HTTP_TIMEOUT: replicate 1.0.7 asks only W + 0.5 s, and an
answer that left Replicate at W would time out on the way and turn every prediction that outlasts
its wait into an ambiguous create.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import replicate
from replicate.exceptions import ReplicateError
from replicate.prediction import Prediction

from shared.errors import LocalError, PermanentModelError, ReplicateCallError, TransientError, UnsentPostError
from shared.models.openapi import ModelSchema, SchemaError
from shared.models.reference import ModelRef, parse_ref
from shared.settings import Settings

try:  # the client builds its models with pydantic's v1 API when pydantic 2 is installed
    from pydantic.v1 import ValidationError as _V1ValidationError
except ImportError:  # pragma: no cover
    # pydantic 1: the same class, under its own name
    from pydantic import ValidationError as _V1ValidationError  # type: ignore[assignment]
from pydantic import ValidationError as _V2ValidationError

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
SENSITIVE_WORDS = ("nsfw", "sensitive", "flagged", "safety", "content policy", "moderation")
# A `failed` prediction whose error says the failure was Replicate's, not the model's answer to
# this input: the same model again (a new attempt) is worth it. Anything else is permanent.
RETRYABLE_FAILURES = (
    re.compile(r"\binterrupted\b"),  # "Prediction interrupted; please retry (code: PA)"
    re.compile(r"\bplease retry\b"),
    re.compile(r"out\s*of\s*memory|\boom\b|outofmemoryerror"),  # CUDA OOM, OOM-killed runner
    # timed out while starting: setup, boot, cold start, queueing (not a prediction that ran too long)
    re.compile(
        r"(?:start|setup|boot|queue|provision|schedul)\w*\W+(?:\w+\W+){0,6}?timed?[\s-]?out"
        r"|timed?[\s-]?out\W+(?:\w+\W+){0,6}?(?:start|setup|boot|queue|provision|schedul)"
    ),
)
DEFAULT_RETRY_AFTER = 2.0
_RETRY_AFTER = re.compile(r"~?\s*(\d+(?:\.\d+)?)\s*s")


@dataclass(frozen=True)
class PredictionView:
    id: str
    status: str
    model: str | None = None
    input: dict[str, Any] | None = None
    output: Any = None
    error: str | None = None
    created_at: str | None = None
    version: str | None = None  # the version id, or "hidden" (official models)
    deployment: str | None = None  # owner/name of the deployment that created it, if one did

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def created_ts(self) -> float | None:
        return parse_time(self.created_at)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictionView:
        return cls(
            id=str(data.get("id")),
            status=str(data.get("status")),
            model=data.get("model"),
            input=data.get("input"),
            output=data.get("output"),
            error=_error_text(data.get("error")),
            created_at=data.get("created_at"),
            version=data.get("version"),
            deployment=data.get("deployment"),
        )

    @classmethod
    def from_client(cls, prediction: Prediction) -> PredictionView:
        return cls(
            id=prediction.id,
            status=prediction.status,
            model=getattr(prediction, "model", None),
            input=getattr(prediction, "input", None),
            output=prediction.output,
            error=_error_text(prediction.error),
            created_at=getattr(prediction, "created_at", None),
            version=getattr(prediction, "version", None),
        )


class ReplicateCalls:
    def __init__(self, settings: Settings):
        if not settings.replicate_api_token:
            raise LocalError("REPLICATE_API_TOKEN is not set")
        timeout = client_timeout(settings)
        self.client = replicate.Client(
            api_token=settings.replicate_api_token,
            base_url=settings.replicate_base_url or None,
            timeout=timeout,
            # The client wraps it in its RetryTransport (GET retries); creates are never retried.
            transport=BoundedTimeoutTransport(timeout),
        )

    def warm_up(self) -> None:
        """Pay the one-time costs (httpx client, lazily imported client modules, pydantic model
        set-up) at worker start, not between a creation token and its POST: the limiter's window
        margin has to cover the delay from token to arrival at Replicate."""
        import replicate.deployment  # noqa: F401  - imported lazily inside create()
        import replicate.model  # noqa: F401

        _ = self.client._client
        PredictionView.from_client(
            replicate.prediction.Prediction(
                id="warmup",
                model="a/b",
                version="v",
                status="starting",
                input={},
                output=None,
                logs=None,
                error=None,
                metrics=None,
                created_at=None,
                started_at=None,
                completed_at=None,
                urls=None,
            )
        )

    # --- predictions ----------------------------------------------------------------------------
    def create(
        self,
        model: str,
        input: dict[str, Any],
        *,
        webhook: str | None = None,
        wait: int | None = None,
        send_by: float | None = None,
    ) -> PredictionView:
        """POST through the endpoint `model` (a reference) names; with `webhook`, Replicate calls
        it when the prediction ends; with `wait` (1-60 s), the answer is held until the prediction
        ends or `wait` s pass (`Prefer: wait`: the view is then terminal, or still running).
        Errors: see `classify` (`ambiguous` tells whether the prediction may exist after all). An
        error raised before the request reached the transport (the body cannot be encoded, the
        request cannot be built) sent nothing: LocalError, never ambiguous. `send_by`
        (time.monotonic()): the latest moment the POST may leave; checked in the transport, right
        before the network, UnsentPostError after it."""
        extra: dict[str, Any] = (
            {"webhook": webhook, "webhook_events_filter": ["completed"]} if webhook else {}
        )
        if wait:
            extra["wait"] = int(wait)  # an int: the client sends `Prefer: wait=N` (True: bare "wait")
        ref = parse_ref(model)
        fence = _SendFence(send_by)
        _send_fences.current = fence
        try:
            if ref.kind == "deployment":
                prediction = self.client.deployments.predictions.create(
                    deployment=ref.model, input=input, **extra
                )
            elif ref.kind == "version" and ref.version:  # (kind "version" is a ref with a version)
                prediction = self.client.predictions.create(version=ref.version, input=input, **extra)
            else:
                prediction = self.client.models.predictions.create(model=ref.model, input=input, **extra)
        except (_V1ValidationError, _V2ValidationError) as exc:
            # The POST went through and the prediction may well exist: reconcile, never create again.
            raise TransientError(
                f"create answered an unreadable prediction (bad status: {_invalid_status(exc)})",
                ambiguous=True,
            ) from None
        except UnsentPostError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if not fence.reached:
                # Nothing left this process: trying again would fail the same way.
                raise LocalError(
                    f"the create request could not be built: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None
            raise classify(exc, during="create") from None
        finally:
            _send_fences.current = None
        return PredictionView.from_client(prediction)

    def get(self, prediction_id: str) -> PredictionView:
        try:
            return PredictionView.from_client(self.client.predictions.get(prediction_id))
        except (_V1ValidationError, _V2ValidationError) as exc:
            if _invalid_status(exc):
                return PredictionView(
                    id=prediction_id, status="aborted", error="prediction aborted before it started"
                )
            raise TransientError(f"unreadable prediction {prediction_id}") from None
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, during="get") from None

    def cancel(self, prediction_id: str) -> str | None:
        """The prediction's status after the cancel: `canceled`, or the end it had reached
        already (succeeded, failed); None when the answer does not say."""
        try:
            return getattr(self.client.predictions.cancel(prediction_id), "status", None)
        except (_V1ValidationError, _V2ValidationError):
            return "canceled"  # canceled (or aborted): an answer the client's model cannot read
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, during="cancel") from None

    def list_page(self, cursor: str | None = None) -> tuple[list[PredictionView], str | None]:
        """One page of the account's predictions, newest first, and the next page's cursor."""
        try:
            response = self.client._request("GET", cursor or "/v1/predictions")
            data = response.json()
        except ValueError as exc:
            raise TransientError(f"unreadable prediction list: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, during="list") from None
        results = [PredictionView.from_json(r) for r in data.get("results") or [] if isinstance(r, dict)]
        return results, data.get("next")

    # --- schemas --------------------------------------------------------------------------------
    def read_schema(self, ref: ModelRef, before_read: Callable[[], Any] = lambda: None) -> ModelSchema:
        """The published schema of the version `ref` runs: the model's latest, the pinned one, or
        the deployment's current release (two reads). `before_read` is called before each GET
        (the caller takes a read token there). SchemaError when Replicate has no such model,
        version or deployment, or it publishes no schema."""
        from replicate.version import Versions

        try:
            if ref.kind == "model":
                before_read()
                found = self.client.models.get(ref.model)
                version = found.latest_version
                if version is None:
                    raise SchemaError(f"{ref}: the model has no published version")
                return ModelSchema.from_openapi(str(ref), ref.model, version.id, version.openapi_schema)
            model, version_id = ref.model, ref.version or ""  # kind "version": set
            if ref.kind == "deployment":
                before_read()
                release = self.client.deployments.get(ref.model).current_release
                if release is None:
                    raise SchemaError(f"{ref}: the deployment has no release")
                model, version_id = release.model, release.version
            before_read()
            version = Versions(self.client, model).get(version_id)
            return ModelSchema.from_openapi(str(ref), model, version.id, version.openapi_schema)
        except SchemaError:
            raise
        except (_V1ValidationError, _V2ValidationError) as exc:
            raise SchemaError(f"{ref}: unreadable answer from Replicate ({str(exc)[:200]})") from None
        except Exception as exc:  # noqa: BLE001 - classified below
            err = classify(exc, during=f"reading the schema of {ref}")
            if isinstance(err, PermanentModelError):  # 404: no such model, version or deployment
                raise SchemaError(f"{ref}: not found on Replicate ({err})") from None
            raise err from None

    # --- files ----------------------------------------------------------------------------------
    def upload(self, path: Path) -> str:
        """Upload a local reference image; returns the URL to put in the input."""
        try:
            with open(path, "rb") as fh:
                created = self.client.files.create(fh, filename=path.name)
        except OSError as exc:
            raise LocalError(f"cannot read reference image {path}: {exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, during="upload") from None
        url = (created.urls or {}).get("get")
        if not url:
            raise TransientError("file upload answered without a URL")
        return url

    def close(self) -> None:
        try:
            self.client._client.close()
        except Exception:  # noqa: BLE001
            pass


class _SendFence:
    """One creation POST on its way: whether its request reached the transport (it was built and
    encoded), and the latest moment (time.monotonic()) it may leave (None: any)."""

    def __init__(self, send_by: float | None):
        self.send_by = send_by
        self.reached = False


_send_fences = threading.local()  # .current: the _SendFence of this thread's create, if any


class BoundedTimeoutTransport(httpx.BaseTransport):
    """An httpx transport that gives every request a timeout for each phase it left unbounded.

    httpx puts a request's timeouts in `request.extensions["timeout"]`, and `timeout=None` on a
    call means "no timeout": replicate 1.0.7 does exactly that for a create without `wait`. Here
    any missing or None phase (connect, write, read, pool) takes the configured value; phases a
    request did bound are left alone. A sync create (`Prefer: wait=W`) gets the configured
    phases with W added to the read, whatever the client asked."""

    def __init__(self, timeout: httpx.Timeout, wrapped: httpx.BaseTransport | None = None):
        phases = timeout.as_dict()
        if any(v is None for v in phases.values()):
            raise ValueError(f"every phase needs a bound, got {phases}")
        self._timeouts: dict[str, float] = {phase: v for phase, v in phases.items() if v is not None}
        self._wrapped = wrapped if wrapped is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fence: _SendFence | None = getattr(_send_fences, "current", None)
        if fence is not None and request.method == "POST":
            fence.reached = True
            late = time.monotonic() - fence.send_by if fence.send_by is not None else 0.0
            if late > 0:
                raise UnsentPostError(
                    f"creation POST held back: {late:.1f} s past its send-by time (this process stalled "
                    "after the last check); reconciling before any creation"
                )
        wait = prefer_wait(request.headers.get("Prefer"))
        if wait is not None:
            # A sync create: Replicate answers after up to `wait` s; the configured phases, with
            # the wait added to the read (the client's own wait + 0.5 s is too tight).
            request.extensions["timeout"] = {**self._timeouts, "read": self._timeouts["read"] + wait}
            return self._wrapped.handle_request(request)
        asked = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: asked.get(phase) if asked.get(phase) is not None else default
            for phase, default in self._timeouts.items()
        }
        return self._wrapped.handle_request(request)

    def close(self) -> None:
        self._wrapped.close()


def client_timeout(settings: Settings) -> httpx.Timeout:
    """Per phase: connect, write, read (waiting for a pooled connection sends nothing)."""
    return httpx.Timeout(settings.http_timeout, connect=min(5.0, settings.http_timeout), pool=30.0)


def post_in_flight_limit(settings: Settings, wait: float = 0.0) -> float:
    """How long after it started a creation POST can still reach Replicate: connect, write the
    body, wait for the answer (a sync create's `wait` longer), plus a margin. Until then, "not in
    the prediction list" does not mean "not created". True because every create carries these
    timeouts (BoundedTimeoutTransport). It is also the settling window after an ambiguous create:
    a gateway's 502/504 can come while Replicate still creates the prediction, so "none was
    created" waits this long after the POST."""
    t = client_timeout(settings)
    # client_timeout sets each phase
    return sum(phase or 0.0 for phase in (t.connect, t.write, t.read)) + float(wait) + 5.0


_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:\s*=\s*(\d+))?(?:$|[,;\s])")


def prefer_wait(header: str | None) -> int | None:
    """Seconds a `Prefer` header asks Replicate to hold the answer (bare `wait`: 60); None: none."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header.strip())
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 60


def classify(exc: BaseException, *, during: str) -> ReplicateCallError | LocalError:
    """Map a client exception to TransientError / PermanentModelError / LocalError. The message
    never includes request headers (the token). `is_ambiguous(result)` says whether a POST
    may have created the prediction anyway (5xx, read timeouts, a dropped connection)."""
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        detail = (exc.detail or exc.title or "").strip().replace("\n", " ")[:300]
        text = f"HTTP {status} on {during}" + (f": {detail}" if detail else "")
        if status == 429:
            return TransientError(text, status=429, retry_after=retry_after_of(detail))
        if status >= 500 or status in (408, 409):
            return TransientError(text, status=status, ambiguous=during == "create")
        if status in (401, 403):
            return LocalError(f"Replicate refused the API token ({text}); check REPLICATE_API_TOKEN")
        return PermanentModelError(text, status=status)  # 400, 404 (model), 422 (input rejected)
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        # nothing was sent
        return TransientError(f"cannot reach Replicate on {during}: {type(exc).__name__}")
    if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
        return TransientError(f"{type(exc).__name__} on {during}", ambiguous=during == "create")
    if isinstance(exc, (TransientError, PermanentModelError, LocalError)):
        return exc
    return TransientError(
        f"unexpected {type(exc).__name__} on {during}: {str(exc)[:200]}", ambiguous=during == "create"
    )


def is_ambiguous(exc: BaseException) -> bool:
    return isinstance(exc, ReplicateCallError) and exc.ambiguous


def failure_error(prediction: PredictionView) -> TransientError | PermanentModelError:
    """The error for a `failed` prediction. Sensitive content and model errors are permanent for
    this model (next model of the route); Replicate's own retryable failures (interrupted, "please
    retry", out of memory, timed out while starting) are transient: the same model again."""
    text = prediction.error or "prediction failed without an error message"
    lowered = text.lower()
    if any(w in lowered for w in SENSITIVE_WORDS):
        return PermanentModelError(f"sensitive content: {text[:500]}", prediction_id=prediction.id)
    if any(p.search(lowered) for p in RETRYABLE_FAILURES):
        return TransientError(f"prediction failed, retryable: {text[:500]}", prediction_id=prediction.id)
    return PermanentModelError(f"model error: {text[:500]}", prediction_id=prediction.id)


def retry_after_of(detail: str | None) -> float:
    """Seconds from a 429 body ("... resets in ~5s."); the client drops headers on POST errors."""
    if detail:
        match = _RETRY_AFTER.search(detail)
        if match:
            return max(float(match.group(1)), 0.5)
    return DEFAULT_RETRY_AFTER


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def created_for(model: str, view: PredictionView) -> bool:
    """Whether a listed prediction was created for the reference `model`: by model (that model,
    any version, no deployment: the listing does not say which endpoint created it), by that
    pinned version, or by that deployment (its release may have changed since, so only the
    deployment's name counts)."""
    ref = parse_ref(model)
    if ref.kind == "deployment":
        return view.deployment == ref.model
    if view.deployment is not None or view.model != ref.model:
        return False
    return ref.kind == "model" or view.version == ref.version


def same_input(sent: dict[str, Any], seen: dict[str, Any] | None) -> bool:
    """Whether a listed prediction's input is the one we sent (every key we sent, same value;
    the API may echo extra defaults)."""
    if not isinstance(seen, dict):
        return False
    return all(_canon(seen.get(k)) == _canon(v) for k, v in sent.items())


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _invalid_status(exc: _V1ValidationError | _V2ValidationError) -> bool:
    try:
        return any("status" in tuple(e.get("loc", ())) for e in exc.errors())
    except Exception:  # noqa: BLE001
        return False


def _error_text(error: Any) -> str | None:
    if error is None or error == "":
        return None
    return error if isinstance(error, str) else json.dumps(error)[:1000]
