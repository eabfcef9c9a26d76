"""Three real films sent by dcmtk's storescu to a running ``radtrace listen`` with unusual but legal proposals
(big endian first, deflate, implicit only, JPEG 2000 / JPEG-LS / JPEG lossless / RLE files), then each stored
instance read to a draft by the ablation harness (SR through dciodvfy, HL7 parsed back; the canine lateral is
skipped, as it has no frontal chest image) and its model picture
compared with dcm2pnm's picture of the film as it was before encoding.

A matrix of 21 sends and reads (about 70 s here): it runs with ``RADTRACE_FULL_ABLATION=1`` only, as the other
long matrices do. The listener takes explicit little endian where storescu proposes big endian first (explicit big
endian is retired, PS3.5 A.3) and deflate as proposed; every picture matches dcm2pnm within 1.5 gray levels (rounding).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless, generate_uid

from ablation_support import AblationHarness, running_harness
from radtrace.model.image import display_values
from radtrace.testing.ablation import load_film
from radtrace.testing.abuse import ListenerProcess
from radtrace.testing.services import free_port
from tests_support import as_part10

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("RADTRACE_FULL_ABLATION") != "1", reason="RADTRACE_FULL_ABLATION=1 only"),
]

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = {
    "fuji-cr-mono1": REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",
    "nih-mono2": REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
    "canine-dx-mono1-inverse": REAL / "canine-dx-thorax-lateral-mono1-small.dcm",
}
#: What the worker makes of a film: a draft, except the canine lateral (no frontal chest image to read).
EXPECTED = {"canine-dx-mono1-inverse": ("skipped", "no frontal chest image")}
#: name -> (how the file is encoded first: None as is, "j2k" by pydicom, else a dcmtk tool; storescu's proposal,
#: the transfer syntax the listener stores)
SENDS = {
    "big-endian-first": (None, "-xb", "1.2.840.10008.1.2.1"),
    "deflate": (None, "-xd", "1.2.840.10008.1.2.1.99"),
    "implicit-only": (None, "-xi", "1.2.840.10008.1.2"),
    "jpeg-2000-lossless": ("j2k", "-xv", "1.2.840.10008.1.2.4.90"),
    "jpeg-ls-lossless": ("dcmcjpls", "-xt", "1.2.840.10008.1.2.4.80"),
    "jpeg-lossless": ("dcmcjpeg", "-xs", "1.2.840.10008.1.2.4.70"),
    "rle": ("dcmcrle", "-xr", "1.2.840.10008.1.2.5"),
}


def _encoded(film: Path, send: str, folder: Path) -> tuple[Path, Path]:
    """The film uncompressed under new UIDs (the reference) and as sent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(film)
        ds.PixelData = ds.pixel_array.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid())
    base, sent = folder / f"{film.stem}-{send}.base.dcm", folder / f"{film.stem}-{send}.dcm"
    as_part10(ds).save_as(base, enforce_file_format=True)
    tool = SENDS[send][0]
    if tool is None:
        shutil.copy(base, sent)
    elif tool == "j2k":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        ds.save_as(sent, enforce_file_format=True)
    else:
        subprocess.run([tool, str(base), str(sent)], check=True, capture_output=True, timeout=60)
    return base, sent


def _dcm2pnm(path: Path, target: Path) -> np.ndarray:
    window = ["--use-window", "1"] if "WindowCenter" in pydicom.dcmread(path, stop_before_pixels=True) else []
    subprocess.run(["dcm2pnm", *window, "--write-8-bit-pnm", str(path), str(target)], check=True, timeout=60)
    return np.asarray(Image.open(target), dtype=np.float64)


@pytest.fixture(scope="module")
def harness(tiny_model_dir: Path) -> Iterator[AblationHarness]:
    with running_harness(tiny_model_dir, "radtrace-storescu-") as made:
        yield made


def test_real_films_sent_by_storescu_with_unusual_proposals_reach_a_draft_and_the_picture_dcm2pnm_shows(
    tmp_path: Path, harness: AblationHarness
) -> None:
    port = free_port()
    sent: list[tuple[str, Path, str]] = []
    with ListenerProcess(
        tmp_path / "var", port, allowed_callers='[{"ae_title": "STORESCU"}, {"ae_title": "PACS"}]'
    ) as listener:
        for film_name, film in FILMS.items():
            for send, (_, proposal, _) in SENDS.items():
                base, encoded = _encoded(film, send, tmp_path)
                subprocess.run(
                    ["storescu", proposal, "-aec", "RADTRACE", "127.0.0.1", str(port), str(encoded)],
                    check=True,
                    capture_output=True,
                    timeout=60,
                    env={**os.environ, "TCP_NODELAY": "1"},
                )
                sent.append((f"{film_name}:{send}", base, str(pydicom.dcmread(encoded).SOPInstanceUID)))
    with sqlite3.connect(listener.data_dir / "radtrace.db") as db:
        stored = dict(
            (uid, (path, syntax))
            for uid, path, syntax in db.execute("select sop_instance_uid, path, transfer_syntax_uid from instances")
        )
    problems = []
    studies = []
    for name, base, uid in sent:
        if uid not in stored:
            problems.append(f"{name}: not stored")
            continue
        path, syntax = stored[uid]
        if syntax != SENDS[name.split(":")[1]][2]:
            problems.append(f"{name}: stored as {syntax}")
        spooled = pydicom.dcmread(listener.data_dir / "spool" / path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            shown, _ = display_values(spooled)
        difference = float(np.abs(shown * 255.0 - _dcm2pnm(base, tmp_path / "reference.pgm")).max())
        if difference > 1.5:
            problems.append(f"{name}: picture differs from dcm2pnm's by {difference:.1f} gray levels")
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):  # the harness's own study
            setattr(spooled, keyword, generate_uid())
        studies.append((name, [spooled]))
    for start in range(0, len(studies), 8):
        for name, outcome in harness.run_many(studies[start : start + 8]).items():
            expected = EXPECTED.get(name.split(":")[0], ("draft", ""))
            if (outcome.kind, outcome.detail) != expected or outcome.problems:
                problems.append(f"{name}: {outcome.kind} {outcome.detail!r} {outcome.problems}")
    assert problems == []
