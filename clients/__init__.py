"""Python clients of the mesh: the async SDK, the ``nautilus-mesh`` CLI and its launcher.

The public SDK surface is re-exported here; ``clients.sdk`` documents the error model.
"""

from clients.sdk import (
    DEFAULT_TIMEOUT,
    MAX_SIGNALS_PER_FRAME,
    EngineClient,
    FrameCoalescer,
    MeshRpcError,
    OpsAdminClient,
    OpsClient,
    SignalStream,
    wait_serving,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_SIGNALS_PER_FRAME",
    "EngineClient",
    "FrameCoalescer",
    "MeshRpcError",
    "OpsAdminClient",
    "OpsClient",
    "SignalStream",
    "wait_serving",
]
