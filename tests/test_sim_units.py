"""Pure logic of the stand-in: the exact window, input validation, signatures, media."""

from __future__ import annotations

import hashlib
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from replicate_sim import media
from replicate_sim.catalog import load_catalog, openapi_schema, validate_input
from replicate_sim.config import SimConfig
from replicate_sim.engine import Engine
from replicate_sim.webhooks import sign
from replicate_sim.window import TimeSeries

pytestmark = pytest.mark.unit

CATALOG = load_catalog()


# --- sliding window -------------------------------------------------------------------------------


def test_window_boundary_is_half_open():
    series = TimeSeries()
    for t in (0, 10, 20):
        series.append(t, 100)
    assert series.retry_after(99, 3, 100) == 1  # 0 leaves the window at t=100
    assert series.retry_after(100, 3, 100) is None
    assert series.count_in_window(109, 100) == 2 and series.count_in_window(110, 100) == 1
    assert series.max_in_any_window(100) == 3 and series.max_in_any_window(15) == 2


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=120),
    limit=st.integers(min_value=1, max_value=6),
    window=st.integers(min_value=1, max_value=100),
)
def test_window_admits_exactly_what_fits(gaps, limit, window):
    series, now, admitted = TimeSeries(), 0, []
    for gap in gaps:
        now += gap
        in_window = sum(1 for t in admitted if now - t < window)
        wait = series.retry_after(now, limit, window)
        assert (wait is None) == (in_window < limit)  # refuse only when the window is really full
        if wait is None:
            series.append(now, window)
            admitted.append(now)
        else:
            # the wait is the shortest one after which one more call fits
            assert wait > 0 and sum(1 for t in admitted if (now + wait) - t < window) <= limit - 1
            assert sum(1 for t in admitted if (now + wait - 1) - t < window) >= limit
    brute = max(sum(1 for t in admitted if 0 <= r - t < window) for r in admitted)
    assert series.max_in_any_window(window) == brute <= limit


# --- validation -----------------------------------------------------------------------------------


def fields(model: str, values, **kw) -> list[str]:
    return [f"{p.type}:{p.field}" for p in validate_input(CATALOG.get(model), values, **kw)]


def test_every_model_of_the_brief_is_in_the_catalog():
    assert set(CATALOG.names()) == {
        "black-forest-labs/flux-dev",
        "black-forest-labs/flux-kontext-max",
        "black-forest-labs/flux-1.1-pro-ultra",
        "qwen/qwen-image",
        "google/imagen-4-ultra",
        "google/nano-banana",
        "espressotechie/qwen-imgedit-4bit",
        "google/veo-3-fast",
        "kwaivgi/kling-v2.1-master",
    }
    for name in CATALOG.names():
        model = CATALOG.get(name)
        assert "prompt" in model.required
        assert CATALOG.by_version(model.version_id) is model
        assert openapi_schema(model)["components"]["schemas"]["Input"]["properties"]


def test_validation_is_strict_about_types_like_json_schema():
    assert fields("black-forest-labs/flux-dev", {"prompt": "x", "num_outputs": 2, "guidance": 3}) == []
    assert fields("black-forest-labs/flux-dev", {"prompt": "x", "num_outputs": 2.0}) == [
        "invalid_type:input.num_outputs"
    ]
    assert fields("black-forest-labs/flux-dev", {"prompt": "x", "num_outputs": True}) == [
        "invalid_type:input.num_outputs"
    ]
    assert fields("black-forest-labs/flux-dev", {"prompt": "x", "num_outputs": "2"}) == [
        "invalid_type:input.num_outputs"
    ]
    assert fields("black-forest-labs/flux-dev", {"prompt": "x", "guidance": 10.5}) == [
        "number_lte:input.guidance"
    ]
    assert fields("black-forest-labs/flux-dev", {"prompt": "x", "megapixels": "0.25"}) == []
    assert fields("black-forest-labs/flux-1.1-pro-ultra", {"prompt": "x", "safety_tolerance": 0}) == [
        "number_gte:input.safety_tolerance"
    ]
    assert fields("google/veo-3-fast", {"prompt": "x", "duration": 8, "resolution": "4k"}) == [
        "enum:input.resolution"
    ]
    assert fields("kwaivgi/kling-v2.1-master", {"prompt": "x", "duration": 10}) == []
    assert fields("google/nano-banana", {"prompt": "x", "image_input": ["https://a/1.png"] * 4}) == [
        "array_max_items:input.image_input"
    ]
    assert fields("google/nano-banana", {"prompt": "x", "image_input": ["not a url"]}) == [
        "format:input.image_input.0"
    ]
    assert fields("google/imagen-4-ultra", {"prompt": "x", "seed": None}) == []  # unknown: ignored
    assert fields("google/imagen-4-ultra", {"prompt": "x", "seed": 1}, strict=True) == [
        "additional_property_not_allowed:input.seed"
    ]
    assert fields("google/imagen-4-ultra", {"prompt": None}) == ["required:input"]
    assert fields("google/imagen-4-ultra", ["prompt"]) == ["invalid_type:input"]


