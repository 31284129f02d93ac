"""Capital allocation across strategies.

- ``config``: the capital policy (:class:`CapitalPolicy`: total capital, bounds, cooldown, turnover, deadband).
- ``weights``: the weight arithmetic (shrunk scores, exact bounded-simplex projection, turnover cap).
- ``allocator``: :class:`CapitalAllocator`, one cycle at a time, with its decisions and snapshot.
- ``__main__``: ``python -m ops_server.allocation``, one cycle on a returns file (what-if).
"""

from ops_server.allocation.allocator import AllocationDecision, AllocationReason, CapitalAllocator
from ops_server.allocation.config import CapitalPolicy, StrategyBounds

__all__ = ["AllocationDecision", "AllocationReason", "CapitalAllocator", "CapitalPolicy", "StrategyBounds"]
