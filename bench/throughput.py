"""Throughput against the bound, for the fleet and for the plain-Celery baseline, on the same stand-in.

Time scaling (so a 5000-image run at 60 creations/min does not take 83 minutes): every scenario is
stated in Replicate's real units (slots, creations per 60 s, model latency in s) and run with ONE
time factor s applied to every duration — the rate window (60 s * s) and the model's mean latency
(L * s) — while every count stays as stated (slots, creations per window, reads per window).
All ratios of the problem are kept, so the efficiency is the same as unscaled, up to fixed
overheads that do not scale (network, task hand-off). s is chosen per scenario so the busiest
limit runs at about `target_rate` creations per real second (default 10/s, what 2 cores carry
with room to spare), but never so small that the scaled latency drops under `min_latency`
(default 2 s: the workers' polling has a 0.25 s floor); s <= 1.

A scenario runs one model (`model`, mean `latency`) or a mix (`mix`: the items dealt over several
models in turn, each at its own mean; `seed_mix()` is the built-in registry's). The stand-in draws
each prediction's latency from its model's lognormal (the catalog's sigma) around the scaled mean.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import Fleet, submit, wait_finished
from bench.hosts import Hosts
from bench.measure import (
    Series,
    bound,
    command_delta,
    fetch_events,
    ideal_makespan,
    redis_commands,
    redis_cpu,
    redis_round_trips,
)
from bench.processes import RedisServer, stop_group
from shared.settings import Settings

MODEL = "google/imagen-4-ultra"  # single output, no fallback route; catalog mean 8 s, sigma 0.3
NOMINAL_LATENCY = 8.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SYSTEMS = {"webhook": "fleet", "sync": "fleet-sync", "poll": "fleet-polling"}


@dataclass
class Scenario:
    n: int
    slots: int
    create_per_min: int  # nominal: creations per 60 s
    latency: float = NOMINAL_LATENCY  # nominal mean seconds
    read_per_min: int = 3000
    hosts: int = 3
    workers_per_host: int = 1
    concurrency: int | None = None  # threads per worker; default from slots
    target_rate: float = 10.0
    min_latency: float = 2.0
    time_scale: float | None = None  # None: chosen as described above
    model: str = MODEL
    seed: int = 7
    # The models the items are dealt over in turn, each with its nominal mean latency; empty:
    # every item on `model` at `latency`. With a mix, `latency` is set to the items' mean.
    mix: tuple[tuple[str, float], ...] = ()
    # How the workers learn a prediction's end (FLEET_WAIT_MODE): "webhook" (a webhook receiver
    # runs), "sync" (`Prefer: wait` creates, the default without a webhook URL) or "poll".
    mode: str = "webhook"
    # Every prediction's lognormal spread (None: the stand-in catalog's, 0.3). 0: each takes
    # exactly its model's mean, so the ideal schedule is the bare bound N x L / slots.
    latency_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.mix:
            means = dict(self.mix)
            self.latency = sum(means[m] for m in self.item_models()) / max(self.n, 1)

    @property
    def means(self) -> dict[str, float]:
        """Nominal mean latency per model the batch uses."""
        return dict(self.mix) if self.mix else {self.model: self.latency}

    def item_models(self) -> list[str]:
        """Item i's model: the mix's models in turn, or `model`."""
        models = [m for m, _ in self.mix] or [self.model]
        return [models[i % len(models)] for i in range(self.n)]

    @property
    def webhooks(self) -> bool:
        return self.mode == "webhook"

    @property
    def name(self) -> str:
        if self.mix:
            latency = "-mix"
        else:
            latency = f"-l{self.latency:g}" if self.latency != NOMINAL_LATENCY else ""
        spread = "" if self.latency_sigma is None else f"-sigma{self.latency_sigma:g}"
        return f"n{self.n}-s{self.slots}-r{self.create_per_min}{latency}{spread}"

    @property
    def system(self) -> str:
        return SYSTEMS[self.mode]

    @property
    def scale(self) -> float:
        if self.time_scale is not None:
            return self.time_scale
        nominal = min(self.slots / self.latency, self.create_per_min / 60.0)  # images per nominal s
        s = nominal / self.target_rate
        s = max(s, self.min_latency / min(self.means.values()))  # the fastest model's too
        return min(1.0, s)

    @property
    def window(self) -> float:
        return round(60.0 * self.scale, 3)

    @property
    def real_latency(self) -> float:
        return round(self.latency * self.scale, 3)

    @property
    def threads(self) -> int:
        if self.concurrency:
            return self.concurrency
        workers = self.hosts * self.workers_per_host
        return max(8, math.ceil(self.slots * 1.5 / workers) + 4)

    def time_limit(self, timeout: float | None = None) -> float:
        """How long a run may take: `timeout`, else five times the issue's bound (120 s at least)."""
        if timeout:
            return timeout
        b = bound(
            self.n,
            latency=self.real_latency,
            slots=self.slots,
            create_limit=self.create_per_min,
            window=self.window,
        )
        return max(120.0, 5 * b["bound"])


