"""What-if analysis: one capital allocation cycle on a returns file, printed.

python -m ops_server.allocation --returns returns.csv --policy config/demo/capital_policy.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

from nautilus_mesh.errors import ConfigError, MeshError
from nautilus_mesh.files import load_json_file
from ops_server.allocation.allocator import AllocationDecision, CapitalAllocator, fmt_score
from ops_server.allocation.config import CapitalPolicy


def _read_returns(path: Path) -> dict[str, list[float]]:
    """Read returns from JSON (``{"strategy": [r, ...]}``) or CSV (header = strategy names, one row per period).

    In a CSV an empty cell is a missing observation, so strategies with shorter histories can share a file.
    """
    if path.suffix.lower() == ".json":
        data = load_json_file(path)
        out: dict[str, list[float]] = {}
        for name, series in data.items():
            if not isinstance(series, list) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in series
            ):
                raise ConfigError(f"{path}: returns of {name!r} must be a list of numbers")
            out[name] = [float(v) for v in series]
        return out
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ConfigError(f"cannot read returns file {path}: {exc.strerror}") from exc
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ConfigError(f"{path}: expected a header row of strategy names")
    header = [cell.strip() for cell in rows[0]]
    if any(not name for name in header) or len(set(header)) != len(header):
        raise ConfigError(f"{path}: header names must be non-empty and distinct, got {header}")
    columns: dict[str, list[float]] = {name: [] for name in header}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ConfigError(f"{path}: line {lineno} has {len(row)} cells, the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            text = cell.strip()
            if not text:
                continue
            try:
                columns[name].append(float(text))
            except ValueError as exc:
                raise ConfigError(f"{path}: line {lineno}, column {name!r}: not a number: {text!r}") from exc
    return columns


def _read_previous(value: str) -> dict[str, float]:
    """``--previous`` is inline JSON or a path to a JSON file, mapping strategy to weight."""
    try:
        data = load_json_file(value) if Path(value).is_file() else json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--previous is neither a JSON object nor a JSON file: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ConfigError("--previous must be a JSON object of strategy -> weight")
    return data


def _render(decision: AllocationDecision, allocator: CapitalAllocator, previous_usd: Mapping[str, Decimal]) -> str:
    policy = allocator.policy
    header = ("strategy", "obs", "sharpe/yr", "DSR", "score", "before", "after", "before USD", "after USD")
    rows: list[tuple[str, ...]] = []
    for name in policy.strategies:
        sr = (decision.sharpe_annual or {}).get(name)
        dsr = (decision.dsr or {}).get(name)
        rows.append(
            (
                name,
                str(decision.observations.get(name, 0)),
                "-" if sr is None else f"{sr:.2f}",
                "-" if dsr is None else f"{dsr:.4f}",
                "-" if name not in decision.scores else fmt_score(decision.scores[name]),
                f"{decision.previous_weights[name]:.4f}",
                f"{decision.new_weights[name]:.4f}",
                f"{previous_usd[name]:,.2f}",
                f"{allocator.allocation_usd(name):,.2f}",
            )
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"reason:   {decision.reason}{' (forced)' if decision.forced else ''}")
    lines.append(f"turnover: {decision.turnover:.4f}")
    lines.append(f"message:  {decision.message}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one allocation cycle on a returns file and print the decision.

    Returns:
        0 on success, 2 on bad input (the reason is printed on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m ops_server.allocation",
        description="Run one capital allocation cycle on a returns file and print the decision.",
    )
    parser.add_argument("--returns", required=True, type=Path, help="CSV (header = strategies) or JSON returns file")
    parser.add_argument("--policy", required=True, type=Path, help="capital policy JSON file")
    parser.add_argument("--previous", help="previous weights: inline JSON object or a JSON file")
    parser.add_argument("--forced", action="store_true", help="run as an operator-forced cycle")
    parser.add_argument("--now", type=float, default=0.0, help="cycle time, epoch seconds (default 0)")
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=1.0,
        help="interval between two returns in the file, seconds, for the annualised Sharpe (default 1)",
    )
    args = parser.parse_args(argv)
    try:
        policy = CapitalPolicy.load(args.policy)
        returns = _read_returns(args.returns)
        previous = _read_previous(args.previous) if args.previous else None
        if not math.isfinite(args.sample_seconds) or args.sample_seconds <= 0:
            raise ConfigError(f"--sample-seconds must be a positive number, got {args.sample_seconds}")
        allocator = CapitalAllocator(policy, previous, sample_seconds=args.sample_seconds)
        previous_usd = allocator.allocations_usd()
        decision = allocator.run_cycle(returns, now=args.now, forced=args.forced)
    except MeshError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(_render(decision, allocator, previous_usd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
