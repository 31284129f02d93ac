"""Backtests through the live code path: ops' signal path, rails, measurement, allocator and canary controller and
the engine's sim venue, wired in one process on a simulated clock (see docs/backtests.md).

Entry points: ``python -m backtests`` (what ``nautilus-mesh backtest`` runs) and :func:`backtests.api.run_backtest`.
This package sits above ops_server, engine_server and strategies: nothing in them imports it.
"""