def scenario_fleet(sc: Scenario, hosts: Hosts, settings: Settings, sim_url: str, **options: Any) -> Fleet:
    """The scenario's workers (sc.workers_per_host on hosts 1..sc.hosts, sc.threads each), not
    started yet; `options` go to Fleet (e.g. clock_offsets)."""
    return Fleet(
        hosts,
        settings,
        sim_url,
        workers_per_host=sc.workers_per_host,
        concurrency=sc.threads,
        host_indexes=list(range(1, sc.hosts + 1)),
        webhooks=sc.webhooks,
        **options,
    )


def prompts_for(n: int, tag: str) -> list[str]:
    # Unique prompts: a duplicate input at the stand-in is then always a paid duplicate.
    return [f"bench {tag} image {i:05d}: a lighthouse at dusk, variation {i}" for i in range(n)]


def batch_items(sc: Scenario, tag: str) -> list[dict[str, str]]:
    """The scenario's batch as prompt-file items, each naming its model."""
    return [
        {"prompt": prompt, "model": model}
        for prompt, model in zip(prompts_for(sc.n, tag), sc.item_models(), strict=True)
    ]


def seed_mix() -> tuple[tuple[str, float], ...]:
    """The built-in registry's image models that run on a prompt alone, each with the mean latency
    the stand-in's catalog gives it (3-10 s; lognormal, sigma 0.3: about 1.5-15 s per prediction).
    Left out: the videos (a minute and more) and the edit model that needs an input image."""
    from replicate_sim.catalog import load_catalog
    from shared.models.registry import load_registry

    catalog = load_catalog()
    mix = []
    for spec in load_registry():
        info = catalog.get(spec.name)
        if spec.kind == "image" and not spec.reference_required and info is not None:
            mix.append((spec.name, info.latency_mean))
    return tuple(mix)


def sim_options(sc: Scenario) -> dict[str, Any]:
    return {
        "create_limit": sc.create_per_min,
        "read_limit": sc.read_per_min,
        "window": sc.window,
        "latency_scale": 1.0,
        "latency_overrides": {model: round(mean * sc.scale, 3) for model, mean in sc.means.items()},
        "latency_sigma": sc.latency_sigma,
        "image_scale": 0.002,
        "max_in_flight": None,
        "seed": sc.seed,
        "record_events": True,
        "error_burst": 0,
        "storm_next": 0,
        "error_rate": 0.0,
        "fail_rate": 0.0,
    }


def fleet_settings(sc: Scenario, redis: RedisServer, out: Path, **overrides: Any) -> Settings:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    values = {
        "redis_url": redis.url,
        "key_prefix": prefix,
        "queue": f"{prefix}-q",
        "output_dir": out,
        "replicate_api_token": "r8_bench_not_a_real_token",
        "concurrency_limit": sc.slots,
        "create_limit": sc.create_per_min,
        "read_limit": sc.read_per_min,
        "rate_window": sc.window,
        "log_level": "WARNING",
        # webhook: the receiver gives the workers FLEET_WEBHOOK_URL, and with it their mode
        "wait_mode": None if sc.webhooks else sc.mode,
    }
    values.update(overrides)
    return Settings.load(values, environ={}, dotenv_path=None)


