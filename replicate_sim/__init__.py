"""A local stand-in for Replicate's HTTP API: same routes and shapes as the official client uses,
account limits enforced like Replicate's, latency and failures on demand, and a ledger to check
what a client did. Run it with `replicate-sim` or `python -m replicate_sim`; drive it from Python
with `replicate_sim.control` (start_sim, SimProcess, SimClient).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .control import SimClient, SimProcess, start_sim

__all__ = ["SimClient", "SimProcess", "start_sim"]


def __getattr__(name: str) -> Any:
    # Lazy, so the server process does not import the control client it never uses.
    if name in __all__:
        from . import control

        return getattr(control, name)
    raise AttributeError(name)
