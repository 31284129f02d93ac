"""Regenerate the reference pages under docs/ from the code they describe.

    python scripts/gen_docs.py          # rewrite docs/api.md, docs/configuration.md, docs/metrics.md
    python scripts/gen_docs.py --check  # exit 1 if any of them differs from what the code says

- ``api.md``: the proto descriptors with their comments (``buf build --as-file-descriptor-set``), plus a grpcurl
  and an SDK example and the error codes of each RPC (``scripts/docgen/api.py``).
- ``configuration.md``: every config file's pydantic models, their fields' types, defaults, constraints and
  docstrings (read from the source with ``ast``), and every environment variable the services read.
- ``metrics.md``: every metric of the ops and engine registries, and the span names and attributes found in the
  source.

``make test`` runs the check (``make docs-check``), so a change to a proto, a config model, a metric or a span that
is not reflected in docs/ fails the build.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from docgen import api, configuration, metrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUF = Path(sys.executable).parent / "buf"


def pages() -> dict[str, Callable[[], str]]:
    """Each generated page and how to render it."""
    return {
        "api.md": lambda: api.render(api.build_descriptor_set(ROOT, BUF)),
        "configuration.md": lambda: configuration.render(ROOT),
        "metrics.md": lambda: metrics.render(ROOT),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a generated page is out of date")
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder of the pages (default: docs/)")
    args = parser.parse_args()
    stale = []
    for name, render in pages().items():
        path = args.docs / name
        fresh = render()
        current = path.read_text() if path.exists() else ""
        if fresh == current:
            continue
        if args.check:
            stale.append(name)
            diff = difflib.unified_diff(current.splitlines(), fresh.splitlines(), str(path), "generated", lineterm="")
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        else:
            path.write_text(fresh)
            print(f"wrote {path}")
    if stale:
        print(f"generated docs differ from the code: {', '.join(stale)}; run `make docs` and commit", file=sys.stderr)
        return 1
    if args.check:
        print("generated docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
