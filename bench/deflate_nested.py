"""What a film with a hostile shape inside a sequence costs the listener's header read and the worker.

Each shape (:mod:`radtrace.testing.deflate_abuse`) is written into the NIH real film saved deflated (or, with
``--syntax explicit`` / ``implicit``, not deflated, Explicit or Implicit VR Little Endian); each film is
then read in a fresh process, as the listener reads a received instance (``read_header`` and ``check_file`` with
the default settings) and as the worker reads a spooled one (``spooled_as_received`` with the default listener
settings, then ``prepare_study``, which reads the chosen view whole). Printed per film and reader: the outcome (read,
or the refusal's reason), the seconds, and the peak RSS growth: ``getrusage`` peak minus the RSS after the imports.
Each child runs under a 4 GiB address-space limit (a MemoryError is reported as such, not a machine out of memory).

    .venv/bin/python bench/deflate_nested.py [--syntax deflated|explicit|implicit] [--only NAME ...] [--zeros-mib 250]
        [--items 500000] [--elements 1000000] [--depth 5000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LIMIT = 4 << 30


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _child(reader: str, path: Path) -> None:
    from radtrace.config import load_settings
    from radtrace.dicom_listener.headers import read_header
    from radtrace.dicom_listener.pixel_budget import check_file, instance_byte_limit
    from radtrace.errors import RadtraceError
    from radtrace.model.study import StudyInput, prepare_study, spooled_as_received

    settings = load_settings(data_dir=Path(tempfile.mkdtemp()))
    listener = settings.listener
    with path.open("rb") as handle:  # streamed: a large film read whole here would be counted in the peak
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    resource.setrlimit(resource.RLIMIT_AS, (_LIMIT, _LIMIT))
    before = _rss()
    started = time.perf_counter()
    try:
        if reader == "listener":
            read_header(
                path,
                max_inflated_bytes=instance_byte_limit(listener.max_image_pixels),
                assumed_character_set=listener.assumed_character_set,
            )
            check_file(path, listener.max_image_pixels)
            outcome = "read"
        else:
            image = spooled_as_received(path, digest, listener)
            view = image.dataset.get("ViewCodeSequence")
            prepared = prepare_study([image], min_pixels=128 * 128, max_pixels=476 * 476, accept_unknown_view=True)
            outcome = "read" if isinstance(prepared, StudyInput) else f"skipped: {prepared.reason}"
            outcome += f" (View Code Sequence: {view[0].CodeValue if view else 'absent'})"
    except RadtraceError as exc:
        outcome = f"refused: {exc.reason}"
    except MemoryError:
        outcome = f"MemoryError (address space limited to {_LIMIT >> 30} GiB)"
    except RecursionError:
        outcome = "RecursionError"
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"outcome": outcome, "seconds": seconds, "growth": peak - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--zeros-mib", type=int, default=250)
    parser.add_argument("--items", type=int, default=500_000)
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=5000)
    parser.add_argument("--syntax", choices=("deflated", "explicit", "implicit"), default="deflated")
    parser.add_argument("--child", nargs=2, metavar=("READER", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return

    from radtrace.testing.deflate_abuse import shape_film

    films = {
        "huge-in-item-undefined": args.zeros_mib << 20,
        "huge-in-item-defined": args.zeros_mib << 20,
        "deep": 64,
        "deep-many": args.depth,
        "items-undefined": args.items,
        "items-defined": args.items,
        "elements-in-item": args.elements,
        "cut-in-item": 0,
    }
    with tempfile.TemporaryDirectory() as directory:
        for name, size in films.items():
            if args.only and name not in args.only:
                continue
            path = shape_film(name.removesuffix("-many"), size, Path(directory) / f"{name}.dcm", syntax=args.syntax)
            print(f"{name} ({size}, {args.syntax}): file {path.stat().st_size / 1e6:.2f} MB")
            for reader in ("listener", "worker"):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", reader, str(path)], capture_output=True, text=True
                )
                if done.returncode != 0:
                    print(f"  {reader:8} died ({done.returncode}): {done.stderr.strip()[-300:]}")
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                growth, seconds, outcome = result["growth"] / 1e6, result["seconds"], result["outcome"][:150]
                print(f"  {reader:8} +{growth:7.1f} MB {seconds:6.2f} s  {outcome}")


if __name__ == "__main__":
    main()