@dataclass
class RunResult:
    system: str  # "fleet" or "baseline-<mode>"
    scenario: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)  # for plots; not in the table

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sim_figures(sc: Scenario, sim: Any, started: float, finished: float, n_done: int) -> tuple[dict, dict]:
    ledger = sim.ledger(detail=False)
    series = Series.from_events(fetch_events(sim))
    latency = series.mean_latency or sc.real_latency
    b = bound(sc.n, latency=latency, slots=sc.slots, create_limit=sc.create_per_min, window=sc.window)
    ideal = ideal_makespan(
        series.latencies_by_creation, slots=sc.slots, create_limit=sc.create_per_min, window=sc.window
    )
    makespan = finished - started
    rejected = ledger.get("rejected_429", {})
    figures = {
        "makespan_s": round(makespan, 2),
        "bound_s": round(b["bound"], 2),
        "bound_by_slots_s": round(b["by_slots"], 2),
        "bound_by_rate_s": round(b["by_rate"], 2),
        "efficiency": round(b["bound"] / makespan, 3) if makespan > 0 else 0.0,
        "ideal_s": round(ideal, 2),
        "efficiency_vs_ideal": round(ideal / makespan, 3) if makespan > 0 else 0.0,
        "mean_latency_s": round(latency, 3),
        # the spread the stand-in drew (a mix of models should span about 1.5-15 s)
        "latency_range_s": [round(min(series.latencies), 2), round(max(series.latencies), 2)]
        if series.latencies
        else None,
        "peak_in_flight": ledger.get("peak_in_flight"),
        "slot_limit": sc.slots,
        "mean_in_flight": round(series.mean_in_flight(started, finished), 2),
        "max_creations_in_window": ledger.get("max_creations_in_window"),
        "max_create_calls_in_window": ledger.get("max_create_calls_in_window"),
        "create_limit": sc.create_per_min,
        "window_s": sc.window,
        "max_reads_in_window": ledger.get("max_reads_in_window"),
        "read_limit": sc.read_per_min,
        "http_429": sum(int(v) for v in rejected.values()),
        "http_429_by_kind": rejected,
        "errors_5xx": ledger.get("errors_5xx"),
        "creations": ledger.get("creations"),
        "duplicate_predictions": ledger.get("duplicate_inputs"),
        "reads": ledger.get("reads"),
        "reads_per_image": round(ledger.get("reads", 0) / max(sc.n, 1), 2),
        "images_done": n_done,
        "images_lost": sc.n - n_done,
    }
    figures["steady_slot_use"] = steady_slot_use(series.in_flight, sc.slots)
    t0 = series.creations[0] if series.creations else started
    plot = {
        "t0": started,
        "in_flight": [(round(t - started, 3), k) for t, k in series.in_flight],
        "window_counts": [
            (round(t - started, 3), k) for t, k in series.window_counts(sc.window, max(sc.window / 20, 0.05))
        ],
        "first_creation_s": round(t0 - started, 3),
    }
    return figures, plot


def steady_slot_use(in_flight: list[tuple[float, int]], slots: int) -> float | None:
    """Mean in flight / slots between the first and the last moment all slots were in use: how well
    the fleet keeps the slots busy while there is work, without the start and the last wave
    (whose length is set by the latency spread, not by the scheduling). None if never full."""
    full = [t for t, k in in_flight if k >= slots]
    if len(full) < 2 or full[-1] <= full[0]:
        return None
    area, prev = 0.0, None
    for t, k in in_flight:
        if prev is not None and prev[0] >= full[0] and t <= full[-1]:
            area += prev[1] * (t - prev[0])
        prev = (t, k)
    return round(area / (full[-1] - full[0]) / slots, 4)


