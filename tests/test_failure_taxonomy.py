"""A `failed` prediction: Replicate's own retryable failures try the same model again; everything
else (the model's answer to this input, sensitive content) moves along the fallback route."""

from __future__ import annotations

import pytest

from shared.errors import PermanentModelError, TransientError
from workers.replicate_calls import PredictionView, failure_error

pytestmark = pytest.mark.unit


def failed(error: str | None) -> PredictionView:
    return PredictionView(id="p1", status="failed", error=error)


@pytest.mark.parametrize(
    "error",
    [
        "Prediction interrupted; please retry (code: PA)",
        "Prediction was interrupted. Please retry.",
        "Something went wrong, please retry",
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.39 GiB total capacity)",
        "torch.OutOfMemoryError: CUDA error",
        "Worker OOM: the runner was killed",
        "Prediction timed out while starting",
        "Model setup timed out",
        "The model timed out waiting to boot",
        "Timed out in queue before the prediction could start",
    ],
)
def test_replicates_retryable_failures_are_transient(error):
    exc = failure_error(failed(error))
    assert isinstance(exc, TransientError) and exc.prediction_id == "p1"
    assert error[:40] in str(exc)


@pytest.mark.parametrize(
    "error",
    [
        "Prediction failed: simulated model error (replicate-sim fail rate)",
        "ValueError: image must be RGB",
        "Prediction timed out",  # ran too long: this input on this model, not a start-up failure
        "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
        "NSFW content detected; the prediction was interrupted",  # sensitive content wins
        None,
    ],
)
def test_everything_else_is_permanent_for_this_model(error):
    exc = failure_error(failed(error))
    assert isinstance(exc, PermanentModelError) and exc.prediction_id == "p1"
    if error and ("sensitive" in error or "NSFW" in error):
        assert str(exc).startswith("sensitive content")
