"""Python clients of the mesh: the async SDK, the ``nautilus-mesh`` CLI and its launcher.

The public SDK surface is re-exported here, so ``from clients import OpsClient`` is all a strategy or a tool needs;
``clients.sdk`` documents each class and the error model:

- :class:`OpsClient`: ``nautilus.ops.v1.OpsService``, signals and queries (a strategy token).
- :class:`OpsAdminClient`: ``nautilus.ops.v1.OpsAdminService``, the operators' controls (the admin token).
- :class:`EngineClient`: ``nautilus.engine.v1.EngineService`` (the engine token) and ``MarketDataService`` (public).
- :class:`MeshRpcError`: what every failed call raises (``.code``, ``.message``, ``.detail``).
- :class:`SignalStream`: the ``StreamSignals`` call of :meth:`OpsClient.stream_signals` (failures raise
  ``MeshRpcError``).
- :class:`FrameCoalescer`: merges the signal frames a producer queued into fewer, larger frames (no timer).
- :func:`wait_serving`: wait for a server's health check to say SERVING.
- :data:`DEFAULT_TIMEOUT`: seconds a unary call may take by default; :data:`MAX_SIGNALS_PER_FRAME`: the most
  signals per frame the SDK builds.

Example:
    >>> import asyncio
    >>> from clients import OpsClient, wait_serving
    >>> async def main() -> str:
    ...     await wait_serving(ops_address, 5.0)
    ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
    ...         return (await ops.get_model_quota("momentum_v1")).model_id
    >>> asyncio.run(main())
    'momentum_v1'
"""

# The public names are exactly those of ``clients.sdk`` (its ``__all__``).
from clients.sdk import *  # noqa: F403
from clients.sdk import __all__ as __all__
