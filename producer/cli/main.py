"""The `producer` command: the group with every command module's commands added, and `main`,
the console script's entry point (`producer = "producer.cli:main"`)."""

from __future__ import annotations

import sys

from producer.cli.app import cli
from producer.cli.batch_actions import cancel, retry
from producer.cli.batches import list_, results, status
from producer.cli.budget import budget
from producer.cli.fetching import fetch
from producer.cli.fleet import flower, info, metrics
from producer.cli.following import wait
from producer.cli.init import init
from producer.cli.limits import limits
from producer.cli.models import models
from producer.cli.submit import submit

for command in (
    submit,
    wait,
    status,
    results,
    fetch,
    cancel,
    retry,
    list_,
    info,
    budget,
    limits,
    models,
    init,
    flower,
    metrics,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    # Recorded text that UTF-8 cannot encode (a lone surrogate in a batch from before submit refused
    # it) is printed escaped (\ud83e) by `results` and friends, never a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    cli.main(args=argv, prog_name="producer")
