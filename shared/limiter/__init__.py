"""Account-wide limiter shared by every worker on every host (see README.md; `Limiter` is in limiter.py)."""

from shared.limiter.lease import Lease
from shared.limiter.limiter import Limiter
from shared.limiter.types import HolderInfo, HolderStatus, LimiterStatus, Limits

__all__ = ["Limiter", "Lease", "HolderInfo", "HolderStatus", "Limits", "LimiterStatus"]
