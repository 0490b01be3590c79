"""prompts.json: the three forms, validation of every item, output paths, references, file limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from producer.prompts import items as prompts_module
from producer.prompts import load_prompts_file, output_names, parse_prompts, slugify
from shared.errors import InputError
from shared.models import load_registry

pytestmark = pytest.mark.unit

FLUX = "black-forest-labs/flux-dev"
KONTEXT = "black-forest-labs/flux-kontext-max"
NANO = "google/nano-banana"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A prompts folder with reference images, and an output root beside it."""
    folder = tmp_path / "job"
    (folder / "refs").mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(folder / "refs" / "a.png")
    Image.new("RGB", (4, 4), "blue").save(folder / "refs" / "b.jpg")
    Image.new("RGB", (4, 4), "green").save(folder / "refs" / "c.webp")
    Image.new("RGB", (4, 4), "white").save(folder / "refs" / "d.png")
    (folder / "refs" / "fake.png").write_text("not an image, only a name")
    (tmp_path / "out").mkdir()
    return tmp_path


def parse(data, files: Path, registry, **kw):
    kw.setdefault("batch_id", "b1")
    kw.setdefault("output_root", files / "out")
    kw.setdefault("base_dir", files / "job")
    return parse_prompts(data, registry=registry, **kw)


def problems_of(data, files, registry, **kw):
    with pytest.raises(InputError) as info:
        parse(data, files, registry, **kw)
    return info.value.problems


# ------------------------------------------------------------------------------- the three forms
def test_form_1_list_of_strings_with_flags(files, registry):
    requests = parse(
        ["a red fox", "a blue whale"],
        files,
        registry,
        model="qwen-image",
        params={"aspect_ratio": "16:9", "num_inference_steps": "20"},
    )
    assert [r.prompt for r in requests] == ["a red fox", "a blue whale"]
    assert {r.model for r in requests} == {"qwen/qwen-image"}
    assert requests[0].params == {"aspect_ratio": "16:9", "num_inference_steps": 20, "output_format": "webp"}
    assert [r.output for r in requests] == ["b1/0000_a-red-fox.webp", "b1/0001_a-blue-whale.webp"]
    assert [r.id for r in requests] == ["0", "1"]
    assert requests[0].route == (FLUX, "google/imagen-4-ultra")


def test_form_1_without_a_model_uses_the_registry_default(files, registry):
    (request,) = parse(["a fox"], files, registry)
    assert request.model == request.requested_model == registry.default_model


def test_form_2_list_of_objects(files, registry):
    data = [
        {
            "id": "city",
            "prompt": "a futuristic city",
            "model": "qwen/qwen-image",
            "params": {"aspect_ratio": "16:9"},
            "output": "covers/city.png",
        },
        {"prompt": "a magical forest", "model": "google/imagen-4-ultra"},
        {"prompt": "same character, red hair", "model": KONTEXT, "input_image": "refs/a.png"},
        {"prompt": "fuse them", "model": NANO, "image_input": ["refs/a.png", "refs/b.jpg"]},
    ]
    city, forest, character, fused = parse(data, files, registry)
    assert city.id == "city" and city.output == "covers/city.png" and city.params["output_format"] == "png"
    assert forest.output == "b1/0001_a-magical-forest.jpg"
    assert character.reference_images == (str((files / "job/refs/a.png").resolve()),)
    assert fused.reference_images[1].endswith("b.jpg") and fused.model == NANO
    assert all(r.warnings == () for r in (city, forest, character, fused))


def test_form_3_defaults_and_items(files, registry):
    data = {
        "model": FLUX,
        "params": {"aspect_ratio": "16:9", "guidance": 3, "output_format": "png"},
        "_comment": "ignored",
        "items": [
            "plain",
            {"prompt": "override", "params": {"aspect_ratio": "1:1", "guidance": None}},
            {"prompt": "other model", "model": "qwen/qwen-image"},
        ],
    }
    plain, override, other = parse(data, files, registry)
    assert plain.params == {"aspect_ratio": "16:9", "guidance": 3.0, "output_format": "png"}
    assert override.params == {"aspect_ratio": "1:1", "output_format": "png"}  # null removed the default
    assert other.model == "qwen/qwen-image" and other.params["aspect_ratio"] == "16:9"


