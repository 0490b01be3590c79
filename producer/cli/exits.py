"""Exit codes, and the project's errors turned into one clear line each with its exit code, for
every subcommand (FleetGroup, the `producer` group's class)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import click
import redis

from shared.errors import ConfigError, FleetError, InputError, NoWorkerError, Problem, RedisUnavailableError

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES_HELP = """\b
Exit codes:
  0  every item succeeded (or the command did what it was asked)
  1  some item failed, was canceled or substituted
  2  bad input or usage (every problem is listed, one per line)
  3  Redis cannot be reached, or no worker consumes the queue
     (init: the Replicate API cannot be reached)
  130  stopped waiting with Ctrl-C (the batch keeps running)"""

# Problems printed one per line before the rest is summed up by kind.
MAX_PROBLEM_LINES = 50


def format_problems(problems: Sequence[Problem], limit: int = MAX_PROBLEM_LINES) -> list[str]:
    """One `error:` line per problem, at most `limit`; the rest summed up, identical messages
    (ignoring which item) grouped: `... and 4950 more problems (4950 like: field 'prompt': ...)`."""
    lines = [f"error: {problem}" for problem in problems[:limit]]
    rest = problems[limit:]
    if rest:
        kinds = Counter(str(replace(p, index=None, item_id=None)) for p in rest)
        shown = "; ".join(f"{n} like: {message}" for message, n in kinds.most_common(3))
        if len(kinds) > 3:
            shown += f"; and {len(kinds) - 3} other kinds"
        lines.append(f"error: ... and {len(rest)} more problems ({shown})")
    if len(problems) > 1:
        lines.append(f"{len(problems)} problems; nothing was enqueued or written.")
    return lines


class FleetGroup(click.Group):
    """Turns the project's errors into one clear line each and the documented exit codes, for
    every subcommand (also under click's CliRunner)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            for line in format_problems(exc.problems):
                click.echo(line, err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except ConfigError as exc:
            click.echo(f"error: configuration: {exc}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except (RedisUnavailableError, NoWorkerError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            click.echo(f"error: cannot reach Redis: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        except FleetError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_SOME_FAILED)
