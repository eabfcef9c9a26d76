"""Run every benchmark in bench/ in turn (``make bench``); each prints its own table beside its peer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ("atna.py", "audit.py", "inference.py", "ingest.py", "pipeline.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = 0
    for name in BENCHMARKS:
        print(f"\n=== bench/{name} ===", flush=True)
        failed += subprocess.run([sys.executable, str(here / name)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