def test_precedence_item_over_flags_over_file_defaults(files, registry):
    data = {
        "model": "qwen/qwen-image",
        "params": {"seed": 1, "guidance": 2},
        "items": ["a", {"prompt": "b", "model": FLUX, "params": {"seed": 3}}],
    }
    a, b = parse(data, files, registry, model="google/imagen-4-ultra", params={"seed": 2})
    assert a.model == "google/imagen-4-ultra"  # the flag beats the file's default
    assert b.model == FLUX and b.params["seed"] == 3 and b.params["guidance"] == 2.0


def test_seed_style_names_and_single_object(files, registry):
    data = [
        {
            "prompt": "x",
            "model_name": "flux-dev",
            "kwargs": {"input_image": "refs/a.png", "seed": 5},
            "output_filepath": "seed/x.jpg",
        }
    ]
    (request,) = parse(data, files, registry)
    assert request.requested_model == FLUX and request.model == KONTEXT  # the reference moved it
    assert request.params == {"seed": 5, "output_format": "jpg"} and request.output == "seed/x.jpg"
    assert len(request.reference_images) == 1
    (single,) = parse({"prompt": "one image", "model": "nano-banana"}, files, registry)
    assert single.model == NANO


def test_model_specific_reference_names_at_item_level(files, registry):
    (video,) = parse(
        [
            {
                "prompt": "pan",
                "model": "kwaivgi/kling-v2.1-master",
                "start_image": "refs/a.png",
                "params": {"duration": 10},
            }
        ],
        files,
        registry,
    )
    assert video.output.endswith(".mp4") and video.reference_images[0].endswith("a.png")


def test_reference_urls_are_kept(files, registry):
    (request,) = parse(
        [{"prompt": "x", "model": KONTEXT, "input_image": "https://example.com/a.png"}], files, registry
    )
    assert request.reference_images == ("https://example.com/a.png",)


def test_routing_changes_are_warnings(files, registry):
    data = [
        {
            "prompt": "a",
            "model": FLUX,
            "image_input": ["refs/a.png", "refs/b.jpg"],
            "params": {"num_outputs": 2, "aspect_ratio": "9:21"},
        }
    ]
    (request,) = parse(data, files, registry)
    assert request.model == NANO and request.requested_model == FLUX
    assert request.warnings[0] == f"routed to {NANO}: {FLUX} takes no reference image (2 given)"
    assert "num_outputs=2 dropped" in " ".join(request.warnings)
    assert request.params["aspect_ratio"] == "9:16"


