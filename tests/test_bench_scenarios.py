"""How the bench builds its scenarios (no process runs): issue 16's wait-modes batches, the seed
models' latency mix and what the stand-in is told."""

from __future__ import annotations

import pytest

from bench.measure import bound, ideal_makespan
from bench.run import wait_modes_scenario
from bench.throughput import batch_items, seed_mix, sim_options
from replicate_sim.catalog import load_catalog

pytestmark = pytest.mark.unit


def test_the_mix_is_the_registrys_prompt_only_image_models_at_their_catalog_means():
    mix = dict(seed_mix())
    assert set(mix) == {
        "black-forest-labs/flux-dev",
        "qwen/qwen-image",
        "google/imagen-4-ultra",
        "black-forest-labs/flux-kontext-max",
        "black-forest-labs/flux-1.1-pro-ultra",
        "google/nano-banana",
    }
    catalog = load_catalog()
    assert all(mean == catalog.get(model).latency_mean for model, mean in mix.items())
    assert min(mix.values()) >= 1 and max(mix.values()) <= 15


def test_the_mix_scenario_has_the_issues_budgets_in_real_seconds():
    sc = wait_modes_scenario(quick=False, mix=True)
    assert (sc.n, sc.slots, sc.create_per_min, sc.read_per_min, sc.hosts) == (5000, 60, 600, 3000, 3)
    assert sc.scale == 1.0 and sc.window == 60.0
    assert sc.mode == "webhook" and sc.name == "n5000-s60-r600-mix"
    means = dict(sc.mix)
    # the items are dealt over the models in turn; the nominal latency is the items' mean
    models = sc.item_models()
    assert set(models) == set(means) and models[: len(means)] == list(means)
    assert sc.latency == pytest.approx(sum(means[m] for m in models) / sc.n)
    # the stand-in draws each model's latency around its own mean, unscaled
    options = sim_options(sc)
    assert options["latency_overrides"] == means and options["latency_scale"] == 1.0
    assert options["create_limit"] == 600 and options["read_limit"] == 3000 and options["window"] == 60.0


def test_the_batch_names_each_items_model_and_the_single_model_batch_is_unchanged():
    mixed = wait_modes_scenario(quick=True, n=60, slots=10, mix=True)
    items = batch_items(mixed, "t")
    assert len(items) == 60 and len({i["prompt"] for i in items}) == 60
    assert [i["model"] for i in items] == mixed.item_models()
    single = wait_modes_scenario(quick=False)
    assert (single.n, single.slots, single.latency, single.name) == (600, 60, 2.0, "n600-s60-r600-l2")
    assert {i["model"] for i in batch_items(single, "t")} == {single.model}
    assert sim_options(single)["latency_overrides"] == {single.model: 2.0}


def test_for_a_mix_the_bound_is_the_work_over_the_slots_and_the_ideal_adds_the_last_waves_tail():
    latencies = [1.0, 15.0, 3.0, 10.0] * 5  # 20 predictions, 4 slots: 145 slot-seconds
    b = bound(len(latencies), latency=sum(latencies) / len(latencies), slots=4, create_limit=600, window=60)
    assert b["by_slots"] == pytest.approx(sum(latencies) / 4)
    ideal = ideal_makespan(latencies, slots=4, create_limit=600, window=60)
    assert b["bound"] <= ideal <= b["bound"] + max(latencies)


def _modes_runs(*argv: str) -> list[dict]:
    from bench.run import modes_runs, parser

    return modes_runs(parser().parse_args(list(argv)))


def test_all_runs_the_latency_mix_beside_the_two_second_batch_into_the_same_report():
    """`bench.run --all` runs the wait modes on the 2 s batch and on the seed models' mix (full
    sizes: the defaults of wait_modes_scenario); both save to modes.json, whose runs make the
    report's one "Wait modes" table. A single `modes` run is unchanged."""
    runs = _modes_runs("--all")
    assert [r["mix"] for r in runs] == [False, True]
    assert all(r["n"] is None and r["slots"] is None and not r["quick"] for r in runs)
    assert wait_modes_scenario(quick=False, mix=True).name != wait_modes_scenario(quick=False).name
    assert [r["mix"] for r in _modes_runs("--all", "--mix")] == [True]
    assert [r["mix"] for r in _modes_runs("--quick")] == [False]
    assert [r["mix"] for r in _modes_runs("modes", "--mix")] == [True]
    assert [r["mix"] for r in _modes_runs("modes")] == [False]
    assert _modes_runs("throughput") == []
