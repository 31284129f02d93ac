"""Ops-side risk rails (DESIGN.md section 6, strategy layer).

- ``config``: the risk limits file (:class:`RiskLimits`, :class:`ModelLimits`).
- ``trading_state``: ACTIVE / REDUCING / HALTED per model and global, the kill switch, :class:`RiskEvent`.
- ``rails``: :class:`RiskRails`, the pre-trade checks in their fixed order, each with a stable code.
"""

from ops_server.risk.config import ModelLimits, RiskLimits
from ops_server.risk.orders import CAPITAL_RAILS, OrderIntent, RiskContext, Side
from ops_server.risk.rails import RiskRails
from ops_server.risk.trading_state import RiskEvent, TradingState

__all__ = [
    "CAPITAL_RAILS",
    "ModelLimits",
    "OrderIntent",
    "RiskContext",
    "RiskEvent",
    "RiskLimits",
    "RiskRails",
    "Side",
    "TradingState",
]