# ------------------------------------------------------------------------------- bad inputs
MALFORMED = [
    # (data, index, field, fragment of the message)
    ([{"prompt": ""}], 0, "prompt", "prompt is empty"),
    ([{"prompt": "   "}], 0, "prompt", "prompt is empty"),
    ([{"model": FLUX}], 0, "prompt", "prompt is missing"),
    ([{"prompt": 5}], 0, "prompt", "prompt must be a string"),
    (["x" * 10_001], 0, "prompt", "the limit is 10000"),
    ([42], 0, None, "an item must be a prompt string or an object"),
    ([None], 0, None, "not null"),
    ([{"prompt": "a", "modle": FLUX}], 0, "modle", "Did you mean 'model'?"),
    ([{"prompt": "a", "aspect_ratio": "1:1"}], 0, "aspect_ratio", 'model parameters go under "params"'),
    ([{"prompt": "a", "model": "flux-devv"}], 0, "model", "Known models:"),
    ([{"prompt": "a", "model": 7}], 0, "model", "must be a model name"),
    ([{"prompt": "a", "params": []}], 0, "params", "params must be an object"),
    ([{"prompt": "a", "params": {"guidanse": 3}}], 0, "params.guidanse", "Did you mean 'guidance'?"),
    ([{"prompt": "a", "params": {"num_outputs": 5}}], 0, "params.num_outputs", "above the maximum"),
    ([{"prompt": "a", "params": {"aspect_ratio": "7:3"}}], 0, "params.aspect_ratio", "is not allowed"),
    ([{"prompt": "a", "params": {"go_fast": "fast"}}], 0, "params.go_fast", "must be true or false"),
    ([{"prompt": "a", "image_input": "refs/missing.png"}], 0, "image_input", "file not found"),
    ([{"prompt": "a", "image_input": "refs/fake.png"}], 0, "image_input", "not an image file"),
    ([{"prompt": "a", "image_input": "refs"}], 0, "image_input", "not a file"),
    (
        [{"prompt": "a", "image_input": ["refs/a.png", 3]}],
        0,
        "image_input[1]",
        "must be a file path or an http(s) URL",
    ),
    (
        [{"prompt": "a", "image_input": "ftp://host/a.png"}],
        0,
        "image_input",
        "only local files and http(s) URLs",
    ),
    ([{"prompt": "a", "image_input": {"a": 1}}], 0, "image_input", "must be a path/URL or a list"),
    (
        [{"prompt": "a", "image_input": ["refs/a.png", "refs/b.jpg", "refs/c.webp", "refs/d.png"]}],
        0,
        "image_input",
        "no image model takes more than 3",
    ),
    (
        [{"prompt": "a", "image_input": "refs/a.png", "input_image": "refs/b.jpg"}],
        0,
        "input_image",
        "given under several names",
    ),
    (
        [{"prompt": "a", "image_input": "refs/a.png", "params": {"input_image": "refs/b.jpg"}}],
        0,
        "params.input_image",
        "both at item level and inside params",
    ),
    ([{"prompt": "a", "model": "qwen-imgedit"}], 0, "image_input", "needs a reference image"),
    (
        [{"prompt": "a", "model": "kwaivgi/kling-v2.1-master", "image_input": ["refs/a.png", "refs/b.jpg"]}],
        0,
        "image_input",
        "takes at most 1",
    ),
    ([{"prompt": "a", "output": "../escape.png"}], 0, "output", "must not contain '..'"),
    ([{"prompt": "a", "output": "x/../../escape.png"}], 0, "output", "must not contain '..'"),
    ([{"prompt": "a", "output": "/etc/escape.png"}], 0, "output", "not absolute"),
    ([{"prompt": "a", "output": "~/escape.png"}], 0, "output", "not absolute"),
    ([{"prompt": "a", "output": "C:/escape.png"}], 0, "output", "not absolute"),
    ([{"prompt": "a", "output": "a\\b.png"}], 0, "output", "use '/'"),
    ([{"prompt": "a", "output": "folder/"}], 0, "output", "names a folder"),
    ([{"prompt": "a", "output": ""}], 0, "output", "must be a relative file path"),
    ([{"prompt": "a", "output": 3}], 0, "output", "must be a relative file path"),
    ([{"prompt": "a", "output": "x.gif"}], 0, "output", "extension .gif"),
    ([{"prompt": "a", "model": KONTEXT, "output": "x.webp"}], 0, "output", "makes jpg, png"),
    (
        [{"prompt": "a", "output": "x.png", "params": {"output_format": "jpg"}}],
        0,
        "output",
        "does not match output_format 'jpg'",
    ),
    ([{"prompt": "a", "id": "x"}, {"prompt": "b", "id": "x"}], 1, "id", "also the id of item 0"),
    ([{"prompt": "a"}, {"prompt": "b", "id": "0"}], 1, "id", "also the id of item 0"),
    ([{"prompt": "a", "id": True}], 0, "id", "must be a string or an integer"),
    ([{"prompt": "a", "id": ""}], 0, "id", "id is empty"),
    (
        [{"prompt": "a", "output": "same.png"}, {"prompt": "b", "output": "same.png"}],
        1,
        "output",
        "also written by item 0",
    ),
    (
        [{"prompt": "a", "output": "Same.PNG"}, {"prompt": "b", "output": "same.png"}],
        1,
        "output",
        "ignoring case",
    ),
    (
        [
            {"prompt": "a", "output": "dup.png", "params": {"num_outputs": 2}},
            {"prompt": "b", "output": "dup_1.png"},
        ],
        1,
        "output",
        "also written by item 0",
    ),
    (  # a model asked for PNG may answer JPEG: both would be written as fox.jpg
        [{"prompt": "a", "output": "fox.png"}, {"prompt": "b", "output": "fox.jpg"}],
        1,
        "output",
        "also written by item 0",
    ),
    (
        [{"prompt": "a", "output": "./d/x.png"}, {"prompt": "b", "output": "d//x.png"}],
        1,
        "output",
        "also written by item 0",
    ),
    ({"items": "a"}, None, "items", "'items' must be a list"),
    ({"items": []}, None, "items", "no items"),
    ([], None, "items", "no items"),
    ({"model": FLUX}, None, "items", "needs 'items'"),
    ({"prompt": "shared", "items": ["a"]}, None, "prompt", "belongs in each item"),
    ({"modle": FLUX, "items": ["a"]}, None, "modle", "Did you mean 'model'?"),
    (5, None, None, "expected a list of prompts"),
]


