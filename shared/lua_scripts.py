"""Every Lua script of the project, kept and loaded one way.

Each script is one `.lua` file per operation in its owner's `lua` package (`shared/limiter/lua/`,
`shared/lua/` for the ledger, `workers/lua/`): package data, read with `importlib.resources`, so
it ships in the wheel beside the code that runs it. An owner registers all of its scripts on its
client in one call (`register`, in its constructor). Calls are EVALSHA; after a Redis restart or
failover (the script cache is empty) redis-py answers NOSCRIPT with SCRIPT LOAD and retries, once.

A folder may have a prelude (the limiter's `common.lua`: its keys, its config and the functions
every operation shares). It is sent in front of each script, so Redis numbers the lines of the
whole text (`user_script:412`); an error is translated back to the file and line it comes from
(`acquire.lua:38`, or `common.lua:40` for a line of the prelude), in the same exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import redis
from redis.commands.core import Script

# How Redis names a line of the script it runs: "user_script:12: ..." in a Lua error, and
# "... on @user_script:12." after any error raised while a script runs (Redis 7).
_LOCATION = re.compile(r"user_script:(\d+)")


@dataclass(frozen=True)
class ScriptSource:
    """The text sent to Redis, and which file each of its lines comes from."""

    name: str
    text: str
    parts: tuple[tuple[str, int], ...]  # (file name, number of lines), in the order sent

    def locate(self, line: int) -> str:
        """`file.lua:N` for line `line` of the text sent."""
        first = 1
        for file_name, count in self.parts:
            if line < first + count:
                return f"{file_name}:{line - first + 1}"
            first += count
        return f"{self.parts[-1][0]}:?{line}"

    def translate(self, message: str) -> str:
        return _LOCATION.sub(lambda m: self.locate(int(m.group(1))), message)


@cache
def source(
    package: str, name: str, prelude: str | None = None, inserts: tuple[tuple[str, str], ...] = ()
) -> ScriptSource:
    """`<name>.lua` of `package` (a dotted package name), after `<prelude>.lua` if given and
    then each (package, file) of `inserts` (another owner's functions this script calls, e.g.
    the budget's reservation inside the limiter's token script). Read once per process."""
    names = ([(package, prelude)] if prelude else []) + list(inserts) + [(package, name)]
    texts = []
    for owner, file_name in names:
        text = files(owner).joinpath(f"{file_name}.lua").read_text(encoding="utf-8")
        texts.append(text if text.endswith("\n") else text + "\n")
    parts = tuple((f"{n}.lua", t.count("\n")) for (_, n), t in zip(names, texts))
    return ScriptSource(name=name, text="".join(texts), parts=parts)


class LuaScript:
    """One script, bound to a client or (`client=None`) unbound: each call of an unbound script
    names its client (`client=`, e.g. whichever connection kombu hands out). Call it like a
    redis-py Script; a `ResponseError` it raises names the file and line (`client=` a pipeline:
    the error surfaces at `execute()`, as is)."""

    def __init__(self, client: redis.Redis | None, src: ScriptSource):
        self.source = src
        self._client = client
        # Bytes: redis-py's Script encodes a str with its registered client's encoder, which an
        # unbound script does not have (UTF-8 is that encoder's default). The None is only ever
        # used by a call without `client=`, which an unbound script does not make.
        self._script = Script(client, src.text.encode())  # type: ignore[arg-type]

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        try:
            return self._script(keys=keys, args=args, client=client)
        except redis.ResponseError as exc:
            self._locate(exc)
            raise

    @property
    def sha(self) -> str:
        """Its SHA1, for an EVALSHA sent in a pipeline beside a command that is not a script (a
        call with `client=` a pipeline makes redis-py ask SCRIPT EXISTS first: one more request)."""
        return str(self._script.sha)

    def load(self) -> None:
        """SCRIPT LOAD now (at worker start), so the first call is one EVALSHA."""
        assert self._client is not None, "an unbound script is loaded by its first call"
        try:
            self._client.script_load(self.source.text)
        except redis.ResponseError as exc:  # a compile error names its line too
            self._locate(exc)
            raise

    def _locate(self, exc: redis.ResponseError) -> None:
        exc.args = (self.source.translate(str(exc)), *exc.args[1:])


def register(
    client: redis.Redis,
    package: str,
    names: Iterable[str],
    *,
    prelude: str | None = None,
    inserts: Mapping[str, tuple[tuple[str, str], ...]] | None = None,
) -> dict[str, LuaScript]:
    """The scripts `names` of `package`, each bound to `client`, by name; `inserts`: script name
    -> the (package, file) sent between the prelude and that script."""
    inserts = inserts or {}
    return {name: LuaScript(client, source(package, name, prelude, inserts.get(name, ()))) for name in names}
