"""Several "hosts" on one machine: Linux network namespaces on a private bridge.

    with Hosts(3) as hosts:                      # namespaces fbench-h1..h3, bridge fbench-br0
        redis = hosts.start_redis()              # redis-server bound to the bridge address
        sim = hosts.start_sim(create_limit=60)   # the stand-in, bound to the bridge address
        proc = hosts.popen(1, ["celery", ...], env=..., log_path=...)   # runs inside host 1
        hosts.cut(2); ...; hosts.restore(2)      # host 2 loses its network, then gets it back

Addresses: the bridge (the "server" side, in the root namespace) is 10.77.0.1/24, host i is
10.77.0.(10+i). Nothing here ever talks to any other address: Redis and the stand-in listen on the
bridge address only, and the namespaces have no default route, so a host can reach exactly the
bridge and nothing else.

Teardown always runs: on leaving the `with` block (also on exceptions), at interpreter exit
(atexit) and on SIGTERM/SIGINT/SIGHUP (turned into SystemExit/KeyboardInterrupt so the `with`
block unwinds). A crashed earlier run's namespaces, links and processes are found by their name
prefix and removed before a new run starts.

Where namespaces are not permitted (not root, no `ip`, a container without CAP_NET_ADMIN), every
host is a plain process group on 127.0.0.1: the harness says so (`hosts.isolated` is False and a
warning is printed) and network cuts are not available (`cut` raises HostsError).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import RedisServer, kill_tracked, stop_group, track

PREFIX = "fbench"
SUBNET = "10.77.0"


class HostsError(RuntimeError):
    """The harness could not set up or drive its hosts (a tool problem, not a project error)."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise HostsError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def namespaces_permitted() -> tuple[bool, str]:
    """(True, "") if `ip netns` works here; else (False, why)."""
    if os.geteuid() != 0:
        return False, "not root"
    if shutil.which("ip") is None:
        return False, "no `ip` command (iproute2)"
    probe = f"{PREFIX}-probe{os.getpid()}"
    result = _run(["ip", "netns", "add", probe], check=False)
    if result.returncode != 0:
        return False, result.stderr.strip() or "ip netns add failed"
    _run(["ip", "netns", "del", probe], check=False)
    return True, ""


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces and links left by a crashed run (by name prefix); kill what ran in them."""
    removed: list[str] = []
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return removed
    listing = _run(["ip", "netns", "list"], check=False).stdout.split("\n")
    for line in listing:
        name = line.split(" ")[0].strip()
        if not name.startswith(prefix + "-"):
            continue
        pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            link = parts[1].strip().split("@")[0]
            if link.startswith(prefix + "-"):
                _run(["ip", "link", "del", link], check=False)
                removed.append(link)
    return removed


def cleanup_dead_owners(family: str) -> list[str]:
    """Remove `<family><pid>-...` namespaces and links whose owning process <pid> is gone (test
    runs name their hosts after their pid so that several can run at once)."""
    removed: list[str] = []
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return removed
    names = [line.split(" ")[0] for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines()]
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    owners = set()
    for name in names:
        head = name.split("-", 1)[0]
        if head.startswith(family) and head[len(family) :].isdigit():
            owners.add(head)
    for owner in owners:
        pid = int(owner[len(family) :])
        if not Path(f"/proc/{pid}").exists():
            removed += cleanup_stale(owner)
    return removed


SKEWED_CLOCK_PATH = Path(__file__).resolve().parent / "skewed_clock"


def faketime_env(offset: float, pythonpath: str | None = None) -> dict[str, str]:
    """Environment that runs a process's wall clock `offset` s ahead (Debian's libfaketime), as on
    a host whose clock is wrong: only CLOCK_REALTIME (time.time, datetime.now, what Celery's ETAs
    and kombu's visibility stamps read); the monotonic clock that timed waits use stays true
    (faking it too made every `Event.wait(timeout)` of the process hang, which no real host does;
    bench/skewed_clock/sitecustomize.py works around libfaketime's broken sleeps). `pythonpath`:
    the PYTHONPATH the process would have had, kept after that folder."""
    import glob

    libs = sorted(
        glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
        + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1")
    )
    if not libs:
        raise HostsError("libfaketime is not installed (apt-get install faketime)")
    path = str(SKEWED_CLOCK_PATH) + (os.pathsep + pythonpath if pythonpath else "")
    return {
        "LD_PRELOAD": libs[0],
        "FAKETIME": f"{offset:+g}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": path,
    }


@dataclass
class Host:
    index: int
    name: str  # namespace name, or a label in fallback mode
    address: str
    veth: str | None = None  # root-namespace end of the host's cable


class Hosts:
    """K hosts as network namespaces (or plain processes where that is not permitted)."""

    def __init__(
        self,
        count: int,
        *,
        workdir: str | Path | None = None,
        isolate: bool | None = None,
        prefix: str = PREFIX,
        subnet: str = SUBNET,
        quiet: bool = False,
    ):
        if count < 1 or count > 200:
            raise ValueError("between 1 and 200 hosts")
        self.count = count
        self.prefix = prefix
        self.bridge = f"{prefix}-br0"
        self.subnet = subnet
        self.bridge_address = f"{subnet}.1"
        self.quiet = quiet
        self._own_workdir = workdir is None
        self.keep_workdir = bool(os.environ.get("FLEET_BENCH_KEEP"))  # keep logs for a post-mortem
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        permitted, why = namespaces_permitted() if isolate is not False else (False, "disabled by the caller")
        if isolate and not permitted:
            raise HostsError(f"network namespaces are not permitted here: {why}")
        self.isolated = permitted
        self.why_not_isolated = why
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen] = []
        self.redis_servers: list[RedisServer] = []
        self.sims: list[Any] = []
        self._closed = False
        self._cut: set[int] = set()

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Hosts:
        _install_signal_handlers()
        _live.add(self)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server_address(self) -> str:
        """Where Redis and the stand-in listen, as the hosts see it."""
        return self.bridge_address if self.isolated else "127.0.0.1"

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"[hosts] {text}", file=sys.stderr, flush=True)

    def _create(self) -> None:
        if not self.isolated:
            self._say(
                f"network namespaces not available ({self.why_not_isolated}): hosts are plain "
                "processes on 127.0.0.1; network cuts are not possible in this mode"
            )
            self.hosts = [Host(i, f"host{i}", "127.0.0.1") for i in range(1, self.count + 1)]
            return
        self._take_lock()
        stale = cleanup_stale(self.prefix)
        if stale:
            self._say(f"removed what a crashed earlier run left: {', '.join(stale)}")
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in range(1, self.count + 1):
            ns = f"{self.prefix}-h{i}"
            veth = f"{self.prefix}-v{i}"
            address = f"{self.subnet}.{10 + i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", veth, "master", self.bridge])
            _run(["ip", "link", "set", veth, "up"])
            _run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0"])
            _run(["ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up"])
            _run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
            self.hosts.append(Host(i, ns, address, veth))
        self._say(
            f"{self.count} hosts {self.subnet}.11..{self.subnet}.{10 + self.count} on bridge "
            f"{self.bridge} ({self.bridge_address})"
        )

    @property
    def _lock_path(self) -> Path:
        return Path(tempfile.gettempdir()) / f"{self.prefix}-hosts.pid"

    def _take_lock(self) -> None:
        """One run per prefix at a time: a second run would remove the first one's hosts as stale."""
        path = self._lock_path
        try:
            owner = int(path.read_text().strip())
        except (OSError, ValueError):
            owner = None
        if owner and owner != os.getpid() and Path(f"/proc/{owner}").exists():
            raise HostsError(
                f"another run (pid {owner}) is using the {self.prefix}-* hosts; wait for it "
                f"or use another prefix/subnet"
            )
        path.write_text(str(os.getpid()))
        self._locked = True

    def close(self) -> None:
        """Stop every process, the servers, then remove namespaces and links. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in self.processes:
            stop_group(proc)
        for sim in self.sims:
            try:
                sim.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for server in self.redis_servers:
            server.kill(signal.SIGKILL)
        if self.isolated:
            for host in self.hosts:
                for pid in _run(["ip", "netns", "pids", host.name], check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                _run(["ip", "netns", "del", host.name], check=False)
                if host.veth:
                    _run(["ip", "link", "del", host.veth], check=False)
            _run(["ip", "link", "del", self.bridge], check=False)
        if getattr(self, "_locked", False):
            try:
                if self._lock_path.read_text().strip() == str(os.getpid()):
                    self._lock_path.unlink()
            except OSError:
                pass
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _live.discard(self)

    # --- servers in the root namespace, on the bridge address -----------------------------------
    def start_redis(
        self, port: int = 6390, *, appendonly: bool = True, extra: Sequence[str] = ()
    ) -> RedisServer:
        server = RedisServer(
            self.server_address, port, self.workdir / f"redis-{port}", appendonly, extra=list(extra)
        )
        self.redis_servers.append(server)
        return server.start()

    def start_sim(self, port: int = 8790, **options: Any):
        from replicate_sim.control import start_sim

        sim = start_sim(port, host=self.server_address, log_path=self.workdir / f"sim-{port}.log", **options)
        self.sims.append(sim)
        track(sim.process)
        return sim

    # --- processes on a host --------------------------------------------------------------------
    def host(self, index: int) -> Host:
        return self.hosts[index - 1]

    def command(self, index: int, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run on host `index`."""
        argv = list(argv)
        if self.isolated:
            argv = ["ip", "netns", "exec", self.host(index).name, *argv]
        return argv

    def popen(
        self,
        index: int,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        cwd: str | Path | None = None,
        clock_offset: float | None = None,
    ) -> subprocess.Popen:
        """Start argv on host `index` in its own process group; output to log_path (or discarded).
        With clock_offset, the process's wall clock runs that many seconds ahead (libfaketime,
        preloaded directly so the process keeps its pid; see faketime_env)."""
        child_env = dict(os.environ if env is None else env)
        if clock_offset:
            child_env.update(faketime_env(clock_offset, child_env.get("PYTHONPATH")))
        full = self.command(index, argv)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
            )
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        self.processes.append(proc)
        track(proc)
        return proc

    def run(
        self, index: int, argv: Sequence[str], *, timeout: float = 30.0, **kwargs: Any
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(index, argv), capture_output=True, text=True, timeout=timeout, **kwargs
        )

    # --- faults ---------------------------------------------------------------------------------
    def cut(self, index: int, *, mode: str = "down", loss: float = 100.0) -> None:
        """Cut host `index` off the network: "down" = its cable unplugged (ip link set down on
        both ends), "loss" = tc netem dropping `loss` % of its packets (connections hang instead
        of failing fast, like a real partition)."""
        if not self.isolated:
            raise HostsError("network cuts need network namespaces, which are not available here")
        host = self.host(index)
        if mode == "down":
            _run(["ip", "link", "set", host.veth, "down"])
        elif mode == "loss":
            try:
                _run(["tc", "qdisc", "replace", "dev", host.veth, "root", "netem", "loss", f"{loss}%"])
                _run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        host.name,
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        "eth0",
                        "root",
                        "netem",
                        "loss",
                        f"{loss}%",
                    ]
                )
            except HostsError as exc:
                _run(["tc", "qdisc", "del", "dev", host.veth, "root"], check=False)
                raise HostsError(
                    f"tc netem is not available in this kernel ({exc}); use mode='down'"
                ) from None
        else:
            raise ValueError(f"mode must be 'down' or 'loss', not {mode!r}")
        self._cut.add(index)

    def restore(self, index: int) -> None:
        if not self.isolated:
            return
        host = self.host(index)
        _run(["ip", "link", "set", host.veth, "up"], check=False)
        _run(["ip", "netns", "exec", host.name, "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        _run(["tc", "qdisc", "del", "dev", host.veth, "root"], check=False)
        self._cut.discard(index)
        # The cable is back once the link is up on the bridge side (carrier, forwarding state).
        state = Path(f"/sys/class/net/{host.veth}/operstate")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and state.exists() and state.read_text().strip() != "up":
            time.sleep(0.05)

    def reachable(self, index: int, port: int, timeout: float = 1.0, attempts: int = 3) -> bool:
        """Can host `index` open a TCP connection to the bridge address on `port`? (a few tries:
        right after a link comes back, the first SYN can go out before the neighbour is known)"""
        probe = (
            "import socket,sys,time\nfor _ in range(int(sys.argv[3])):\n try:\n"
            f"  socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout={timeout}).close()\n"
            "  sys.exit(0)\n except OSError:\n  time.sleep(0.2)\nsys.exit(1)"
        )
        result = self.run(
            index,
            [sys.executable, "-c", probe, self.server_address, str(port), str(attempts)],
            timeout=attempts * (timeout + 0.2) + 10,
        )
        return result.returncode == 0


# --- process-wide safety net ----------------------------------------------------------------------
_live: weakref.WeakSet[Hosts] = weakref.WeakSet()
_handlers_installed = False


def _close_everything() -> None:
    for hosts in list(_live):
        try:
            hosts.close()
        except Exception:  # noqa: BLE001
            pass
    kill_tracked()


def _install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so `with Hosts(...)` blocks clean up; atexit as the last net."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(_close_everything)

    def _unwind(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _unwind)