@pytest.mark.parametrize(
    "data, index, field, fragment", MALFORMED, ids=[f"{i}-{m[3][:30]}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_input_is_rejected_naming_item_and_field(files, registry, data, index, field, fragment):
    problems = problems_of(data, files, registry)
    matching = [p for p in problems if fragment in p.message]
    assert matching, f"no problem mentions {fragment!r}: {problems}"
    assert matching[0].index == index
    assert matching[0].field == field
    if index is not None:
        assert str(matching[0]).startswith(f"item {index}")


def test_every_problem_is_reported_at_once(files, registry):
    data = [
        {"prompt": "", "model": "nope"},
        {"prompt": "ok"},
        {"prompt": "b", "params": {"num_outputs": 9}, "output": "../x.png"},
        {"prompt": "c", "image_input": "refs/missing.png", "id": "cee"},
    ]
    problems = problems_of(data, files, registry)
    found = {(p.index, p.field) for p in problems}
    assert {(0, "prompt"), (0, "model"), (2, "params.num_outputs"), (3, "image_input")} <= found
    assert [p.index for p in problems] == sorted(p.index for p in problems)
    assert any(p.item_id == "cee" for p in problems)
    assert "item 3 (id 'cee'), field 'image_input'" in str(InputError(problems))


def test_bad_batch_id(files, registry):
    for batch_id in ("../up", "a/b", "", ".hidden"):
        problems = problems_of(["a"], files, registry, batch_id=batch_id)
        assert problems[0].field == "batch_id"


# ------------------------------------------------------------------------------- outputs
def test_symlink_escape_is_rejected(files, registry, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, files / "out" / "link")
    problems = problems_of([{"prompt": "a", "output": "link/x.png"}], files, registry)
    assert problems[0].field == "output" and "through a symbolic link" in problems[0].message
    # a file symlink pointing outside is an escape too
    os.symlink(outside / "target.png", files / "out" / "file.png")
    problems = problems_of([{"prompt": "a", "output": "file.png"}], files, registry, overwrite=True)
    assert "through a symbolic link" in problems[0].message


def test_symlink_inside_the_root_is_fine(files, registry):
    (files / "out" / "real").mkdir()
    os.symlink(files / "out" / "real", files / "out" / "alias")
    (request,) = parse([{"prompt": "a", "output": "alias/x.png"}], files, registry)
    assert request.output == "alias/x.png"
    # ... but the same file through two names is a collision
    problems = problems_of(
        [{"prompt": "a", "output": "alias/x.png"}, {"prompt": "b", "output": "real/x.png"}], files, registry
    )
    assert problems[0].index == 1 and "also written by item 0" in problems[0].message


def test_existing_files_need_overwrite(files, registry):
    (files / "out" / "b1").mkdir()
    (files / "out" / "b1" / "0000_a.webp").write_bytes(b"old")
    problems = problems_of(["a"], files, registry)
    assert "already exists" in problems[0].message and problems[0].field == "output"
    (request,) = parse(["a"], files, registry, overwrite=True)
    assert request.output == "b1/0000_a.webp"
    (files / "out" / "folder.png").mkdir()
    problems = problems_of([{"prompt": "a", "output": "folder.png"}], files, registry, overwrite=True)
    assert "existing folder" in problems[0].message


def test_output_under_a_file_is_rejected(files, registry):
    (files / "out" / "plain").write_text("x")
    problems = problems_of([{"prompt": "a", "output": "plain/x.png"}], files, registry)
    assert "is a file, not a folder" in problems[0].message


def test_extension_and_format(files, registry):
    a, b, c, d = parse(
        [
            {"prompt": "a", "output": "a"},  # no extension: the model's default format
            {"prompt": "b", "output": "b", "params": {"output_format": "jpg"}},
            {"prompt": "c", "output": "c.jpeg"},  # the extension decides the format
            {"prompt": "d", "output": "v1.2"},  # not a media extension: one is added
        ],
        files,
        registry,
    )
    assert (a.output, a.params["output_format"]) == ("a.webp", "webp")
    assert (b.output, b.params["output_format"]) == ("b.jpg", "jpg")
    assert (c.output, c.params["output_format"]) == ("c.jpeg", "jpg")
    assert d.output == "v1.2.webp"


def test_default_outputs_and_names():
    assert slugify("A red fox, in the SNOW!") == "a-red-fox-in-the-snow"
    assert slugify("一只猫") == "item"
    assert slugify("Crème brûlée") == "creme-brulee"
    assert len(slugify("word " * 40)) <= 40
    assert output_names("b/x.png", 3) == ["b/x.png", "b/x_1.png", "b/x_2.png"]
    assert output_names("b.d/x", 2) == ["b.d/x", "b.d/x_1"]


# ------------------------------------------------------------------------------- the file
def test_load_prompts_file_and_relative_references(files, registry, monkeypatch):
    path = files / "job" / "prompts.json"
    path.write_text(json.dumps([{"prompt": "x", "model": KONTEXT, "input_image": "refs/a.png"}]))
    data = load_prompts_file(path)
    assert data.source_dir == path.parent.resolve()
    monkeypatch.chdir(files)  # the current directory does not matter: the file's folder does
    (request,) = parse_prompts(data, batch_id="b1", output_root=files / "out", registry=registry)
    assert request.reference_images == (str((files / "job/refs/a.png").resolve()),)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('[\n  "a",\n  "b"\n  "c"\n]', "line 4, column 3"),
        ('{"items": [\n"a",\n]}', "item 0: "),  # a trailing comma: named at the comma (below)
        ("", "the file is empty"),
        ("   \n", "the file is empty"),
        ('[{"prompt": "a", "prompt": "b"}]', "line 1, column 18: duplicate key 'prompt'"),
        ('[{"prompt": "a", "params": {"guidance": NaN}}]', "line 1, column 41: NaN is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("12", "expected a list of prompts"),
    ],
)
def test_load_prompts_file_errors(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_prompts_file(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_load_prompts_file_limits_and_encoding(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_prompts_file(tmp_path / "none.json")
    with pytest.raises(InputError, match="is a folder"):
        load_prompts_file(tmp_path)
    big = tmp_path / "big.json"
    big.write_text(json.dumps(["x" * 100] * 20))
    with pytest.raises(InputError, match="MB limit for one prompts file"):
        load_prompts_file(big, max_bytes=1000)
    latin = tmp_path / "latin.json"
    latin.write_bytes('["caf\xe9"]'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_prompts_file(latin)
    bom = tmp_path / "bom.json"
    bom.write_bytes('["café"]'.encode("utf-8-sig"))
    assert load_prompts_file(bom) == ["café"]
    single = tmp_path / "single.json"
    single.write_text('"a lone prompt"')
    assert load_prompts_file(single) == ["a lone prompt"]


def test_item_cap(files, registry, monkeypatch):
    monkeypatch.setattr(prompts_module, "MAX_ITEMS", 5)
    with pytest.raises(InputError, match="6 items is above the limit of 5"):
        parse(["a"] * 6, files, registry)


def test_a_large_batch_parses_quickly_enough(files, registry):
    """10k items: no quadratic work (caches for folders and reference images)."""
    data = {"model": FLUX, "items": [{"prompt": f"prompt {i}", "id": f"i{i}"} for i in range(10_000)]}
    requests = parse(data, files, registry)
    assert len(requests) == 10_000 and requests[-1].output == "b1/9999_prompt-9999.webp"
    assert len({r.output.casefold() for r in requests}) == 10_000


def test_examples_parse(registry, tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples"
    paths = sorted(examples.glob("prompts*.json"))
    assert paths, "examples/prompts*.json are missing"
    for path in paths:
        requests = parse_prompts(
            load_prompts_file(path), batch_id="ex", output_root=tmp_path, registry=registry
        )
        assert requests, path
    main = parse_prompts(
        load_prompts_file(examples / "prompts.json"), batch_id="ex", output_root=tmp_path, registry=registry
    )
    assert 5 <= len(main) <= 10
    assert all(not r.reference_images and registry.get(r.model).price <= 0.03 for r in main)


# ------------------------------------------------------------------------------- shared faults once
def test_a_bad_default_model_is_reported_once_not_per_item(files, registry):
    problems = problems_of({"model": "nope/nope", "items": ["a prompt"] * 5000}, files, registry)
    assert len(problems) == 1
    (problem,) = problems
    assert problem.index is None and problem.field == "model"
    assert str(problem).startswith("file defaults, field 'model': model 'nope/nope' is not in the registry")
    # items naming their own model are checked on their own; the default is still reported once
    problems = problems_of(
        {"model": "nope/nope", "items": ["a", {"prompt": "b", "model": "nah"}, "c"]}, files, registry
    )
    assert [(p.index, p.field) for p in problems] == [(None, "model"), (1, "model")]


def test_a_bad_default_model_overridden_everywhere_is_no_problem(files, registry):
    requests = parse({"model": "nope/nope", "items": ["a"]}, files, registry, model=FLUX)
    assert requests[0].model == FLUX  # --model wins over the file's default, as before


def test_bad_default_params_and_references_are_reported_once(files, registry):
    data = {
        "model": FLUX,
        "params": {"bogus": 1, "num_outputs": 99},
        "image_input": ["refs/missing.png"],
        "items": [f"prompt {i}" for i in range(300)],
    }
    problems = problems_of(data, files, registry)
    assert {str(p).split(":")[0] for p in problems} == {
        "file defaults, field 'params.bogus'",
        "file defaults, field 'params.num_outputs'",
        "file defaults, field 'image_input[0]'",
    }
    assert len(problems) == 3 and all(p.index is None for p in problems)
    # a fault of the item's own params still names the item
    data = {
        "model": FLUX,
        "params": {"bogus": 1},
        "items": ["a", {"prompt": "b", "params": {"guidance": "x"}}],
    }
    problems = problems_of(data, files, registry)
    assert [(p.index, p.field) for p in problems] == [(None, "params.bogus"), (1, "params.guidance")]
    # an item that overrides the bad default is fine; the others still make it a problem once
    data = {
        "model": FLUX,
        "params": {"num_outputs": 99},
        "items": ["a", {"prompt": "b", "params": {"num_outputs": 1}}],
    }
    assert len(problems_of(data, files, registry)) == 1
    assert (
        len(
            parse(
                {
                    "model": FLUX,
                    "params": {"num_outputs": 99},
                    "items": [{"prompt": "b", "params": {"num_outputs": None}}],
                },
                files,
                registry,
            )
        )
        == 1
    )
    # params that are not an object at all
    problems = problems_of({"params": 5, "items": ["a", "b", "c"]}, files, registry)
    assert len(problems) == 1 and str(problems[0]).startswith("file defaults, field 'params'")


def test_bad_flags_are_reported_once(files, registry):
    problems = problems_of(["a", "b", "c"], files, registry, model="nope")
    assert len(problems) == 1 and problems[0].field == "--model" and "Known models" in problems[0].message
    problems = problems_of(
        ["a"] * 100, files, registry, params={"num_outputs": 99, "image_input": ["nope.png"]}
    )
    assert sorted(p.field for p in problems) == ["--param image_input[0]", "--param num_outputs"]
    assert all(p.index is None for p in problems)


def test_default_model_use_is_a_note(files, registry):
    requests = parse(["a", {"prompt": "b", "model": "qwen/qwen-image"}, "c"], files, registry)
    assert requests.default_model_items == 2
    assert requests.notes == [
        f"no model given for 2 item(s); using {registry.default_model} "
        '(name one with --model, or "model" in the file)'
    ]
    assert parse(["a"], files, registry, model=FLUX).notes == []
    assert parse({"model": FLUX, "items": ["a"]}, files, registry).notes == []


@pytest.mark.parametrize(
    "data, key, hint",
    [
        ({"model": FLUX, "itemz": ["a", "b"]}, "itemz", "Did you mean 'items'?"),
        ({"promt": "a single image"}, "promt", "Did you mean 'prompt'?"),
        ({"modle": FLUX, "prompts": ["a"]}, "prompts", "Did you mean 'prompt'?"),
    ],
)
def test_unknown_top_level_keys_are_named_when_items_is_missing(files, registry, data, key, hint):
    problems = problems_of(data, files, registry)
    named = [p for p in problems if p.field == key]
    assert (
        named and f"unknown field {key!r} at the top level" in named[0].message and hint in named[0].message
    )
    assert problems.index(named[0]) < [p.field for p in problems].index("items")  # named first
    assert any("needs 'items'" in p.message for p in problems)


# ------------------------------------------------------------------------------- JSON positions
def load_problems(tmp_path, text):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_prompts_file(path)
    return path, info.value.problems


def test_duplicate_keys_and_nan_name_line_column_item_and_field(tmp_path):
    text = (
        "[\n"
        '  {"prompt": "a"},\n'
        '  {"prompt": "b", "params": {"seed": NaN, "guidance": -Infinity}},\n'
        '  {"prompt": "c", "id": "x", "id": "y"}\n'
        "]"
    )
    path, problems = load_problems(tmp_path, text)
    assert [(p.index, p.field) for p in problems] == [(1, "params.seed"), (1, "params.guidance"), (2, "id")]
    assert str(problems[0]) == (
        f"item 1, field 'params.seed': {path}: line 3, column 38: NaN is not valid JSON; use a number or null"
    )
    assert "line 3, column 55: -Infinity is not valid JSON" in problems[1].message
    assert str(problems[2]).startswith(f"item 2, field 'id': {path}: line 4, column 30: duplicate key 'id'")


@pytest.mark.timeout(60)
def test_80000_duplicate_keys_in_10_MB_are_each_located_in_one_pass(tmp_path):
    """Every problem's line and column come from one pass over the text (line starts, then a
    bisection), not from counting lines from the start of the file for each problem: that took
    5.5 minutes on this input. A generous timeout instead of a timed assertion."""
    line = '{"prompt": "' + "x" * 100 + '", "prompt": "b"}'
    path, problems = load_problems(tmp_path, "[\n" + ",\n".join([line] * 80_000) + "\n]")
    assert len(problems) == 80_000
    column = line.rindex('"prompt"') + 1  # the second one
    assert [(p.index, p.field) for p in problems[::20_000]] == [
        (i, "prompt") for i in range(0, 80_000, 20_000)
    ]
    assert f"line 80001, column {column}: duplicate key 'prompt'" in problems[-1].message
    assert f"line 2, column {column}: " in problems[0].message


def test_duplicate_keys_in_defaults_and_items_of_the_object_form(tmp_path):
    text = '{"model": "a", "model": "b",\n "items": [{"prompt": "x"}, {"prompt": "y", "prompt": "z"}]}'
    _, problems = load_problems(tmp_path, text)
    assert str(problems[0]).startswith("file defaults, field 'model'") and "line 1, column 16" in str(
        problems[0]
    )
    assert (problems[1].index, problems[1].field) == (1, "prompt") and "line 2, column 45" in problems[
        1
    ].message
    # an escaped key is the same key
    _, problems = load_problems(tmp_path, '[{"prompt": "a", "pro\\u006dpt": "b"}]')
    assert problems[0].index == 0 and "duplicate key 'prompt'" in problems[0].message


# --- fallback off (issue 18.6) ---------------------------------------------------------------------
def test_no_fallback_from_the_flag_the_file_defaults_or_an_item(registry, tmp_path):
    flux = "black-forest-labs/flux-dev"
    data = {
        "model": flux,
        "fallback": False,
        "items": ["a fox", {"prompt": "an owl", "fallback": True}, {"prompt": "a whale"}],
    }
    requests = parse_prompts(data, batch_id="b1", output_root=tmp_path, registry=registry)
    assert [r.models for r in requests] == [(flux,), (flux, *registry.get(flux).fallback), (flux,)]
    everyone = parse_prompts(data, batch_id="b1", output_root=tmp_path, registry=registry, fallback=False)
    assert [r.models for r in everyone] == [(flux,)] * 3  # --no-fallback wins over an item's true
    default = parse_prompts(["a fox"], batch_id="b1", output_root=tmp_path, registry=registry, model=flux)
    assert len(default[0].models) > 1  # on unless asked


def test_fallback_must_be_a_boolean(registry, tmp_path):
    with pytest.raises(InputError) as info:
        parse_prompts(
            {"fallback": "no", "items": ["a", "b", {"prompt": "c", "fallback": 0}]},
            batch_id="b1",
            output_root=tmp_path,
            registry=registry,
            model="black-forest-labs/flux-dev",
        )
    messages = [str(p) for p in info.value.problems]
    assert messages == [
        "file defaults, field 'fallback': fallback must be true or false, not 'no'",
        "item 2, field 'fallback': fallback must be true or false, not 0",
    ], messages


def test_comments_are_accepted_as_in_the_readme(tmp_path):
    """Issue 18.7: the README's jsonc examples paste as they are (JSONC comments)."""
    path = tmp_path / "p.jsonc"
    path.write_text(
        '{"model": "black-forest-labs/flux-dev", /* the file\'s default model */\n'
        ' "items": [{"prompt": "a red fox // not a comment", "output": "a/b.png"},  // 1\n'
        '           {"prompt": "an owl /* nor this */"}]}  // 3. defaults + items\n'
    )
    data = load_prompts_file(path)
    assert data["model"] == "black-forest-labs/flux-dev"
    assert [i["prompt"] for i in data["items"]] == ["a red fox // not a comment", "an owl /* nor this */"]
    path.write_text('["a red fox", "a lighthouse"]                                  // 1. strings\n')
    assert load_prompts_file(path) == ["a red fox", "a lighthouse"]
    # Comments keep lines and columns: a duplicate key after one is still found where it is.
    path.write_text('[{"prompt": "x", /* a\ncomment */ "prompt": "y"}]')
    with pytest.raises(InputError, match=r"line 2, column 12: duplicate key 'prompt'"):
        load_prompts_file(path)
    path.write_text('["a fox"] /* never closed')
    with pytest.raises(InputError, match=r"line 1: a /\* comment is never closed"):
        load_prompts_file(path)


@pytest.mark.parametrize(
    "content, line, item, field",
    [
        ('[\n  "a fox",\n  "an owl",\n]', 3, 1, None),
        (
            '{"items": [\n  {"prompt": "a fox"},\n  {"prompt": "an owl",\n   "params": {"seed": 1,}}\n]}',
            4,
            1,
            "params.seed",
        ),
        ('{"items": [\n  {"prompt": "a fox"},  // first\n  {"prompt": "an owl"},  // last\n]}', 3, 1, None),
    ],
)
def test_a_trailing_comma_names_its_line_and_the_item(tmp_path, content, line, item, field):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_prompts_file(path)
    (problem,) = info.value.problems
    assert f"line {line}, column" in problem.message and "trailing comma" in problem.message
    assert (problem.index, problem.field) == (item, field)
