"""``python -m ops_server.capital_allocator``: the allocator's what-if CLI under its older name.

The allocator lives in :mod:`ops_server.allocation`; this alias keeps the documented command working.
"""

from __future__ import annotations

import sys

from ops_server.allocation.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
