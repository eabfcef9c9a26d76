"""A real film whose name's character set is not declared (usably) gives drafts with the right name, flagged.

Real modalities write UTF-8 or Latin-1 names with no Specific Character Set (0008,0005), with ``ISO_IR 6`` or with
a term that is not a defined term. pydicom reads such text as Latin-1: ``Müller`` written in UTF-8 became
``MÃ¼ller`` in the worker, and the SR wrote that under its own ``ISO_IR 192`` (the mojibake made permanent and
valid), the ORU and FHIR the same. Now UTF-8 bytes are read as UTF-8, other bytes as the declared term corrected or
the site's assumed set (ISO_IR 100 by default), and the drafts flag it (``character-set-assumed``) and say it on
the image's line.

Films: copies of the NIH ChestX-ray14 film (tests/data/real-cxr, which has no (0008,0005)) with the name's bytes
written raw, read by the worker's own path (``spooled_image``, ``prepare_study``), drafts built from what it read.
Each SR: dciodvfy clean, its declared character set decodes the name's raw bytes to the intended name; each ORU:
hl7apy STRICT parse + validate, PID-5 the intended name; FHIR Patient too; no mojibake in any of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmread
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement

from radtrace.config import ReportingSettings
from radtrace.model.charset import CHARACTER_SET_ASSUMED
from radtrace.model.study import StudyInput, prepare_study, spooled_image
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from radtrace.reporting.sr_header import person_name
from reporting_support import reading
from tests_support import sr_dciodvfy

pytestmark = pytest.mark.integration

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
WHEN = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
PYDICOM_TERM_WARNINGS = "(Unknown encoding|Invalid value for VR CS|Incorrect value for Specific)"
MOJIBAKE = ("Ã", "Â", "ã\x83", "\ufffd")


def _film(folder: Path, name: bytes, charset: str | None, *, given_name: bytes | None = None) -> Path:
    """A copy of the NIH film with PatientName's bytes exactly ``name`` and (0008,0005) ``charset`` (None: none)."""
    ds = dcmread(FILM)
    assert "SpecificCharacterSet" not in ds  # as NIH's wrapping sent it
    path = folder / "film.dcm"
    with warnings.catch_warnings():  # pydicom warns on a misspelt or unknown term: writing one is the point here
        warnings.filterwarnings("ignore", message=PYDICOM_TERM_WARNINGS)
        if charset is not None:
            ds.add(DataElement(0x00080005, "CS", charset))
        ds.add(DataElement(0x00100010, "PN", name))
        ds.save_as(path, enforce_file_format=True)
    assert name in path.read_bytes()  # the name's bytes as given, not re-encoded
    return path


def _read(path: Path, **kwargs: Any) -> tuple[Any, StudyInput]:
    """The film as the worker reads it: its header (``spooled_image``), then the frontal view prepared from the
    whole file (``prepare_study``, which reads it again through ``whole``)."""
    image = spooled_image(path, hashlib.sha256(path.read_bytes()).hexdigest(), **kwargs)
    prepared = prepare_study([image], min_pixels=128 * 128, max_pixels=256 * 256, accept_unknown_view=True)
    assert isinstance(prepared, StudyInput)
    return image.dataset, prepared