def run_fleet(
    sc: Scenario,
    hosts: Hosts,
    redis: RedisServer,
    sim: Any,
    *,
    timeout: float | None = None,
    log: Any = print,
) -> RunResult:
    """One batch of sc.n images through the real fleet; figures from the stand-in and Redis."""
    sim.reset(**sim_options(sc))
    out = hosts.workdir / f"out-{uuid.uuid4().hex[:6]}"
    settings = fleet_settings(sc, redis, out)
    fleet = scenario_fleet(sc, hosts, settings, sim.url)
    client = redis.client()
    try:
        fleet.start()
        fleet.wait_ready()
        fleet.sample()
        cpu_before = sum(w.last_stats.cpu_seconds for w in fleet.workers if w.last_stats)
        cmds_before, rcpu_before = redis_commands(client), redis_cpu(client)
        trips_before = redis_round_trips(client)
        started = time.time()
        batch_id = submit(settings, batch_items(sc, settings.key_prefix), model=sc.model)
        submitted = time.time()
        limit = sc.time_limit(timeout)
        samples = {"next": 0.0}

        def tick(now: float, _info: Any) -> None:
            if now >= samples["next"]:  # the RSS high-water mark is kept by the kernel; CPU at the end
                fleet.sample()
                samples["next"] = now + 2.0

        finished, finished_at, info = wait_finished(
            settings, batch_id, timeout=limit, on_tick=tick, redis_client=client
        )
        polls = getattr(wait_finished, "polls", 0)
        cmds_after, rcpu_after = redis_commands(client), redis_cpu(client)
        trips_after = redis_round_trips(client)
        cost = fleet.cost()
        counts = dict(info.counts) if info else {}
        done = _succeeded_with_files(settings, batch_id, client)
        figures, plot = sim_figures(sc, sim, started, finished_at, done)
        delta = command_delta(cmds_before, cmds_after)
        total_cmds = sum(delta.values()) - polls - 2  # minus the harness's own HGETALLs and INFOs
        figures.update(
            {
                "finished": finished,
                "statuses": counts,
                "submit_s": round(submitted - started, 2),
                "worker_cpu_s_per_1000": round((cost["cpu_seconds"] - cpu_before) * 1000 / sc.n, 1),
                "worker_peak_rss_mb": round(cost["peak_rss_bytes_max"] / 2**20, 1),
                "workers": cost["worker_processes"],
                "redis_cmds_per_image": round(total_cmds / sc.n, 1),
                "redis_top_cmds_per_image": {k: round(v / sc.n, 2) for k, v in list(delta.items())[:8]},
                # minus the harness's own polls and its INFO calls
                "redis_round_trips_per_image": round((trips_after - trips_before - polls - 4) / sc.n, 1),
                "redis_cpu_s_per_1000": round((rcpu_after - rcpu_before) * 1000 / sc.n, 2),
            }
        )
        if not finished:
            log(f"[fleet {sc.name}] NOT finished within {limit:.0f}s: {counts}\n{fleet.logs(1500)}")
        return RunResult(sc.system, _scenario_dict(sc), figures, plot)
    finally:
        fleet.stop()
        client.close()


def _succeeded_with_files(settings: Settings, batch_id: str, client: Any) -> int:
    """Items that are `succeeded` AND whose every output file exists and is not empty."""
    from shared.keys import Keys
    from shared.ledger import Ledger

    ok = 0
    for item in Ledger(client, Keys(settings.key_prefix)).items(batch_id):
        record = item.to_result()
        if record.get("status") != "succeeded" or not record.get("outputs"):
            continue
        paths = [
            Path(p) if Path(p).is_absolute() else Path(settings.output_dir) / p for p in record["outputs"]
        ]
        if all(p.is_file() and p.stat().st_size > 0 for p in paths):
            ok += 1
    return ok


def _scenario_dict(sc: Scenario) -> dict[str, Any]:
    data = asdict(sc)
    data.update(
        name=sc.name,
        scale=round(sc.scale, 4),
        window=sc.window,
        real_latency=sc.real_latency,
        threads=sc.threads,
    )
    return data


# --- the baseline -------------------------------------------------------------------------------
def run_baseline(
    sc: Scenario,
    hosts: Hosts,
    redis: RedisServer,
    sim: Any,
    *,
    mode: str = "naive",
    timeout: float | None = None,
    log: Any = print,
) -> RunResult:
    """Plain Celery (bench/baseline_app.py) on the same hosts and stand-in.
    mode "naive": every worker runs `slots` at once (each sized to the account's limit, as the seed
    tool's processes were); "split": -c slots/workers, the static split. Both split the creation
    rate across workers with Celery's per-worker `rate_limit`."""
    from celery import Celery

    from bench.baseline_app import TASK_NAME

    sim.reset(**sim_options(sc))
    tag = uuid.uuid4().hex[:8]
    queue, results_key = f"baseline-{tag}-q", f"baseline-{tag}:results"
    threads_of = _baseline_threads(sc, mode)
    env = _baseline_env(sc, redis, sim, queue, results_key, out=hosts.workdir / f"baseline-out-{tag}")
    procs: list[Any] = []
    client = redis.client()
    producer = Celery("baseline-producer", broker=redis.url, set_as_current=False)
    producer.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
    try:
        _start_baseline_workers(sc, hosts, queue, tag, threads_of, env, into=procs)
        _wait_baseline_ready(producer, queue, len(procs))
        started = time.time()
        with producer.producer_or_acquire() as pub:
            for i, item in enumerate(batch_items(sc, tag)):
                producer.send_task(
                    TASK_NAME, args=(i, item["prompt"], item["model"]), queue=queue, producer=pub
                )
        deadline = time.monotonic() + sc.time_limit(timeout)
        while time.monotonic() < deadline and client.hlen(results_key) < sc.n:
            time.sleep(0.2)
        finished_at = time.time()
        results = client.hgetall(results_key)
        done = sum(1 for v in results.values() if v == "succeeded")
        figures, plot = sim_figures(sc, sim, started, finished_at, done)
        figures.update(
            {
                "finished": len(results) >= sc.n,
                "threads_per_worker": threads_of,
                "rate_limit_per_worker": env["BASELINE_RATE_LIMIT"],
                "failed": sum(1 for v in results.values() if v != "succeeded"),
            }
        )
        return RunResult(f"baseline-{mode}", _scenario_dict(sc), figures, plot)
    finally:
        for proc in procs:
            stop_group(proc)
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        client.delete(queue, results_key)
        client.close()


