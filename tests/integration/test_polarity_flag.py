"""A film read as a negative reaches the radiologist: the worklist's flag, the study page's warning, the drafts' note.

The inversion step flags a picture that looks like a negative (model/polarity.py: a Photometric Interpretation that
is wrong) and a Presentation LUT Shape that contradicts the Photometric Interpretation (model/image.py), but both
stayed in ``SourceImage.preparation`` and the audit: the worklist, the study page, the SR and the ORU said nothing,
and the radiologist reviewed findings the model made on a negative. Here a real film (NIH, MONOCHROME2) goes through
the worker's reading path with the tiny model three times: as stored, with its Photometric Interpretation swapped
(the negative a wrong header makes), and with a Presentation LUT Shape INVERSE that contradicts its MONOCHROME2.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import hl7
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from console_support import add_user, console_client, sign_in, study_path
from radtrace.config import Settings, load_settings
from radtrace.model.reader import StudyReader
from radtrace.reporting import codes
from radtrace.reporting.draft_store import DRAFT_FILES, drafts_root
from radtrace.reporting.hl7 import observation_texts
from radtrace.store.engine import Store
from radtrace.testing.ablation import load_film
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import DICOMDIR_WARNING, PRIVATE_SCHEME_WARNING, dciodvfy_lines
from worker_support import spool_study

pytestmark = pytest.mark.integration

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
IMAGE_NOTES = "How the images read were taken"
NEGATIVE = "the picture the model read looks like a negative (polarity score -0.55; the header says MONOCHROME1)"
CONTRADICTION = "the header contradicts itself on polarity (Presentation LUT Shape INVERSE with Photometric"


def _film(name: str, seed: int) -> list[Dataset]:
    """The NIH film as a study of its own (UIDs, patient and accession of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(FILM)
    ds = copy.deepcopy(ds)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["polarity-flag", name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["polarity-flag", name, "series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["polarity-flag", name])
    ds.PatientID = f"RT{seed:07d}"
    ds.PatientName = f"POLARITY^{name.upper()}"
    ds.AccessionNumber = f"ACC{seed:06d}"
    return [ds]


def _read(settings: Settings, store: Store, reader: StudyReader, datasets: list[Dataset]) -> str:
    study_uid, number = spool_study(settings, store, datasets)
    result = StudyPipeline(settings, store, reader, worker="polarity-test").process(study_uid, number)
    assert result.result is Result.REPORTED, result
    return study_uid


def _sr_notes(settings: Settings, study_uid: str, tmp_path: Path) -> tuple[str | None, list[str]]:
    """(the SR's 'How the images read were taken' text, dciodvfy's errors and unexpected warnings)."""
    path = drafts_root(settings) / study_uid / "1" / DRAFT_FILES["sr"]
    ds = pydicom.dcmread(path)
    container = next(item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "C0034375")
    found = [
        item.TextValue
        for item in container.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == IMAGE_NOTES
    ]
    lines = dciodvfy_lines(path)
    problems = [line for line in lines if "Error" in line]
    problems += [
        line for line in lines if "Warning" in line and not line.startswith((PRIVATE_SCHEME_WARNING, DICOMDIR_WARNING))
    ]
    return (found[0] if found else None), problems


def _hl7_notes(settings: Settings, study_uid: str) -> str:
    """The ORU's image-notes text as a receiver reads it back (its TX lines joined, unescaped)."""
    text = (drafts_root(settings) / study_uid / "1" / DRAFT_FILES["hl7"]).read_text()
    message = hl7.parse(text.replace("\r\n", "\r").replace("\n", "\r"))
    triples = ((str(s[3][0][0]), str(s[4]), message.unescape(str(s[5]))) for s in message.segments("OBX"))
    return observation_texts(triples).get((codes.IMAGE_NOTES.value, ""), "")


def _worklist_row(client: TestClient, patient_id: str, which: str = "all") -> str:
    page = client.get(f"/console/worklist?filter={which}")
    assert page.status_code == 200
    rows = [row for row in re.findall(r"<tr class=\"row.*?</tr>", page.text, re.S) if patient_id in row]
    return rows[0] if rows else ""


def _warning(page: str) -> str:
    found = re.search(r'<section class="card polarity-warning".*?</section>', page, re.S)
    return found.group(0) if found else ""


def test_a_film_read_as_a_negative_is_flagged_warned_and_noted_and_a_normal_film_is_not(
    store: Store, tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"path": tiny_model_dir, "device": "cpu", "max_new_tokens": 32},
        console={"sync_interval_s": 0},
    )
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    normal = _film("normal", 1)
    swapped = _film("swapped", 2)
    swapped[0].PhotometricInterpretation = "MONOCHROME1"  # the same pixels under the other interpretation
    contradicting = _film("contradicting", 3)
    contradicting[0].PresentationLUTShape = "INVERSE"  # says MONOCHROME1 while the film is MONOCHROME2
    uids = {name: _read(settings, store, reader, films) for name, films in
            (("normal", normal), ("swapped", swapped), ("contradicting", contradicting))}  # fmt: skip

    # the drafts: the note in the SR (valid) and in the ORU, where the view notes already go
    notes = {}
    for name, study_uid in uids.items():
        sr_text, problems = _sr_notes(settings, study_uid, tmp_path)
        assert problems == [], (name, problems)
        assert _hl7_notes(settings, study_uid) == (sr_text or ""), name
        notes[name] = sr_text or ""
    assert NEGATIVE in notes["swapped"]
    assert "the Photometric Interpretation may be wrong" in notes["swapped"]
    assert notes["swapped"].startswith("frontal image (")
    assert CONTRADICTION in notes["contradicting"]
    assert "Interpretation MONOCHROME2): read as MONOCHROME2 says" in notes["contradicting"]
    assert "negative" not in notes["contradicting"].replace("shows the film the other way round", "")
    assert "negative" not in notes["normal"]
    assert "contradicts" not in notes["normal"]

    add_user(store, "dr.film", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.film")
        # the worklist: a flag on the negative and on the contradiction, none on the film as stored
        swapped_row, contradicting_row = _worklist_row(client, "RT0000002"), _worklist_row(client, "RT0000003")
        normal_row = _worklist_row(client, "RT0000001")
        assert '<span class="pill flag">suspected negative</span>' in swapped_row
        assert "polarity header contradiction" not in swapped_row
        assert '<span class="pill flag">polarity header contradiction</span>' in contradicting_row
        assert "suspected negative" not in contradicting_row
        assert normal_row
        assert "suspected negative" not in normal_row
        assert "polarity" not in normal_row
        assert _worklist_row(client, "RT0000002", "flagged")
        assert _worklist_row(client, "RT0000003", "flagged")

        # the study page: a warning naming the image, the score and what the header said
        page = client.get(study_path(store, uids["swapped"]))
        assert page.status_code == 200
        warning = _warning(page.text)
        assert 'role="alert"' in warning
        assert "Check the image polarity before trusting this draft" in warning
        assert "<strong>Frontal image · " in warning
        assert NEGATIVE in warning
        assert "mediastinum over lungs -0.46; centre over border -0.09" in warning
        assert 'data-kind="suspected-negative"' in warning
        assert 'data-kind="polarity-contradiction"' not in warning
        head_flags = re.search(r'data-testid="flags">(.*?)</div>', page.text, re.S)
        assert head_flags is not None
        # the study page writes each flag as free text (275765c: a flag read back from a stored reading)
        assert '<span class="pill flag"><bdi class="free-text">suspected negative</bdi></span>' in head_flags.group(1)
        contradiction = _warning(client.get(study_path(store, uids["contradicting"])).text)
        assert 'data-kind="polarity-contradiction"' in contradiction
        assert CONTRADICTION in contradiction
        assert 'data-kind="suspected-negative"' not in contradiction
        normal_page = client.get(study_path(store, uids["normal"]))
        assert normal_page.status_code == 200
        assert _warning(normal_page.text) == ""
        assert "polarity" not in normal_page.text
        assert "suspected negative" not in normal_page.text