def _drafts(path: Path, folder: Path, **kwargs: Any) -> dict[str, Any]:
    """Every draft of a reading of the film, read back: SR (strict pydicom, raw name bytes, flags, image notes,
    dciodvfy), ORU (hl7apy STRICT, validated: PID-5), FHIR Patient name."""
    header, prepared = _read(path, **kwargs)
    sources = [header]
    files = build_drafts(
        reading(sources, images=prepared.sources), sources, settings=ReportingSettings(), revision=1, created_at=WHEN
    )
    with config.strict_reading():
        sr = dcmread(io.BytesIO(files.sr))
        for element in sr.iterall():
            _ = element.value
    raw = dcmread(io.BytesIO(files.sr), defer_size=None)
    raw_name = raw.get_item(0x00100010).value
    texts: dict[str, str] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                texts[item.ConceptNameCodeSequence[0].CodeValue] = item.TextValue
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    errors, cautions = sr_dciodvfy(sr, folder / "sr.dcm")
    oru = parse_message(files.hl7.decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    oru.validate()
    pid5 = files.hl7.decode("utf-8").split("\rPID|")[1].split("|")[4]
    bundle = json.loads(files.fhir)
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return {
        "read": str(header.PatientName),
        "sr_charset": sr.SpecificCharacterSet,
        "sr_name": str(sr.PatientName),
        "sr_name_decoded": raw_name.rstrip(b" ").decode(convert_encodings(raw.SpecificCharacterSet)[0]),
        "flags": {flag.strip() for flag in texts.get(codes.READING_FLAGS.value, "").split(",") if flag.strip()},
        "image_notes": texts.get(codes.IMAGE_NOTES.value, ""),
        "dciodvfy": (errors, cautions),
        "msh18": files.hl7.decode("utf-8").split("\r")[0].split("|")[17],
        "pid5": "^".join(unescape(part) for part in pid5.split("^")[:2]),
        "fhir": (patient["name"][0].get("family", ""), " ".join(patient["name"][0].get("given", []))),
        "preparation": prepared.sources[0].preparation,
    }


CASES = [
    # (what the modality wrote, the name's bytes, (0008,0005), the name the drafts must carry, read as)
    ("utf-8, none declared", "Müller^Jürgen".encode(), None, "Müller^Jürgen", "ISO_IR 192"),
    ("utf-8 kana, ISO_IR 6", "ドウ^ジョン".encode(), "ISO_IR 6", "ドウ^ジョン", "ISO_IR 192"),
    ("utf-8, unknown term", "Ødegård^Åse".encode(), "ISO_IR 999", "Ødegård^Åse", "ISO_IR 192"),
    ("latin-1, none declared", "Müller^Jürgen".encode("latin-1"), None, "Müller^Jürgen", "ISO_IR 100"),
    ("cyrillic, misspelt term", "Иванов^Иван".encode("iso8859_5"), "ISO-IR 144", "Иванов^Иван", "ISO_IR 144"),
]


@pytest.mark.parametrize(("case", "name", "charset", "intended", "read_as"), CASES, ids=[c[0] for c in CASES])
def test_an_undeclared_name_reaches_every_draft_as_written_and_flagged(
    case: str, name: bytes, charset: str | None, intended: str, read_as: str, tmp_path: Path
) -> None:
    drafts = _drafts(_film(tmp_path, name, charset), tmp_path)
    family, given_name = intended.split("^")
    assert drafts["read"] == intended
    assert drafts["sr_charset"] == "ISO_IR 192"
    assert drafts["sr_name"] == drafts["sr_name_decoded"] == intended
    assert drafts["dciodvfy"] == ([], [])
    assert drafts["msh18"] == "UNICODE UTF-8"
    assert drafts["pid5"] == intended
    assert drafts["fhir"] == (family, given_name)
    assert CHARACTER_SET_ASSUMED in drafts["flags"]
    assert f"read as {read_as}" in drafts["image_notes"]
    [header_step] = [step for step in drafts["preparation"] if step.get("step") == "header"]
    assert header_step["character_set"]["read_as"] == read_as  # the audit payload (inference_completed) has it
    for text in (drafts["sr_name"], drafts["pid5"], *drafts["fhir"]):
        assert not any(marker in text for marker in MOJIBAKE)


def test_a_site_that_assumes_another_single_byte_set_reads_undeclared_bytes_in_it(tmp_path: Path) -> None:
    path = _film(tmp_path, "Иванов^Иван".encode("iso8859_5"), None)
    drafts = _drafts(path, tmp_path, assumed_character_set="ISO_IR 144")
    assert drafts["sr_name"] == drafts["pid5"] == "Иванов^Иван"
    assert "read as ISO_IR 144 (not valid UTF-8: the site's assumed character set)" in drafts["image_notes"]


def test_a_declared_or_ascii_name_is_read_as_it_says_and_not_flagged(tmp_path: Path) -> None:
    declared = _drafts(_film(tmp_path, "Müller^Jürgen".encode("latin-1"), "ISO_IR 100"), tmp_path)
    assert declared["sr_name"] == "Müller^Jürgen"
    assert CHARACTER_SET_ASSUMED not in declared["flags"]
    ascii_only = _drafts(_film(tmp_path, b"Doe^John", None), tmp_path)
    assert ascii_only["sr_name"] == "Doe^John"
    assert CHARACTER_SET_ASSUMED not in ascii_only["flags"]
    assert "Specific Character Set" not in ascii_only["image_notes"]


_COMPONENT_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ -'")
_LATIN1_LETTERS = st.sampled_from("äöüßéèêàáçñøåÄÖÜÉÑØÅ")
_UTF8_ONLY = st.sampled_from("ŁłŚśŻźČčĞğİışŐőЖжИвандовドウジョン山田太郎ΑλέξηςĀā")


def _component(accented: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A name component of 1 to 10 characters, at least one of them ``accented``."""
    return st.tuples(
        st.text(_COMPONENT_CHARS, max_size=4), accented, st.text(st.one_of(_COMPONENT_CHARS, accented), max_size=5)
    ).map(lambda parts: "".join(parts).strip() or parts[1])


# No shrinking: each example reads a real film twice and runs dciodvfy (shrinking one took five minutes).
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    kind=st.sampled_from(["utf-8", "latin-1", "mixed"]),
    charset=st.sampled_from([None, "ISO_IR 6", "", "UTF8X"]),
    data=st.data(),
)
def test_property_undeclared_names_are_read_right_or_flagged(kind: str, charset: str | None, data: Any) -> None:
    """Valid UTF-8 names read as UTF-8; Latin-1-only names (each has an accented letter in C4..FF, so its bytes are
    never valid UTF-8) read as Latin-1; a name mixing both cannot be read right, and is read as the site's set and
    flagged. Every SR: dciodvfy clean, its declared set decoding its name bytes to what was read; ORU strict."""
    if kind == "utf-8":
        family, given_name = data.draw(_component(_UTF8_ONLY)), data.draw(_component(_LATIN1_LETTERS))
        encoded = f"{family}^{given_name}".encode()
    elif kind == "latin-1":
        family, given_name = data.draw(_component(_LATIN1_LETTERS)), data.draw(_component(_LATIN1_LETTERS))
        encoded = f"{family}^{given_name}".encode("latin-1")
    else:
        family, given_name = data.draw(_component(_UTF8_ONLY)), data.draw(_component(_LATIN1_LETTERS))
        encoded = family.encode() + b"^" + given_name.encode("latin-1")
    with tempfile.TemporaryDirectory() as folder:
        drafts = _drafts(_film(Path(folder), encoded, charset), Path(folder))
    assert drafts["dciodvfy"] == ([], [])
    assert drafts["sr_charset"] == "ISO_IR 192"
    # what was read, as PN carries it (a C1 control that Latin-1 makes of a UTF-8 byte becomes U+FFFD)
    assert drafts["sr_name"] == drafts["sr_name_decoded"] == person_name(drafts["read"], "PatientName", [])
    assert CHARACTER_SET_ASSUMED in drafts["flags"]
    if kind == "mixed":
        assert drafts["read"] == encoded.decode("latin-1")  # the site's set (ISO_IR 100): wrong, and flagged
        assert "read as ISO_IR 100 (not valid UTF-8" in drafts["image_notes"]
        return
    assert drafts["read"] == drafts["pid5"] == f"{family}^{given_name}"
    assert drafts["fhir"] == (family, given_name)
    for text in (drafts["sr_name"], drafts["pid5"], *drafts["fhir"]):
        assert not any(marker in text for marker in MOJIBAKE)
