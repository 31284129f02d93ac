"""Totals of the per-collection logs ``PAUSE_WATCH_GC_LOG`` writes: per process and generation, the collections,
their time in all and the longest (milliseconds), and the objects they freed.

    .venv/bin/python scripts/pause_watch/gc_summary.py var/gc
"""

from __future__ import annotations

import sys
from pathlib import Path


def summary(folder: Path) -> list[str]:
    """One line per log file and generation: ``<file> gen<N> collections <n> total <ms> ms max <ms> ms freed <n>``."""
    lines = []
    for path in sorted(folder.glob("gc-*.log")):
        totals: dict[int, list[float]] = {}
        for row in path.read_text(encoding="ascii").splitlines():
            gen, took, collected = row.split()
            took_ms = float(took)
            entry = totals.setdefault(int(gen), [0, 0.0, 0.0, 0])
            entry[0] += 1
            entry[1] += took_ms
            entry[2] = max(entry[2], took_ms)
            entry[3] += int(collected)
        for generation, (count, total, longest, freed) in sorted(totals.items()):
            lines.append(
                f"{path.name} gen{generation} collections {count:.0f} total {total:.1f} ms max {longest:.1f} ms "
                f"freed {freed:.0f}"
            )
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gc_summary.py FOLDER")
    print("\n".join(summary(Path(sys.argv[1]))))