def _baseline_threads(sc: Scenario, mode: str) -> list[int]:
    """Each baseline worker's threads: the account's slots each ("naive"), or the slots dealt out
    as evenly as possible ("split": 10 over 3 workers: 4, 3, 3)."""
    workers = sc.hosts * sc.workers_per_host
    if mode == "naive":
        return [sc.slots] * workers
    split = [sc.slots // workers + (1 if i < sc.slots % workers else 0) for i in range(workers)]
    return [max(1, t) for t in split]


def _baseline_env(
    sc: Scenario, redis: RedisServer, sim: Any, queue: str, results_key: str, *, out: Path
) -> dict[str, str]:
    """The baseline workers' environment: none of the fleet's settings, the creation rate split
    across the workers (Celery's per-worker rate_limit)."""
    from bench.fleet import REPO_ROOT

    per_worker_rate = sc.create_per_min / sc.window / (sc.hosts * sc.workers_per_host)  # per second
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REPLICATE_", "FLEET_", "CELERY_", "BASELINE_"))
    }
    env.update(
        {
            "BASELINE_BROKER_URL": redis.url,
            "BASELINE_QUEUE": queue,
            "BASELINE_RESULTS_KEY": results_key,
            "BASELINE_RATE_LIMIT": f"{per_worker_rate * 60:.4f}/m",
            "BASELINE_OUTPUT_DIR": str(out),
            "REPLICATE_BASE_URL": sim.url,
            "REPLICATE_API_TOKEN": "r8_bench_not_a_real_token",
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _start_baseline_workers(
    sc: Scenario,
    hosts: Hosts,
    queue: str,
    tag: str,
    threads_of: list[int],
    env: dict[str, str],
    *,
    into: list[Any],
) -> None:
    """One plain Celery worker process per entry of `threads_of`, spread over the hosts; each
    appended to `into` as soon as it starts (the caller stops them, even if a later one fails)."""
    import sys

    from bench.fleet import REPO_ROOT

    for w, threads in enumerate(threads_of):
        host, k = w % sc.hosts + 1, w // sc.hosts
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.baseline_app",
            "worker",
            "-n",
            f"b{host}-{k}-{tag}@bench",
            "-c",
            str(threads),
            "--pool",
            "threads",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ]
        log_path = hosts.workdir / f"baseline-{tag}-{host}-{k}.log"
        into.append(hosts.popen(host, argv, env=env, log_path=log_path, cwd=REPO_ROOT))


def _wait_baseline_ready(app: Any, queue: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            replies = app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception:  # noqa: BLE001
            replies = {}
        ready = [n for n, qs in replies.items() if any(q.get("name") == queue for q in qs or [])]
        if len(ready) >= count:
            return
    raise RuntimeError(f"baseline workers did not answer on {queue} within {timeout}s")


# --- the matrix -----------------------------------------------------------------------------------
def matrix(
    ns: tuple[int, ...] = (200, 1000, 5000),
    slots: tuple[int, ...] = (10, 60),
    rates: tuple[int, ...] = (600, 60),
    **common: Any,
) -> list[Scenario]:
    return [Scenario(n=n, slots=s, create_per_min=r, **common) for n in ns for s in slots for r in rates]


def save(results: list[RunResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_json() for r in results], indent=1, default=str))


def summary_line(r: RunResult) -> str:
    f = r.figures
    return (
        f"{r.system:15s} {r.scenario['name']:18s} makespan {f['makespan_s']:7.1f}s bound {f['bound_s']:7.1f}s "
        f"eff {f['efficiency']:.3f} vs-ideal {f.get('efficiency_vs_ideal', 0):.3f} peak {f['peak_in_flight']}/{f['slot_limit']} "
        f"win {f['max_creations_in_window']}/{f['create_limit']} 429 {f['http_429']} "
        f"dup {f['duplicate_predictions']} lost {f['images_lost']}"
    )
