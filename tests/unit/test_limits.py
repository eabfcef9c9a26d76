"""The worker's memory ceiling: a decompression bomb fails with MemoryError in its own step, the process lives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BOMB_UNDER_A_CEILING = """
import sys
from pathlib import Path
from pydicom import dcmread
from radtrace.limits import apply_memory_ceiling
from radtrace.testing.bombs import j2k_bomb

ds = dcmread(j2k_bomb(Path(sys.argv[1])))
assert apply_memory_ceiling(None) is None
print("ceiling", apply_memory_ceiling(1024**3))
try:
    ds.pixel_array  # no budget check here: the decoder is asked for 65535 x 65535 x 16 bits
except MemoryError:
    print("MemoryError")
print("still alive")
"""


def test_a_bomb_decoded_under_the_ceiling_fails_with_memory_error_and_the_process_goes_on(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BOMB_UNDER_A_CEILING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ceiling", str(1024**3), "MemoryError", "still", "alive"]
