"""fix_mmap_threshold: after a large block is freed, the next block of a few hundred KB still gets pages of its own.

Each case runs in a fresh interpreter (the threshold is process-wide) and reads glibc's ``mallinfo2().hblks``, the
number of blocks mmapped right now.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import ctypes, sys
sys.path.insert(0, {root!r})
from nautilus_mesh.serving import fix_mmap_threshold

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
fixed = fix_mmap_threshold() if sys.argv[1] == "fixed" else False
big = libc.malloc(8 << 20)
libc.free(big)  # glibc's own rule: the threshold rises to 8 MiB here unless it is held
before = libc.mallinfo2().hblks
block = libc.malloc(512 << 10)
print(fixed, libc.mallinfo2().hblks - before)
libc.free(block)
"""


def probe(mode: str, **env: str) -> tuple[str, int]:
    code = PROBE.format(root=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code, mode],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
    )
    fixed, mmapped = done.stdout.split()
    return fixed, int(mmapped)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_threshold_when_held_gives_a_512_kb_block_its_own_pages_after_an_8_mb_one_was_freed() -> None:
    assert probe("fixed") == ("True", 1)
    assert probe("moving") == ("False", 0)  # the control: glibc's moving threshold puts it on the heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_threshold_when_set_in_the_environment_is_left_as_it_is() -> None:
    assert probe("fixed", MALLOC_MMAP_THRESHOLD_="33554432") == ("False", 0)
