"""Strategy plugins and the runtime that streams their signals to ops.

A model is a frozen config dataclass plus a class with
``on_price(instrument, mid, ts_ns) -> float | None`` returning a target exposure in [-1, 1].
Register new kinds in :data:`MODEL_KINDS`.
"""

from strategies.config import MODEL_KINDS, BuiltModel, Model, StrategiesConfig, build_model, load_strategies
from strategies.mean_reversion import MeanReversionConfig, MeanReversionModel
from strategies.momentum import MomentumConfig, MomentumModel

__all__ = [
    "MODEL_KINDS",
    "BuiltModel",
    "MeanReversionConfig",
    "MeanReversionModel",
    "Model",
    "MomentumConfig",
    "MomentumModel",
    "StrategiesConfig",
    "build_model",
    "load_strategies",
]
