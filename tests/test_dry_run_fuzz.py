"""`producer submit --dry-run` never shows a traceback, whatever the input.

Hypothesis writes arbitrary JSON-ish documents to a prompts file (the real field and model names
mixed with any text, lone UTF-16 surrogates, NUL, NaN and infinities, huge numbers, nesting; written
as JSON escapes, as invalid UTF-8, cut short, with duplicate keys) or plain random bytes, adds
random --model/--param flags, and runs the CLI's own code path (click's runner, which writes to
strict UTF-8 streams like a real terminal). The answer is always exit 0 (a plan) or 2 (every
problem listed); any exception would show up as another exit code with the exception attached.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from producer.cli import cli
from shared.models import load_registry

MODELS = sorted(load_registry().names())
FIELDS = [
    "prompt",
    "model",
    "params",
    "image_input",
    "input_image",
    "output",
    "id",
    "items",
    "model_name",
    "kwargs",
    "output_filepath",
    "reference_images",
    "_comment",
    "aspect_ratio",
    "num_outputs",
    "output_format",
    "seed",
    "guidance",
    "go_fast",
    "megapixels",
    "start_image",
    "image",
]
ODD = "\ud800\udcff\udfff\x00\x01/\\.:~é😀\u202e"
PATHS = [
    "ok.png",
    "missing.png",
    "../x.png",
    "/abs.png",
    "out.png",
    "x.jpeg",
    "a/b/c.webp",
    "http://h/x.png",
    "ftp://h/x",
    "ok.png\x00",
    "\ud83e.png",
    "",
    " ",
    "x" * 300,
]

text = st.text(alphabet=st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD)), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.sampled_from(MODELS + PATHS + ["16:9", "21:9", "png", "jpg", "nope/nope", "flux-dev"]),
)
keys = st.one_of(st.sampled_from(FIELDS), text)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=24,
)
# Items that are valid but for a field or two, so the fuzz reaches every check (routing, references,
# output paths and their claims, the plan), not only the first problem.
good_prompts = st.sampled_from(["a red fox", "a lighthouse at dusk", "x"])
near_valid = st.fixed_dictionaries(
    {"prompt": st.one_of(good_prompts, text)},
    optional={
        "model": st.one_of(st.sampled_from(MODELS), text),
        "params": st.dictionaries(st.sampled_from(FIELDS[13:]), scalars, max_size=3),
        "image_input": st.one_of(st.sampled_from(PATHS), text, st.lists(st.sampled_from(PATHS), max_size=3)),
        "output": st.one_of(st.sampled_from(PATHS), text),
        "id": st.one_of(text, st.integers()),
    },
)
items = st.one_of(text, good_prompts, near_valid, near_valid, st.dictionaries(keys, values, max_size=7))
documents = st.one_of(
    st.lists(items, min_size=1, max_size=4),
    values,
    st.lists(items, min_size=1, max_size=4),
    st.fixed_dictionaries(
        {"items": st.one_of(st.lists(items, max_size=6), values)},
        optional={
            "model": st.one_of(st.sampled_from(MODELS), values),
            "params": values,
            "image_input": values,
            "itemz": values,
        },
    ),
)


@st.composite
def prompts_files(draw) -> bytes:
    """The bytes of a prompts file: a document in one of several spellings, or random bytes."""
    how = draw(st.sampled_from(["ascii", "ascii", "ascii", "surrogatepass", "cut", "duplicate", "bytes"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    doc = draw(documents)
    if how == "ascii":  # lone surrogates as \ud800 escapes, NaN/Infinity as JSON does not allow
        return json.dumps(doc).encode()
    text_ = json.dumps(doc, ensure_ascii=False)
    if how == "surrogatepass":  # what a careless writer produces: bytes that are not UTF-8
        return text_.encode("utf-8", "surrogatepass")
    if how == "duplicate":
        return f'[{{"prompt": "a", "prompt": {text_}, "params": {{"seed": 1, "seed": {text_}}}}}]'.encode(
            "utf-8", "surrogatepass"
        )
    data = text_.encode("utf-8", "surrogatepass")
    return data[: draw(st.integers(min_value=0, max_value=len(data)))]


flags = st.lists(
    st.one_of(
        st.tuples(st.just("--model"), st.one_of(st.sampled_from(MODELS), text)),
        st.tuples(
            st.just("--param"),
            st.builds(
                lambda k, v: f"{k}={v}",
                st.sampled_from(FIELDS[12:] + ["x"]),
                st.one_of(text, scalars.map(json.dumps)),
            ),
        ),
        st.tuples(st.just("--json"), st.none()),
    ),
    max_size=3,
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    Image.new("RGB", (8, 8)).save(root / "ok.png")
    (root / "out").mkdir()
    (root / "out" / "out.png").write_bytes(b"old")
    return root


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=prompts_files(), options=flags)
def test_dry_run_answers_0_or_2_and_never_a_traceback(workspace, content, options):
    path = workspace / "prompts.json"
    path.write_bytes(content)
    args = [part for flag, value in options for part in ((flag,) if value is None else (flag, value))]
    env = {
        "OUTPUT_DIR": str(workspace / "out"),
        "FLEET_MODELS_FILE": None,
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = CliRunner().invoke(
        cli, ["--env-file", "/nonexistent", "submit", str(path), "--dry-run", *args], env=env
    )
    event(f"exit {result.exit_code}")  # both answers are reached: --hypothesis-show-statistics
    assert result.exit_code in (0, 2), (result.exit_code, repr(result.exception), result.output[-2000:])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
