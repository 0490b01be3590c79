"""One command for every figure of BENCHMARKS.md.

    .venv/bin/python -m bench.run --all            # the full runs (about 3.5 hours on a quiet machine)
    .venv/bin/python -m bench.run --quick          # small versions of everything (a few minutes)
    .venv/bin/python -m bench.run throughput --n 1000 --slots 60 --rate 600 [--baseline]
    .venv/bin/python -m bench.run modes [--n 90 --slots 10]  # sync vs webhook vs polling, 2 s predictions
    .venv/bin/python -m bench.run modes --mix [--n 5000] [--only sync]  # the seed models' 1-15 s mix
    .venv/bin/python -m bench.run modes --sigma 0      # every prediction exactly 2 s: ideal = bound
    .venv/bin/python -m bench.run faults [--ci] [--only kill,partition]
    .venv/bin/python -m bench.run capacity [--sizes 50,100,200]
    .venv/bin/python -m bench.run fairness [--n 2000] [--small 10]   # a small batch beside a large one
    .venv/bin/python -m bench.run feed [--n 2000]      # one large batch: the feeder vs direct enqueueing
    .venv/bin/python -m bench.run clock                # 60 images, one host's clock +60 s / -60 s

--all runs the wait modes twice: the 2 s batch and the seed models' latency mix (`modes --mix`),
both into bench/results/modes.json and the same "Wait modes" table of the report.

Needs root for the network namespaces (falls back to plain processes and says so). Starts its own
redis-server (port 6390) and stand-in (port 8790) on the hosts' bridge; never touches the shared
Redis. Writes bench/results/*.json, *.png and summary.md; with --all or --quick (or --update-doc)
it also replaces the results section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.hosts import Hosts
from bench.throughput import (
    RESULTS_DIR,
    SYSTEMS,
    RunResult,
    Scenario,
    matrix,
    run_baseline,
    run_fleet,
    seed_mix,
    summary_line,
)

DOC = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def throughput_section(
    hosts: Hosts, redis, sim, scenarios: list[Scenario], *, compare_ns: set[int], plots: bool = True
) -> list[RunResult]:
    """Every scenario through the fleet with webhooks; where sc.n is in compare_ns, also the
    fleet without webhooks (sync mode, and polling on the read budget) and the plain-Celery
    baselines."""
    from bench.plots import plot_runs

    results: list[RunResult] = []
    for sc in scenarios:
        _say(f"== {sc.name}: window {sc.window:g}s latency {sc.real_latency:g}s threads {sc.threads}")
        variants = [sc] + ([replace(sc, mode="sync"), replace(sc, mode="poll")] if sc.n in compare_ns else [])
        runs = []
        for variant in variants:
            runs.append(run_fleet(variant, hosts, redis, sim, log=_say))
            _say(summary_line(runs[-1]))
        if sc.n in compare_ns:
            for mode in ("naive", "split"):
                runs.append(run_baseline(sc, hosts, redis, sim, mode=mode, log=_say))
                _say(summary_line(runs[-1]))
        if plots:
            plot_runs(runs, RESULTS_DIR, sc.name)
        results.extend(runs)
        _save("throughput", results)
    return results


def modes_section(
    hosts: Hosts,
    redis,
    sim,
    *,
    quick: bool,
    n: int | None,
    slots: int | None,
    mix: bool = False,
    only: list[str] | None = None,
    sigma: float | None = None,
) -> list[RunResult]:
    """The same batch with each wait mode (`only`: those of them), in real seconds (time scale 1),
    600 creations and 3000 reads per 60 s, 3 hosts. Default: fast predictions (2 s), where noticing
    an end late costs the most; sync, webhook, poll; full 600 images and 60 slots, quick 90 and 10.
    mix: the items dealt over the seed models (seed_mix, about 1.5-15 s each); sync and webhook
    (polling is the slow mode already at 2 s); full 5000 images and 60 slots, quick 120 and 10."""
    sc = replace(wait_modes_scenario(quick=quick, n=n, slots=slots, mix=mix), latency_sigma=sigma)
    results = []
    for mode in only or (("sync", "webhook") if mix else ("sync", "webhook", "poll")):
        variant = replace(sc, mode=mode)
        _say(f"== wait mode {mode}: {variant.name}, latency {variant.real_latency:g}s, {variant.hosts} hosts")
        results.append(run_fleet(variant, hosts, redis, sim, log=_say))
        f = results[-1].figures
        _say(
            summary_line(results[-1])
            + f" reads/image {f['reads_per_image']} latencies {f['latency_range_s']}s"
        )
    _save("modes", results)
    _say("\n" + modes_table(results))
    return results


def modes_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """modes_section's arguments for each wait-modes run the command asks for: `modes` once (with
    or without --mix); --all both the 2 s batch and the latency mix (each to modes.json, one
    table); --quick the 2 s batch only (the mix's shortest useful run takes minutes per mode)."""
    if not (args.all or args.quick or args.section == "modes"):
        return []
    run = {
        "quick": args.quick,
        "n": (args.n or [None])[0],
        "slots": (args.slots or [None])[0],
        "mix": args.mix,
        "only": args.only.split(",") if args.only and args.section == "modes" else None,
        "sigma": args.sigma,
    }
    if args.all and not args.mix:
        return [run, {**run, "mix": True}]
    return [run]


def wait_modes_scenario(
    *, quick: bool, n: int | None = None, slots: int | None = None, mix: bool = False
) -> Scenario:
    """Issue 16's batch: 60 slots, Replicate's budgets (600 creations and 3000 reads per minute),
    3 hosts, unscaled time (so the latencies are the real seconds the issue names); 2 s predictions
    on one model (600 images), or the seed models' mix (5000 images)."""
    full_n, quick_n = (5000, 120) if mix else (600, 90)
    return Scenario(
        n=n or (quick_n if quick else full_n),
        slots=slots or (10 if quick else 60),
        create_per_min=600,
        read_per_min=3000,
        latency=2.0,
        hosts=3,
        time_scale=1.0,
        mix=seed_mix() if mix else (),
    )


def modes_table(results: list[RunResult]) -> str:
    rows = [
        "| mode | batch | N | slots | mean latency s | makespan s | bound s | efficiency | ideal s "
        "| efficiency vs ideal | reads / image | peak in flight / limit | 429s | duplicates | lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, f = r.scenario, r.figures
        batch = f"{len(s['mix'])}-model mix" if s.get("mix") else "one model"
        rows.append(
            f"| {r.system} | {batch} | {s['n']} | {s['slots']} | {f['mean_latency_s']:.2f} | "
            f"{f['makespan_s']:.1f} | {f['bound_s']:.1f} | {f['efficiency']:.3f} | {f['ideal_s']:.1f} | "
            f"{f['efficiency_vs_ideal']:.3f} | {f['reads_per_image']} | "
            f"{f['peak_in_flight']} / {s['slots']} | {f['http_429']} | {f['duplicate_predictions']} | "
            f"{f['images_lost']} |"
        )
    return "\n".join(rows)


def faults_section(hosts: Hosts, redis, sim, *, ci: bool, only: list[str] | None) -> list[RunResult]:
    from bench.faults import FAULTS, ci_scenario, fault_line, full_scenario, run_fault

    sc, plan = ci_scenario() if ci else full_scenario()
    chosen = only or [f for f in FAULTS]
    if "none" not in chosen:
        chosen = ["none", *chosen]
    results: list[RunResult] = []
    reference = None
    for fault in chosen:
        result = run_fault(fault, sc, plan, hosts, redis, sim, reference_makespan=reference, log=_say)
        if fault == "none":
            reference = result.figures.get("makespan_s")
        _say(fault_line(result))
        results.append(result)
        _save("faults-ci" if ci else "faults", results)
    return results


def fairness_section(hosts: Hosts, redis, sim, n: int, small: int) -> list[RunResult]:
    from bench.fairness import fairness_scenario, run_fairness

    results = [run_fairness(fairness_scenario(n), hosts, redis, sim, small=small, log=_say)]
    _save("fairness", results)
    return results


def feed_section(hosts: Hosts, redis, sim, n: int) -> list[RunResult]:
    from bench.fairness import feed_scenario, run_feed_comparison

    results = run_feed_comparison(feed_scenario(n), hosts, redis, sim, log=_say)
    for r in results:
        _say(summary_line(r))
    _save("feed", results)
    return results


def clock_section(hosts: Hosts, redis, sim) -> list[RunResult]:
    from bench.faults import clock_scenario, fault_line, run_fault

    sc, plan = clock_scenario()
    results: list[RunResult] = []
    reference = None
    for fault in ("none", "clock", "clock_behind"):
        result = run_fault(fault, sc, plan, hosts, redis, sim, reference_makespan=reference, log=_say)
        if fault == "none":
            reference = result.figures.get("makespan_s")
        _say(fault_line(result))
        results.append(result)
        _save("clock", results)
    return results


def capacity_section(hosts: Hosts, redis, sim, sizes: tuple[int, ...], latency: float) -> dict[str, Any]:
    from bench.capacity import sweep

    out = sweep(hosts, redis, sim, sizes=sizes, latency=latency)
    for row in out["rows"]:
        _say(f"capacity {row}")
    _save("capacity", out)
    return out


def _save(name: str, data: Any) -> None:
    """Write bench/results/<name>.json. A list of runs is merged into what is saved: a run replaces
    the saved run of the same system and scenario, the others are kept, so that several partial
    runs (`throughput --n 1000`, then `--n 5000`) add up to one report."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    if isinstance(data, list):
        data = [r.to_json() if isinstance(r, RunResult) else r for r in data]
        new = {_run_key(d) for d in data}
        saved = json.loads(path.read_text()) if path.exists() else []
        data = [d for d in saved if _run_key(d) not in new] + data
    path.write_text(json.dumps(data, indent=1, default=str))


def _run_key(run: dict[str, Any]) -> tuple[str, str]:
    return run["system"], run["scenario"].get("name", "")


# --- markdown -------------------------------------------------------------------------------------
def throughput_table(results: list[RunResult]) -> str:
    from bench.measure import bound

    rows = [
        "| system | N | slots | creations / window | window s | latency s | makespan s | bound s | efficiency "
        "| ideal s | efficiency vs ideal | slots busy while full | peak in flight / limit "
        "| max creations in a window / limit | 429s | duplicates | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, f = r.scenario, r.figures
        # recomputed from the run's own figures, so that older results read the same way
        b = bound(
            s["n"],
            latency=f["mean_latency_s"],
            slots=s["slots"],
            create_limit=s["create_per_min"],
            window=s["window"],
        )
        ideal = f.get("ideal_s")
        ideal_cells = "- | -" if ideal is None else f"{ideal:.1f} | {ideal / f['makespan_s']:.3f}"
        rows.append(
            f"| {r.system} | {s['n']} | {s['slots']} | {s['create_per_min']} | {s['window']:g} | "
            f"{f['mean_latency_s']:.2f} | {f['makespan_s']:.1f} | {b['bound']:.1f} | "
            f"{b['bound'] / f['makespan_s']:.3f} | "
            f"{ideal_cells} | "
            f"{_steady(r, b)} | "
            f"{f['peak_in_flight']} / {s['slots']} | {f['max_creations_in_window']} / {s['create_per_min']} | "
            f"{f['http_429']} | {f['duplicate_predictions']} | {f['images_lost']} |"
        )
    return "\n".join(rows)


def _steady(r: RunResult, b: dict[str, float]) -> str:
    """Slot use while all slots were busy: shown where the slots are the binding limit and the
    system kept to them."""
    from bench.throughput import steady_slot_use

    if b["by_slots"] < b["by_rate"] or (r.figures.get("peak_in_flight") or 0) > r.scenario["slots"]:
        return "-"
    value = r.figures.get("steady_slot_use")
    if value is None and r.series.get("in_flight"):
        value = steady_slot_use(r.series["in_flight"], r.scenario["slots"])
    return "-" if value is None else f"{value:.3f}"


def cost_table(results: list[RunResult]) -> str:
    rows = [
        "| system | scenario | workers | worker CPU s / 1000 images | peak RSS / worker MB | Redis commands / image (incl. inside Lua) "
        "| Redis round trips / image | Redis CPU s / 1000 images | API reads / image | top Redis commands / image |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if not r.system.startswith("fleet"):
            continue
        f = r.figures
        top = ", ".join(f"{k} {v}" for k, v in list(f.get("redis_top_cmds_per_image", {}).items())[:5])
        rows.append(
            f"| {r.system} | {r.scenario['name']} | {f['workers']} | {f['worker_cpu_s_per_1000']} | {f['worker_peak_rss_mb']} | "
            f"{f['redis_cmds_per_image']} | {f.get('redis_round_trips_per_image', '-')} | {f['redis_cpu_s_per_1000']} | {f['reads_per_image']} | {top} |"
        )
    return "\n".join(rows)


def faults_table(results: list[RunResult]) -> str:
    rows = [
        "| fault | lost | duplicate predictions | extra creations | peak in flight / limit "
        "| max creations in a window / limit | 429s | 5xx | makespan s | slowdown s | recovery s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f = r.figures
        if "skipped" in f:
            rows.append(f"| {r.system} | skipped: {f['skipped']} |||||||||")
            continue
        rows.append(
            f"| {r.system} | {f['images_lost']} | {f['duplicate_predictions']} | {f['extra_creations']} | "
            f"{f['peak_in_flight']} / {f['slot_limit']} | {f['max_creations_in_window']} / {f['create_limit']} | "
            f"{f['http_429']} | {f['errors_5xx']} | {f['makespan_s']} | {f['slowdown_s'] if f['slowdown_s'] is not None else '-'} | "
            f"{f['recovery_s'] if f['recovery_s'] is not None else '-'} |"
        )
    return "\n".join(rows)


def capacity_table(cap: dict[str, Any]) -> str:
    rows = [
        "| threads (= slots) | images | peak in flight | CPU cores (mean) | CPU s / 1000 images | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in cap.get("rows", []):
        rows.append(
            f"| {row['threads']} | {row['images']} | {row['peak_in_flight']} | {row['cpu_cores']} | "
            f"{row['cpu_s_per_1000']} | {row['peak_rss_mb']} |"
        )
    rows.append(
        f"\nMost in-flight predictions one worker process held under one core: "
        f"**{cap.get('max_in_flight_under_one_core')}**"
    )
    return "\n".join(rows)


def summary(
    label: str,
    command: str,
    *,
    throughput=None,
    faults=None,
    capacity=None,
    isolated=True,
    when: str | None = None,
) -> str:
    when = when or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        f"_{label}; `{command}`; {when}; "
        f"hosts: {'network namespaces' if isolated else 'PLAIN PROCESSES (namespaces not permitted)'}._",
        "",
    ]
    if throughput:
        parts += [
            "### Throughput against the bound",
            "",
            throughput_table(throughput),
            "",
            "### Cost of running the fleet",
            "",
            cost_table(throughput),
            "",
        ]
        stems = sorted({r.scenario["name"] for r in throughput})
        parts += (
            ["### Plots", ""]
            + [
                f"- {s}: ![in flight](bench/results/{s}-inflight.png) "
                f"![creations per window](bench/results/{s}-window.png)"
                for s in stems
            ]
            + [""]
        )
    if capacity:
        parts += ["### In-flight predictions per worker process", "", capacity_table(capacity), ""]
    if faults:
        parts += ["### Faults", "", faults_table(faults), ""]
        for r in faults:
            log = r.figures.get("fault_log")
            if log:
                parts.append(f"- {r.system}: " + "; ".join(log[:6]) + (" ..." if len(log) > 6 else ""))
        parts.append("")
    return "\n".join(parts)


def scheduling_summary(
    fairness: list[RunResult] | None, feed: list[RunResult] | None, clock: list[RunResult] | None
) -> str:
    """The schedule's figures: fair share, what the feeder costs, one host's clock off."""
    parts: list[str] = []
    if fairness:
        parts += [
            "### Fair share and priorities (a small batch beside a large one)",
            "",
            "| large batch | slots | small batch | alone s | beside (normal) s | ratio | high priority s | ratio "
            "| large batch still running | duplicates |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in fairness:
            f, sc = r.figures, r.scenario
            parts.append(
                f"| {sc['n']} | {sc['slots']} | {f['small']} | {f['small_alone_s']} | {f['small_beside_s']} | "
                f"{f['beside_ratio']} | {f['small_high_s']} | {f['high_ratio']} | {f['big_still_running']} | "
                f"{f['duplicate_predictions']} |"
            )
        parts.append("")
    if feed:
        parts += ["### One large batch: the feeder against direct enqueueing", "", throughput_table(feed), ""]
    if clock:
        parts += ["### One host's clock 60 s off (issue 13.10)", "", faults_table(clock), ""]
    return "\n".join(parts)


def update_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in doc or END not in doc:
        doc += f"\n{START}\n{END}\n"
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "section",
        nargs="?",
        choices=("throughput", "modes", "faults", "capacity", "fairness", "feed", "clock", "report"),
        help="report: rebuild summary.md and BENCHMARKS.md from the saved results, run nothing",
    )
    p.add_argument("--all", action="store_true", help="every figure, full size")
    p.add_argument("--quick", action="store_true", help="every figure, small (N=200, CI faults)")
    p.add_argument("--n", type=int, action="append")
    p.add_argument("--slots", type=int, action="append")
    p.add_argument("--rate", type=int, action="append", help="creations per (scaled) minute")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also run the comparisons: the fleet without webhooks (sync, polling) and plain Celery",
    )
    p.add_argument("--target-rate", type=float, default=10.0, help="real creations/s the time scale aims at")
    p.add_argument("--ci", action="store_true", help="faults: the small CI version")
    p.add_argument("--only", help="faults, modes: comma-separated subset (modes: sync,webhook,poll)")
    p.add_argument(
        "--mix", action="store_true", help="modes: items spread over the seed models (1-15 s), N=5000"
    )
    p.add_argument(
        "--sigma",
        type=float,
        help="modes: every prediction's lognormal spread (default the stand-in's 0.3; 0: exactly the mean)",
    )
    p.add_argument("--sizes", default="50,100,200,400", help="capacity: threads per process to try")
    p.add_argument("--small", type=int, default=10, help="fairness: images in the small batch")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--update-doc", action="store_true", help="write the summary into BENCHMARKS.md")
    p.add_argument("--no-isolation", action="store_true", help="plain processes instead of namespaces")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not (args.all or args.quick or args.section):
        p.error("give a section, --all or --quick")
    if args.section == "modes" and args.only and not set(args.only.split(",")) <= set(SYSTEMS):
        p.error(f"modes --only: a subset of {','.join(SYSTEMS)}")

    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.section == "report":
        return report_saved()
    if args.all or args.quick:  # a whole run stands alone: no figures of earlier runs beside it
        _clear_saved()
    with Hosts(max(args.hosts, 3), workdir=None, isolate=False if args.no_isolation else None) as hosts:
        redis = hosts.start_redis(6390)
        sim = hosts.start_sim(8790)
        common = {"hosts": args.hosts, "target_rate": args.target_rate}
        if args.all or args.quick or args.section == "throughput":
            if args.all:
                scenarios = matrix(**common)
                compare_ns = {200, 1000}
            elif args.quick:
                scenarios = matrix(ns=(200,), **common)
                compare_ns = {200}
            else:
                scenarios = matrix(
                    ns=tuple(args.n or [200]),
                    slots=tuple(args.slots or [10, 60]),
                    rates=tuple(args.rate or [600, 60]),
                    **common,
                )
                compare_ns = set(args.n or [200]) if args.baseline else set()
            throughput_section(hosts, redis, sim, scenarios, compare_ns=compare_ns)
        for modes_run in modes_runs(args):
            modes_section(hosts, redis, sim, **modes_run)
        if args.all or args.quick or args.section == "capacity":
            sizes = tuple(int(x) for x in args.sizes.split(","))
            if args.quick:
                sizes = (50, 100)
            capacity_section(hosts, redis, sim, sizes, latency=20.0 if args.all else 10.0)
        if args.all or args.quick or args.section == "faults":
            only = args.only.split(",") if args.only else None
            faults_section(hosts, redis, sim, ci=args.quick or args.ci, only=only)
        big = (args.n or [300 if args.quick else 2000])[0]
        if args.all or args.quick or args.section == "fairness":
            fairness_section(hosts, redis, sim, big, args.small)
        if args.all or args.quick or args.section == "feed":
            feed_section(hosts, redis, sim, big)
        if args.all or args.quick or args.section == "clock":
            clock_section(hosts, redis, sim)
        isolated = hosts.isolated
    label = (
        "full run" if args.all else ("quick run (small sizes, preliminary)" if args.quick else "partial run")
    )
    _record_run(label, command, isolated)
    return report_saved(to_doc=args.all or args.quick or args.update_doc)


def _clear_saved() -> None:
    for saved in RESULTS_DIR.glob("*.json"):
        saved.unlink()


def _record_run(label: str, command: str, isolated: bool) -> None:
    """Add the command to bench/results/runs.json: the commands whose results are saved."""
    path = RESULTS_DIR / "runs.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    commands = [c for c in saved.get("commands", []) if c != command] + [command]
    _save(
        "runs",
        {
            "label": label,
            "commands": commands,
            "isolated": isolated and saved.get("isolated", True),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )


def report_saved(*, to_doc: bool = True) -> int:
    """summary.md (and BENCHMARKS.md's results section, with to_doc) from bench/results/*.json, as
    saved by the runs (their label and commands are kept in bench/results/runs.json)."""

    def load(name: str) -> Any:
        path = RESULTS_DIR / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def runs(name: str) -> list[RunResult] | None:
        data = load(name)
        return [RunResult(**d) for d in data] if data else None

    def scenario_order(r: RunResult) -> tuple:
        s = r.scenario
        return s["n"], s["slots"], -s["create_per_min"], not r.system.startswith("fleet")

    throughput = sorted(runs("throughput") or [], key=scenario_order) or None
    meta = load("runs") or {}
    commands = "`, `".join(meta.get("commands", ["python -m bench.run report"]))
    text = summary(
        meta.get("label", "saved results"),
        commands,
        throughput=throughput,
        faults=runs("faults") or runs("faults-ci"),
        capacity=load("capacity"),
        isolated=meta.get("isolated", True),
        when=meta.get("when"),
    )
    text += scheduling_summary(runs("fairness"), runs("feed"), runs("clock"))
    modes = runs("modes")
    if modes:
        text += "\n### Wait modes (`bench.run modes`)\n\n" + modes_table(modes) + "\n"
    (RESULTS_DIR / "summary.md").write_text(text)
    if to_doc:
        update_doc(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
