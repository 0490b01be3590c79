"""What `submit` shows before anything is recorded (the routing plan, notes, warnings, the
estimate against the spending limits), and the whole plan of a dry run."""

from __future__ import annotations

import json

import click

from producer import api
from shared.budget import price_micro, usd
from shared.budget.money import usd_number
from shared.common import format_usd


def _show_plan(plan: api.Batch, *, err: bool) -> None:
    """Before anything is recorded or enqueued: what will run, and what routing changed."""
    _print_notes(plan)
    _print_compact_plan(plan, err=err)
    if plan.max_cost is not None or plan.daily_limit is not None:
        from shared.routing import estimate_cost, max_cost

        requests, registry = plan.requests or [], plan.model_registry()
        for line in _limit_lines(plan, estimate_cost(requests, registry), max_cost(requests, registry)):
            click.echo(line, err=err)


def _print_dry_run(batch: api.Batch, as_json: bool) -> None:
    _print_notes(batch)
    if as_json:  # the text plan lists the warnings itself
        _print_warnings(batch.requests or [])
    _print_plan(batch, as_json)


def _print_warnings(requests) -> None:
    for request in requests:
        for warning in getattr(request, "warnings", ()) or ():
            click.echo(f"warning: item {request.index} (id {request.id!r}): {warning}", err=True)


def _print_notes(batch: api.Batch) -> None:
    for note in batch.notes:
        click.echo(f"note: {note}", err=True)
    same = batch.duplicate_of
    if same is not None:
        click.echo(
            f"note: the same items were submitted as batch {same.id} ({api.describe_batch(same)}); "
            "this new batch makes (and pays for) them again",
            err=True,
        )


def _print_compact_plan(batch: api.Batch, *, err: bool) -> None:
    """The dry run's plan without the route list, each section cut at a few lines."""
    from shared.routing import describe_plan

    for line in describe_plan(batch.requests or [], batch.registry, max_lines=10, routes=False):
        click.echo(line, err=err)


def _print_plan(batch: api.Batch, as_json: bool) -> None:
    from shared.routing import describe_plan, estimate_cost, max_cost, unpriced_items

    requests = batch.requests or []
    registry = batch.model_registry()
    cost = estimate_cost(requests, registry)
    worst = max_cost(requests, registry)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch": batch.id,
                    "items": len(requests),
                    "dry_run": True,
                    "estimated_cost_usd": round(cost, 4),
                    "max_cost_usd": round(worst, 4),
                    "price_unknown_items": unpriced_items(requests, registry),
                    "batch_limit_usd": usd_number(batch.max_cost),
                    "daily_budget_usd": usd_number(batch.daily_limit),
                    "plan": [r.to_dict() for r in requests],
                }
            )
        )
        return
    plan = describe_plan(requests, registry)
    click.echo(plan if isinstance(plan, str) else "\n".join(plan))
    for line in _limit_lines(batch, cost, worst):
        click.echo(line)
    click.echo("Dry run: nothing was recorded or enqueued.")


def _limit_lines(batch: api.Batch, cost: float, worst: float) -> list[str]:
    """The estimate against the spending limits in force (a dry run)."""
    lines = []
    for name, limit in (("batch limit (--max-cost)", batch.max_cost), ("daily budget", batch.daily_limit)):
        if limit is None:
            continue
        estimate, most = price_micro(cost), price_micro(worst)
        if most <= limit:
            verdict = "fits, fallbacks included"
        elif estimate <= limit:
            verdict = f"fits if few fallbacks run (up to {format_usd(worst)} with every fallback)"
        else:
            verdict = (
                f"does NOT fit: about {estimate * 100 // max(limit, 1) - 100}% over; the items past it "
                "would wait as held"
            )
        lines.append(f"{name}: {usd(limit)} USD; estimate {format_usd(cost)}: {verdict}")
    return lines
