"""How long the listener's header read and the worker's spooled read take per real film (median of ``--runs``).

The real films (tests/data/real-cxr: implicit VR, explicit VR, JPEG 2000, JPEG-LS, legacy without File Meta) and the
NIH and canine films as Explicit VR Big Endian (dcmtk's dcmconv). Listener: ``read_header`` then ``check_file``
(Part 10 films only); worker: ``spooled_image`` (Part 10 only) and ``study_image`` (the whole read, pixels
included). Run against another checkout's code with PYTHONPATH=<its src> to compare.

    .venv/bin/python bench/real_film_header_read.py [--runs 30]
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "real-cxr"


def _median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import radtrace
    from radtrace.dicom_listener.headers import read_header
    from radtrace.dicom_listener.pixel_budget import check_file
    from radtrace.model.study import spooled_image, study_image

    print(f"radtrace from {Path(radtrace.__file__).parent}")
    with tempfile.TemporaryDirectory() as directory:
        films = sorted(REAL.glob("*.dcm"))
        for name in ("nih-cxr14-00000001_000-dx-frontal-mono2-8bit", "canine-dx-thorax-lateral-mono1-small"):
            big = Path(directory) / f"{name}-big-endian.dcm"
            subprocess.run(["dcmconv", "+te", "+tb", str(REAL / f"{name}.dcm"), str(big)], check=True)
            films.append(big)
        print(f"{'film':58} {'listener ms':>12} {'spooled ms':>11} {'whole ms':>9}")
        for film in films:
            data = film.read_bytes()
            part10 = data[128:132] == b"DICM"

            def listener(film: Path = film) -> None:
                read_header(film)
                check_file(film, 50_000_000)

            listener_ms = _median_ms(listener, args.runs) if part10 else math.nan
            spooled = _median_ms(lambda film=film: spooled_image(film, "0" * 64), args.runs) if part10 else math.nan
            whole_ms = _median_ms(lambda data=data: study_image(data), args.runs)
            print(f"{film.name:58} {listener_ms:12.2f} {spooled:11.2f} {whole_ms:9.2f}")


if __name__ == "__main__":
    main()
