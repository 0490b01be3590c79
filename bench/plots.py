"""PNG plots of a run (matplotlib, no screen): in flight over time and creations per window,
each against its limit, the fleet and the baseline on the same axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on these machines
import matplotlib.pyplot as plt  # noqa: E402

from bench.throughput import RunResult  # noqa: E402

COLOURS = {
    "fleet": "tab:blue",
    "fleet-sync": "tab:purple",
    "fleet-polling": "tab:green",
    "baseline-naive": "tab:red",
    "baseline-split": "tab:orange",
}


def _step(points: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for t, k in sorted(points):
        xs.append(t)
        ys.append(k)
    return xs, ys


def plot_runs(runs: Sequence[RunResult], out_dir: Path, stem: str) -> list[Path]:
    """Two PNGs for runs of one scenario: `<stem>-inflight.png` and `<stem>-window.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not runs:
        return []
    sc = runs[0].scenario
    paths = []

    fig, ax = plt.subplots(figsize=(9, 4))
    for run in runs:
        xs, ys = _step(run.series.get("in_flight", []))
        ax.step(xs, ys, where="post", lw=1, color=COLOURS.get(run.system), label=run.system)
    ax.axhline(sc["slots"], color="black", ls="--", lw=1, label=f"limit {sc['slots']}")
    ax.set(
        xlabel="seconds since submission",
        ylabel="predictions in flight (at the stand-in)",
        title=f"In flight: N={sc['n']}, {sc['slots']} slots, {sc['create_per_min']} creations/window "
        f"({sc['window']:g} s), latency {sc['real_latency']:g} s",
    )
    ax.legend(loc="upper right")
    path = out_dir / f"{stem}-inflight.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(9, 4))
    for run in runs:
        xs, ys = _step(run.series.get("window_counts", []))
        ax.plot(xs, ys, lw=1, color=COLOURS.get(run.system), label=run.system)
    ax.axhline(sc["create_per_min"], color="black", ls="--", lw=1, label=f"limit {sc['create_per_min']}")
    ax.set(
        xlabel="seconds since submission",
        ylabel=f"creations in the last {sc['window']:g} s",
        title=f"Creations per sliding window: N={sc['n']}, {sc['slots']} slots",
    )
    ax.legend(loc="upper right")
    path = out_dir / f"{stem}-window.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
