"""The JPEG 2000 lossy verdict against the truth: real films coded by real encoders, every option that moves packets.

For each film (tests/data/real-cxr) and each encoder option (OpenJPEG's opj_compress, which must be installed:
Debian libopenjp2-tools), the codestream is decoded (pylibjpeg-openjpeg) and compared with the film's values (truth:
lossless iff equal), read by :func:`radtrace.model.j2k_passes.verdict` (True complete; False lossy as the
codestream says: passes left out, cut short, 9-7 in a COC or tile COD; None not read), and given to the worker's
flagging step (:func:`radtrace.model.image_marks.source_step`) under .91 and under .90 ("Lossless Only"): ``-`` no
flag, ``lossy`` flagged, ``may`` flagged as possibly lossy (not verified), ``nv`` not flagged and recorded as not
verified. ``wrong`` marks a verdict that contradicts the truth (None is not wrong: it is not a verdict); after it,
why the reader answered False or None. ``read s``: the verdict's CPU seconds (the slowest in the last line).

Besides the options, codestreams changed as a sender might: a three-layer one with its last layer dropped or cut to
a third, a 9-7 one whose coding is moved to a COC or a tile-part COD under a main COD saying 5-3, 5-3 ones whose QCD
says scalar expounded quantisation (OpenJPEG takes a reversible step as 1), and some marked HTJ2K (Rsiz and the
code-block style: told, not coded so; the truth is the unmarked codestream's), and some with their COD moved from
the main header to the tile-part header (the truth is the codestream's before: OpenJPEG refuses it). The last line
counts the cases, those unread, the wrong verdicts and the lossy ones left unflagged under each syntax. Where
OpenJPH's ojph_compress is installed (Debian openjph-tools), real HT code-blocks too: the film coded reversible,
LRCP, rewritten in two quality layers and with the second dropped (tests/unit/test_j2k_ht_layers.py), under
.203/.201.

Run: ``.venv/bin/python bench/j2k_verdicts.py [--films canine,fuji] [--cases TEXT]`` (``--cases``: only the cases
whose label holds TEXT); another commit's reader with
``PYTHONPATH=<its src>`` (the before of a change). Not in ``make bench``.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openjpeg
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

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
    "-M 1 -r 10",
    "-M 5 -r 40,10,1",
    "-M 5 -r 10",
    "-I",
    "-I -r 40,10,1",
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


def _ojph(values: np.ndarray, bits: int) -> bytes:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "in.pgm").write_bytes(_pgm(values, bits))
        command = ["ojph_compress", "-i", f"{folder}/in.pgm", "-o", f"{folder}/out.j2c"]
        subprocess.run([*command, "-reversible", "true", "-prog_order", "LRCP"], check=True, capture_output=True)
        return (Path(folder) / "out.j2c").read_bytes()


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
    from test_j2k_ht_layers import dropped, two_layers

    from film_support import film

    totals: dict[str, float] = dict.fromkeys(
        ("cases", "unread", "wrong", "lossy, no flag (.91/.203)", "lossy, no flag (Lossless Only)", "slowest read, s"),
        0,
    )
    parser = argparse.ArgumentParser()
    parser.add_argument("--films", default="canine,fuji")
    parser.add_argument("--cases", default="", help="only the cases whose label holds this text")
    arguments = parser.parse_args()
    films, only = arguments.films.split(","), arguments.cases
    if shutil.which("opj_compress") is None:
        sys.exit("opj_compress not found: install Debian's libopenjp2-tools")
    print(f"{'film':7} {'option':55} {'truth':8} {'verdict':7} {'read s':6} {'.91':5} {'.90':5}")
    for name in films:
        ds, stored = film(name)
        bits = int(ds.BitsStored)
        cases: list[tuple[str, bytes]] = []
        for option in OPTIONS:
            if only and only not in (option or "(defaults)"):
                continue
            cases.append((option or "(defaults)", _opj(stored, bits, option)))
        if only and cases:  # the text names options: the changed codestreams are not made
            _report(name, cases, {}, stored, totals)
            continue
        for option in ("-SOP -EPH", "-SOP -EPH -r 10"):
            for where in ("PPT", "PPM"):
                cases.append((f"{option} then headers to {where}", _moved(_opj(stored, bits, option), where)))
        layered = _opj(stored, bits, "-r 40,10,1 -SOP")
        cases.append(("-r 40,10,1 -SOP, last layer dropped", _layer_dropped(layered)))
        cases.append(("-r 40,10,1 -SOP, cut to a third", layered[: len(layered) // 3]))
        irreversible = _opj(stored, bits, "-I")
        for where in ("COC", "tile COD"):
            cases.append((f"-I, 9-7 moved to a {where} (main COD 5-3)", _irreversible_in(irreversible, where)))
        for option in ("", "-r 10"):
            cases.append(
                (
                    f"{option or '(defaults)'}, QCD rewritten scalar expounded",
                    _expounded(_opj(stored, bits, option)),
                )
            )
        for option in ("", "-r 10"):
            cases.append((f"{option or '(defaults)'} marked HTJ2K, .203/.201", _mark_ht(_opj(stored, bits, option))))
        cases.append(("-r 40,10,1 -SOP, last layer dropped, marked HTJ2K", _mark_ht(_layer_dropped(layered))))
        cases.append(("-r 40,10,1 -SOP, cut to a third, marked HTJ2K", _mark_ht(layered[: len(layered) // 3])))
        truths: dict[str, bytes] = {}  # decoded for the truth in a case's place (OpenJPEG refuses the case)
        for option in ("", "-r 10", "-I"):
            label = f"{option or '(defaults)'}, COD only in the tile-part header"
            truths[label] = _opj(stored, bits, option)
            cases.append((label, _cod_in_tile(truths[label])))
        if shutil.which("ojph_compress") is not None:  # real HT code-blocks, in one layer and in two
            ht = _ojph(stored, bits)
            layered, second = two_layers(ht)
            cases.append(("OpenJPH HT reversible LRCP", ht))
            cases.append(("OpenJPH HT reversible LRCP, in two layers", layered))
            cases.append(("OpenJPH HT reversible LRCP, two layers, second dropped", dropped(layered, second)))
        _report(name, [(label, codestream) for label, codestream in cases if only in label], truths, stored, totals)
    print("; ".join(f"{key}: {value}" for key, value in totals.items()))


def _report(
    name: str,
    cases: list[tuple[str, bytes]],
    truths: dict[str, bytes],
    stored: np.ndarray,  # type: ignore[type-arg]
    totals: dict[str, float],
) -> None:
    try:
        from radtrace.model.j2k_passes import verdict as read_verdict
    except ImportError:  # a reader before verdict(): its answer without the why
        from radtrace.model.j2k_passes import passes_complete

        def read_verdict(stream: bytes) -> tuple[bool | None, str]:
            return passes_complete(stream), ""

    for label, codestream in cases:
        ht = "HTJ2K" in label or "OpenJPH" in label
        reference = truths.get(label, _unmark(codestream) if "HTJ2K" in label else codestream)
        try:
            decoded = np.asarray(openjpeg.decode(reference)).astype(np.int64)
            lossless = bool(np.array_equal(decoded, stored))
        except (RuntimeError, ValueError):  # cut short past what OpenJPEG decodes: not the film
            lossless = False
        started = time.process_time()
        verdict, why = read_verdict(codestream)
        seconds = time.process_time() - started
        totals["slowest read, s"] = max(totals["slowest read, s"], round(seconds, 2))
        wrong = verdict is not None and verdict is not lossless
        syntaxes = (
            ("1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.201")
            if ht
            else ("1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.90")
        )
        flags = [_flag(codestream, s) for s in syntaxes]
        truth = "lossless" if lossless else "lossy"
        totals["cases"] += 1
        totals["unread"] += verdict is None
        totals["wrong"] += wrong
        totals["lossy, no flag (.91/.203)"] += not lossless and flags[0] in ("-", "nv")
        totals["lossy, no flag (Lossless Only)"] += not lossless and flags[1] in ("-", "nv")
        said = f"  {'wrong' if wrong else ''}{' ' if wrong and why else ''}{why}" if why or wrong else ""
        print(f"{name:7} {label:55} {truth:8} {verdict!s:7} {seconds:6.2f} {flags[0]:5} {flags[1]:5}{said}")


def _mark_ht(codestream: bytes) -> bytes:
    ht = bytearray(codestream)
    ht[6] |= 0x40  # Rsiz: HTJ2K (told, not decoded: the truth is the codestream's before)
    ht[ht.index(b"\xff\x52") + 12] |= 0x40
    return bytes(ht)


def _layer_dropped(codestream: bytes) -> bytes:
    """A three-layer one-tile LRCP codestream with SOP markers, its last layer dropped as a PACS would: Psot
    rewritten, EOC after (tests/unit/test_j2k_lossless_only.py)."""
    cod = codestream.index(b"\xff\x52")
    sot = codestream.index(b"\xff\x90")
    cut = codestream.index(b"\xff\x91" + struct.pack(">HH", 4, 2 * (codestream[cod + 9] + 1)), sot)
    return codestream[: sot + 6] + struct.pack(">I", cut - sot) + codestream[sot + 10 : cut] + b"\xff\xd9"


def _irreversible_in(codestream: bytes, where: str) -> bytes:
    """A 9-7 codestream whose main COD says 5-3, its 9-7 coding in a main-header COC or a tile-part COD."""
    at = codestream.index(b"\xff\x52")
    cod = codestream[at : at + 2 + struct.unpack_from(">H", codestream, at + 2)[0]]
    changed = bytearray(codestream)
    changed[at + 13] = 1
    if where == "COC":
        body = bytes([0, cod[4] & 1]) + cod[9:]
        end = at + len(cod)
        return bytes(changed[:end]) + b"\xff\x53" + struct.pack(">H", 2 + len(body)) + body + bytes(changed[end:])
    sot = codestream.index(b"\xff\x90")
    changed[sot + 6 : sot + 10] = struct.pack(">I", struct.unpack_from(">I", changed, sot + 6)[0] + len(cod))
    return bytes(changed[: sot + 12]) + cod + bytes(changed[sot + 12 :])


def _cod_in_tile(codestream: bytes) -> bytes:
    """A one-tile-part codestream with its COD moved from the main header to the tile-part header (OpenJPEG
    refuses it: T.800 A.5 asks for a COD in the main header; the truth is the codestream's before)."""
    at = codestream.index(b"\xff\x52")
    cod = codestream[at : at + 2 + struct.unpack_from(">H", codestream, at + 2)[0]]
    rest = codestream[:at] + codestream[at + len(cod) :]
    sot = rest.index(b"\xff\x90")
    psot = struct.unpack_from(">I", rest, sot + 6)[0]
    return rest[: sot + 6] + struct.pack(">I", psot + len(cod)) + rest[sot + 10 : sot + 12] + cod + rest[sot + 12 :]


def _expounded(codestream: bytes) -> bytes:
    """A 5-3 codestream's QCD rewritten as scalar expounded (exponents kept, mantissa 1,024)."""
    at = codestream.index(b"\xff\x5c")
    length = struct.unpack_from(">H", codestream, at + 2)[0]
    qcd = codestream[at + 4 : at + 2 + length]
    body = bytes([qcd[0] & 0xE0 | 2]) + b"".join(struct.pack(">H", b >> 3 << 11 | 1024) for b in qcd[1:])
    return codestream[:at] + b"\xff\x5c" + struct.pack(">H", 2 + len(body)) + body + codestream[at + 2 + length :]


def _unmark(codestream: bytes) -> bytes:
    changed = bytearray(codestream)
    changed[6] &= ~0x40 & 0xFF
    changed[changed.index(b"\xff\x52") + 12] &= ~0x40 & 0xFF
    return bytes(changed)


if __name__ == "__main__":
    main()