def test_version_refs_resolve():
    flux = CATALOG.get("black-forest-labs/flux-dev")
    assert CATALOG.resolve_version_ref(flux.version_id) is flux
    assert CATALOG.resolve_version_ref(f"{flux.name}:{flux.version_id}") is flux
    assert CATALOG.resolve_version_ref(flux.name) is flux
    assert CATALOG.resolve_version_ref(f"{flux.name}:{'0' * 64}") is None
    assert CATALOG.resolve_version_ref("nobody/nothing") is None


# --- webhooks, media, config -----------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector():
    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            '{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    "ratio,expected", [("1:1", 1.0), ("16:9", 16 / 9), ("9:21", 9 / 21), ("match_input_image", 1.0)]
)
def test_image_size_follows_aspect_ratio_and_area(ratio, expected):
    width, height = media.image_size(ratio, 1.0, 1.0)
    assert abs(width / height - expected) < 0.01 and abs(width * height - 1_000_000) < 20_000
    small = media.image_size(ratio, 0.25, 0.04)
    assert abs(small[0] * small[1] - 10_000) < 1_500


def test_images_are_deterministic_unique_and_in_the_asked_format():
    a = media.render_image("abc", 0, "webp", (64, 48))
    assert a == media.render_image("abc", 0, "webp", (64, 48))
    assert (
        a != media.render_image("abc", 1, "webp", (64, 48)) != media.render_image("abd", 0, "webp", (64, 48))
    )
    for fmt, pil in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")):
        image = Image.open(io.BytesIO(media.render_image("abc", 0, fmt, (64, 48))))
        assert image.format == pil and image.size == (64, 48)


def test_video_is_a_well_formed_mp4_unique_per_prediction():
    a, b = media.render_video("pred-a", "16:9"), media.render_video("pred-b", "16:9")
    assert a != b and hashlib.sha256(a).digest() != hashlib.sha256(b).digest()
    offset, boxes = 0, []
    while offset < len(a):  # top-level boxes must tile the file exactly
        size, kind = struct.unpack(">I4s", a[offset : offset + 8])
        assert size >= 8
        boxes.append(kind)
        offset += size
    assert offset == len(a) and boxes[0] == b"ftyp" and b"moov" in boxes and b"mdat" in boxes
    assert boxes[-1] == b"free"
    assert media.render_video("x", "9:16") != media.render_video("x", "16:9")


def test_config_update_checks_before_changing_anything():
    config = SimConfig()
    with pytest.raises(ValueError):
        config.update({"create_limit": 5, "bogus": 1})
    with pytest.raises(ValueError):
        config.update({"create_limit": 5, "window": -1})
    assert config.create_limit == 600
    config.update({"model_fail_rates": {"a/b": "0.5"}, "max_in_flight": None, "data_uri_outputs": "true"})
    assert config.model_fail_rates == {"a/b": 0.5} and config.data_uri_outputs is True


# --- latency ---------------------------------------------------------------------------------------


def test_latency_sigma_zero_makes_every_prediction_take_exactly_its_mean():
    """The modes bench's `--sigma 0`: with the catalog's spread the draws differ; with none, each
    prediction takes the model's mean (so a batch's ideal schedule is the bare bound)."""
    model = CATALOG.get("google/imagen-4-ultra")
    assert model is not None
    spread = Engine(SimConfig(seed=1, latency_overrides={model.name: 2.0}), CATALOG)
    exact = Engine(SimConfig(seed=1, latency_overrides={model.name: 2.0}, latency_sigma=0.0), CATALOG)

    def totals(engine: Engine) -> set[float]:
        return {round(sum(engine._plan(model, {"prompt": "p"})[2:]), 9) for _ in range(20)}

    assert len(totals(spread)) == 20
    assert totals(exact) == {2.0}
    cfg = SimConfig()
    cfg.update({"latency_sigma": "0"})
    assert cfg.latency_sigma == 0.0
