"""Equity-curve plots of a backtest (PNG, matplotlib's Agg backend, no display needed).

The PNG carries no software or date metadata, so the same run gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from backtests.runner import ModelRun


def plot_equity(run: ModelRun, title: str, path: Path) -> None:
    """Plot one model's PnL (USD) against time since the first quote (hours) into ``path``.

    Raises:
        RuntimeError: matplotlib is not installed (``pip install 'nautilus-mesh[backtest]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'nautilus-mesh[backtest]' (or pass --no-plot)") from None
    hours = [t / 3600.0 for t in run.curve_s]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        ax.plot(hours, run.curve_pnl_usd, linewidth=1.0, color="#1f77b4")
        ax.axhline(0.0, color="#888888", linewidth=0.6)
        ax.set_title(title)
        ax.set_xlabel("time since first quote (hours)")
        ax.set_ylabel("PnL (USD)")
        ax.grid(True, linewidth=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
