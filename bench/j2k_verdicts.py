"""The JPEG 2000 lossy verdict against the truth: real films coded by real encoders, every option that moves packets.

For each film (tests/data/real-cxr) and each encoder option (OpenJPEG's opj_compress where installed; else only
the transforms of tests/data/j2k-opj), the codestream is decoded (pylibjpeg-openjpeg) and compared with the film's
values (truth: lossless iff equal), read by :func:`radtrace.model.j2k_passes.passes_complete` (True complete, False
passes left out, None not read), and given to the worker's flagging step (:func:`radtrace.model.image_marks.
source_step`) under .91 and under .90 ("Lossless Only"): ``-`` no flag, ``lossy`` flagged, ``may`` flagged as
possibly lossy (not verified), ``nv`` not flagged and recorded as not verified. ``wrong`` marks a verdict that
contradicts the truth (None is not wrong: it is not a verdict).

Run: ``.venv/bin/python bench/j2k_verdicts.py [--films canine,fuji]``; another commit's reader with
``PYTHONPATH=<its src>`` (the before of a change). Not in ``make bench``.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import openjpeg
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

OPTIONS = [
    "",
    "-r 20",
    "-r 40,10,1",
    "-r 40,10",
    "-r 1.5",
    "-r 1.05",
    "-p RPCL -c [32,32]",
    "-p RPCL -c [32,32] -r 20",
    "-p PCRL -c [64,64]",
    "-p PCRL -c [64,64] -r 10",
    "-p CPRL -c [32,32]",
    "-p CPRL -c [32,32] -r 10",
    "-p RPCL -c [128,128],[64,64],[32,32]",
    "-p RPCL -c [128,128],[64,64],[32,32] -r 10",
    "-p RLCP -c [32,32] -r 10",
    "-t 128,128 -p RPCL -c [32,32] -TP R",
    "-t 128,128 -p RPCL -c [32,32] -TP R -r 10",
    "-SOP -EPH",
    "-SOP -EPH -r 10",
    "-PLT -TLM",
    "-PLT -TLM -r 10",
    "-POC T1=0,0,1,3,1,LRCP/T1=3,0,1,6,1,RPCL -c [32,32]",
    "-POC T1=0,0,1,3,1,LRCP/T1=3,0,1,6,1,RPCL -c [32,32] -r 10",
    "-POC T1=0,0,1,3,1,LRCP/T1=0,0,1,6,1,RPCL -c [32,32]",
    "-ROI c=0,U=3",
    "-ROI c=0,U=3 -r 10",
    "-M 4",
    "-M 4 -r 10",
    "-M 1",
    "-b 16,16 -n 3",
    "-b 16,16 -n 3 -r 10",
    "-I",
]


def _pgm(values: np.ndarray, bits: int) -> bytes:  # type: ignore[type-arg]
    head = f"P5\n{values.shape[1]} {values.shape[0]}\n{2**bits - 1}\n".encode()
    return head + values.astype(">u2" if bits > 8 else "u1").tobytes()


def _opj(values: np.ndarray, bits: int, option: str) -> bytes:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "in.pgm").write_bytes(_pgm(values, bits))
        command = ["opj_compress", "-i", f"{folder}/in.pgm", "-o", f"{folder}/out.j2k", *option.split()]
        subprocess.run(command, check=True, capture_output=True)
        return (Path(folder) / "out.j2k").read_bytes()


def _moved(codestream: bytes, where: str) -> bytes:
    """A one-tile-part SOP/EPH codestream with its packet headers moved to PPT or PPM (as the tests do)."""
    sot = codestream.index(b"\xff\x90")
    sod = codestream.index(b"\xff\x93", sot)
    main, tile_header, data = codestream[:sot], codestream[sot + 12 : sod], codestream[sod + 2 : -2]
    heads, bodies = b"", b""
    for chunk in data.split(b"\xff\x91")[1:]:
        head, _, body = chunk.partition(b"\xff\x92")
        heads += head[4:] + b"\xff\x92"
        bodies += b"\xff\x91" + head[:4] + body
    if where == "PPT":
        tile_header += b"\xff\x61" + struct.pack(">HB", 3 + len(heads), 0) + heads
    else:
        main += b"\xff\x60" + struct.pack(">HBI", 7 + len(heads), 0, len(heads)) + heads
    psot = 12 + len(tile_header) + 2 + len(bodies)
    part = codestream[sot : sot + 6] + struct.pack(">I", psot) + codestream[sot + 10 : sot + 12]
    return main + part + tile_header + b"\xff\x93" + bodies + b"\xff\xd9"


def _flag(codestream: bytes, syntax: str) -> str:
    from radtrace.model.image_marks import source_step

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([codestream])
    step = source_step(ds) or {}
    if "lossy" in step:
        return "may" if step["lossy"]["basis"].startswith("transfer syntax allows") else "lossy"
    return "nv" if "lossless_not_verified" in step else "-"


def main() -> None:
    from film_support import film
    from radtrace.model.j2k_passes import passes_complete

    parser = argparse.ArgumentParser()
    parser.add_argument("--films", default="canine,fuji")
    films = parser.parse_args().films.split(",")
    have_opj = shutil.which("opj_compress") is not None
    print(f"{'film':7} {'option':55} {'truth':8} {'verdict':7} {'.91':5} {'.90':5}")
    for name in films:
        ds, stored = film(name)
        bits = int(ds.BitsStored)
        cases: list[tuple[str, bytes]] = []
        if have_opj:
            for option in OPTIONS:
                cases.append((option or "(defaults)", _opj(stored, bits, option)))
            for option in ("-SOP -EPH", "-SOP -EPH -r 10"):
                for where in ("PPT", "PPM"):
                    cases.append((f"{option} then headers to {where}", _moved(_opj(stored, bits, option), where)))
            for option in ("", "-r 10"):
                ht = bytearray(_opj(stored, bits, option))
                ht[6] |= 0x40  # Rsiz: HTJ2K (told, not decoded: the truth is the codestream's before)
                ht[ht.index(b"\xff\x52") + 12] |= 0x40
                cases.append((f"{option or '(defaults)'} marked HTJ2K, .203/.201", bytes(ht)))
        for label, codestream in cases:
            ht = "HTJ2K" in label
            decoded = np.asarray(openjpeg.decode(_unmark(codestream) if ht else codestream)).astype(np.int64)
            lossless = bool(np.array_equal(decoded, stored))
            verdict = passes_complete(codestream)
            wrong = verdict is not None and verdict is not lossless
            syntaxes = (
                ("1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.201")
                if ht
                else ("1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.90")
            )
            flags = [_flag(codestream, s) for s in syntaxes]
            truth = "lossless" if lossless else "lossy"
            print(f"{name:7} {label:55} {truth:8} {verdict!s:7} {flags[0]:5} {flags[1]:5}{'  wrong' if wrong else ''}")


def _unmark(codestream: bytes) -> bytes:
    changed = bytearray(codestream)
    changed[6] &= ~0x40 & 0xFF
    changed[changed.index(b"\xff\x52") + 12] &= ~0x40 & 0xFF
    return bytes(changed)


if __name__ == "__main__":
    main()
