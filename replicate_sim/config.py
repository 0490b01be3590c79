"""Every knob of the stand-in, changeable at start (CLI) and at run time (POST /_sim/config)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimConfig:
    # account limits, like Replicate's: an exact sliding window per kind of call
    create_limit: int = 600
    read_limit: int = 3000
    window: float = 60.0
    max_in_flight: int | None = None  # None/0: no cap (Replicate documents none)

    # time and size
    latency_scale: float = 1.0  # multiplies each model's latency distribution; 0 = instant
    latency_overrides: dict[str, float] = field(default_factory=dict)  # model -> mean seconds
    # Every model's lognormal spread instead of the catalog's (0: each prediction takes exactly its
    # mean, so a batch's ideal schedule is the bare bound N x L / slots); None: the catalog's.
    latency_sigma: float | None = None
    starting_fraction: float = 0.15  # share of a prediction's time spent in `starting`
    image_scale: float = 1.0  # output area = ~1 megapixel * image_scale
    data_uri_outputs: bool = False  # outputs as data: URIs instead of http URLs
    output_ttl: float | None = 3600.0  # outputs removed (data_removed) this long after completion
    max_wait: int = 60  # longest `Prefer: wait`
    # Seconds a held create (`Prefer: wait=N`) whose prediction outlasted N is answered after the
    # N s: Replicate's own time to answer, which a client's read timeout of N + 0.5 s may not cover.
    wait_overrun: float = 0.0

    # failures on demand
    fail_rate: float = 0.0  # share of predictions that end `failed`
    model_fail_rates: dict[str, float] = field(default_factory=dict)  # model -> share failed
    always_fail_models: list[str] = field(default_factory=list)
    nsfw_trigger: str = "nsfw-trigger"  # prompt containing it fails like a sensitive-content block
    abort_rate: float = 0.0  # share of predictions that end `aborted` (never started)
    abort_next: int = 0  # the next K predictions end `aborted`
    fail_next: int = 0  # the next K predictions end `failed`
    # error text of the injected failures (fail_next, fail_rate, always_fail); "" = a model error.
    # E.g. "Prediction interrupted; please retry (code: PA)" for one of Replicate's retryable ones.
    fail_error: str = ""
    error_burst: int = 0  # the next K API calls answer 5xx (cycling error_burst_statuses)
    error_burst_statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    error_rate: float = 0.0  # share of API calls answering 5xx at random
    storm_next: int = 0  # the next K creates answer 429 (someone else used the account)
    storm_retry_after: int = 2
    # Every create answers 429 for the next S seconds from when this is set, with retry_after =
    # the seconds left (rounded up): an account throttled by another program, as Replicate does it.
    storm_for: float = 0.0
    ghost_create_next: int = 0  # the next K creates DO create the prediction but answer 502
    # The next K creates are held `stall_create_seconds` before anything happens (a gateway that
    # neither answers nor lets go). Then, with `stall_create_creates`, they are handled as usual
    # (created, and answered if the client still waits); without, answered 504, nothing created.
    stall_create_next: int = 0
    stall_create_seconds: float = 30.0
    stall_create_creates: bool = False
    # The next K creates answer 504 at once, and their prediction is created `late_create_after`
    # seconds later all the same (the gateway gave up, Replicate did not): billed, id never told.
    late_create_next: int = 0
    late_create_after: float = 5.0
    # The next K creates DO create (and bill) the prediction, then, `drop_create_after` seconds
    # later (or at the end of the `Prefer: wait` asked, if sooner), reset the connection unanswered:
    # a connection dropped while a sync create was held open. The client never learns the id.
    drop_create_next: int = 0
    drop_create_after: float = 1.0

    # behaviour
    seed: int | None = None
    strict_inputs: bool = False  # 422 on input keys the model does not take
    token: str | None = None  # if set, the only Bearer token accepted
    public_url: str | None = None  # base of output/file URLs; default: the Host the client used
    webhook_secret: str | None = None  # "whsec_<base64>"; random when not set
    record_events: bool = True

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `changes`, checking names and types first so a bad request changes nothing."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        checked = {name: _coerce(name, value, getattr(self, name)) for name, value in changes.items()}
        if checked.get("window", self.window) <= 0:
            raise ValueError("window must be > 0")
        for name, value in checked.items():
            setattr(self, name, value)

    def to_dict(self, *, hide_secrets: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if hide_secrets:
            data["token"] = "***" if self.token else None
            data["webhook_secret"] = "***" if self.webhook_secret else None
        return data


_OPTIONAL_NUMBERS = {"max_in_flight": int, "output_ttl": float, "seed": int, "latency_sigma": float}
_OPTIONAL_STRINGS = {"token", "public_url", "webhook_secret"}


def _coerce(name: str, value: Any, current: Any) -> Any:
    if name in _OPTIONAL_NUMBERS:
        if value is None:
            return None
        return _OPTIONAL_NUMBERS[name](value)
    if name in _OPTIONAL_STRINGS:
        return None if value is None else str(value)
    if isinstance(current, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, str):
        return str(value)
    if isinstance(current, list):
        if not isinstance(value, list):
            raise ValueError(f"{name} must be a list")
        return list(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be an object")
        return {str(k): float(v) for k, v in value.items()}
    return value
