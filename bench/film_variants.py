"""Time and peak memory of the model's image path (``display_values``) on the real films and their variants.

The variants are tests/film_variants_support.py's (the real films in tests/data/real-cxr encoded other ways:
colour, signed, padded, LUTs, a 4,280 x 3,520 matrix ...). Each is built once and read as the worker reads a
spooled instance; then ``display_values`` is timed (median of ``--runs``) and its Python-allocated peak measured
(tracemalloc, numpy's arrays included), also in bytes per pixel of one frame (Rows x Columns). Run against
another checkout's code with PYTHONPATH=<its src> to compare.

    .venv/bin/python bench/film_variants.py [--runs 5] [--films fuji,nih] [--variants film,rgb,signed_padding]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--films", default="fuji,nih,canine,rg1")
    parser.add_argument("--variants", default="film,rgb,signed_padding,signed_voi_lut,large_matrix")
    args = parser.parse_args()

    import radtrace
    from film_variants_support import VARIANTS, film, read_back
    from radtrace.model.image import display_values

    print(f"radtrace from {Path(radtrace.__file__).parent}")
    print(f"{'film':8} {'variant':24} {'median ms':>10} {'peak MB':>9} {'B/pixel':>8}")
    for name in args.films.split(","):
        for variant in args.variants.split(","):
            if variant != "film" and variant not in VARIANTS:
                continue
            ds, stored = film(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                source = read_back(ds if variant == "film" else VARIANTS[variant](ds, stored).dataset)
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                display_values(source)
                times.append(time.perf_counter() - started)
            tracemalloc.start()
            display_values(source)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            pixels = int(source.Rows) * int(source.Columns)
            print(
                f"{name:8} {variant:24} {statistics.median(times) * 1000:10.1f} {peak / 2**20:9.1f} "
                f"{peak / pixels:8.1f}"
            )


if __name__ == "__main__":
    main()
