"""The HL7 v2.5.1 ORU^R01 draft result, built with hl7apy (STRICT validation).

Segments: MSH, PID, PV1, ORC, OBR, NTE (the AI-draft notice and the model), then OBX:

* the patient's age at the study, where the drafts have one (PID has no age field; the SR's Patient's Age): an NM
  OBX coded LOINC 30525-0 "Age", or 29553-5 "Age calculated" where it was derived from the birth and study dates,
  its units UCUM (``a``, ``mo``, ``wk``, ``d``), observed at OBR-7 (the study) (:mod:`radtrace.reporting.draft_age`);
* per finding (sub-ID ``n``): a CWE OBX coding the finding (OBX-3) and its presence (OBX-5: Present /
  Absent / Indeterminate, SNOMED CT); an NM OBX with the model's confidence where known; CWE OBX per
  support device type named in the reasoning;
* the impression, the model's flags, each finding's evidence (``RT-EVID`` under the finding's sub-ID: the
  sentences the review console shows, :func:`radtrace.model.evidence.finding_evidence`), and the reasoning trace
  as TX OBX lines (one OBX-3 code per section; long text split over many OBX so that no OBX-5 exceeds 199
  characters). The evidence has an allowance of lines of its own (:data:`MAX_EVIDENCE_LINES`), the rest of the text
  its own (:data:`MAX_TEXT_LINES`), so the reasoning keeps its lines however many findings there are; what does not
  fit is left out (the SR holds it) and a flags line says how much, and where each kind of text was cut (the
  reasoning's section and character);
* the SHA-256 of the trace, the Study Instance UID and the SR's SOP Instance UID as ST OBX.

Result status (OBR-25, OBX-11) comes from settings: ``P`` by default, ``R`` allowed, ``F`` never. All
text goes through :func:`radtrace.reporting.text.hl7_escape` (``\\ | ^ & ~`` and every control character
as ``\\Xhh\\``; hl7apy does not escape assigned strings), and the message is ``UNICODE UTF-8`` (MSH-18).
Concatenating the unescaped OBX-5 values of one OBX-3/OBX-4 gives back the model's text as every draft
carries it (:func:`radtrace.reporting.text.draft_text`: the SR's and FHIR's text, controls other than LF and CR
replaced by U+FFFD, and then the flags say ``text-sanitised``). Patient and
study attributes come from :func:`radtrace.reporting.draft_header.draft_header`, the one rule of every draft
(names with their controls replaced by U+FFFD, as in the SR and FHIR; identifiers exact or left out): each value of a
multi-valued
Patient ID or Patient Name is one repetition of PID-3 / PID-5; what a field cannot hold is omitted and
listed in a header-notes OBX, never shortened. PID-3 carries the Patient ID values the SR carries, no others
(:func:`~radtrace.reporting.sr_header.draft_patient_ids`: one a DICOM LO cannot hold is left out of every draft
and flagged ``patient-id-omitted``), so the SR and the ORU never name different patients.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.evidence import finding_evidence
from radtrace.model.reading import FindingStatus, Reading
from radtrace.reporting import codes
from radtrace.reporting.codes import Code
from radtrace.reporting.draft_age import draft_age
from radtrace.reporting.draft_header import DraftHeader, draft_flags, draft_header
from radtrace.reporting.draft_notes import image_notes, labels_sanitised, output_flags
from radtrace.reporting.header import HeaderNote, SourceHeader, name_group
from radtrace.reporting.sr import (
    DRAFT_NOTICE_TEXT,
    draft_identity,
    reasoning_sha256,
)
from radtrace.reporting.text import draft_text, hl7_escape

__all__ = [
    "MAX_EVIDENCE_LINES",
    "MAX_OBX_VALUE",
    "MAX_TEXT_LINES",
    "Observation",
    "OruMessage",
    "build_observation_oru",
    "build_oru",
    "control_id_for",
    "escape",
    "split_text",
    "unescape",
]

MAX_OBX_VALUE: Final = 199  # hl7apy STRICT caps OBX-5; longer text goes over several OBX
LINE_TARGET: Final = 80  # raw characters per TX line, for readers that show one OBX per line
#: TX lines of the message's own text per message (impression, flags, notes, reasoning: 200 kB of plain text, 100 kB of
#: the most escaped): OBX-1 is an SI of at most 4 digits (9,999 OBX), and hl7apy STRICT builds a few hundred OBX a
#: second. The SR holds the whole text; the ORU says what it left out, and where it cut the reasoning.
MAX_TEXT_LINES: Final = 2500
#: TX lines of the findings' evidence, an allowance of its own beside :data:`MAX_TEXT_LINES`: the evidence repeats
#: sentences of the reasoning (at most :data:`radtrace.model.evidence.MAX_EVIDENCE` per finding), and drawn from the
#: reasoning's lines it cut the reasoning sooner the more findings a reading had. 400 lines hold six sentences of 150
#: characters for each of 30 findings.
MAX_EVIDENCE_LINES: Final = 400
STUDY_UID: Final = Code("110180", "DCM", "Study Instance UID", "DICOM PS3.16")
SR_UID: Final = codes.local_code("RT-SR-UID", "SR SOP Instance UID")
_PRESENCE: Final = {
    FindingStatus.PRESENT: codes.PRESENT,
    FindingStatus.ABSENT: codes.ABSENT,
    FindingStatus.UNCERTAIN: codes.INDETERMINATE,
}
_UNESCAPES: Final = {"E": "\\", "F": "|", "S": "^", "T": "&", "R": "~"}
_ESCAPE_SEQUENCE: Final = re.compile(r"\\(E|F|S|T|R|X[0-9A-Fa-f]+)\\")
# hl7apy re-escapes any backslash that does not start an E/F/S/T/R/H/N sequence, which would break the
# hex escapes (\Xhh\). They are built around a private-use stand-in, swapped for the backslash after
# to_er7(); text.hl7_escape hex-escapes the stand-in itself wherever a text holds it, so none is lost.
_HEX: Final = "\ue000"


def escape(text: str) -> str:
    """Escape HL7 delimiters and every control character (HL7 v2.5.1 section 2.7.4, 2.7.5)."""
    return hl7_escape(text)


def _esc(text: str) -> str:
    # What is assigned to hl7apy: escape() with the stand-in around hex sequences (see _HEX).
    return hl7_escape(text, hex_escape=_HEX)


def _restore_hex_escapes(er7: str) -> str:
    return er7.replace(_HEX, "\\")


def unescape(text: str) -> str:
    """Undo :func:`escape` (what a receiver does with a field's value; hex is UTF-8, as MSH-18 declares)."""

    def replace(match: re.Match[str]) -> str:
        sequence = match.group(1)
        if sequence[0] == "X":
            return bytes.fromhex(sequence[1:]).decode("utf-8")
        return _UNESCAPES[sequence]

    return _ESCAPE_SEQUENCE.sub(replace, text)


def split_text(text: str, *, target: int = LINE_TARGET, limit: int = MAX_OBX_VALUE) -> list[str]:
    """Split ``text`` into pieces whose concatenation is ``text``: about ``target`` characters each,
    broken after whitespace where possible, and each at most ``limit`` characters once escaped."""
    pieces: list[str] = []
    current = ""
    for token in re.findall(r"\S+\s*|\s+", text):
        while token:
            room = min(target - len(current), limit - len(_esc(current)))
            fits = len(token) <= room and len(_esc(current + token)) <= limit
            if fits:
                current += token
                token = ""
            elif current:
                pieces.append(current)
                current = ""
            else:  # one token longer than a line: cut it
                cut = 1
                while cut < len(token) and len(token[: cut + 1]) <= target and len(_esc(token[: cut + 1])) <= limit:
                    cut += 1
                pieces.append(token[:cut])
                token = token[cut:]
    if current:
        pieces.append(current)
    return pieces


def control_id_for(sr_sop_instance_uid: str) -> str:
    """A message control ID (MSH-10, ST 20) fixed by the SR it reports: retries and re-runs reuse it."""
    return "RT" + hashlib.sha256(sr_sop_instance_uid.encode()).hexdigest()[:18].upper()


@dataclass(frozen=True)
class OruMessage:
    """An ORU^R01 message: its ER7 text (segments separated by CR) and its control ID."""

    text: str
    control_id: str

    def encode(self) -> bytes:
        """The bytes sent over MLLP (UTF-8, as MSH-18 declares)."""
        return self.text.encode("utf-8")


def _cwe(code: Code) -> str:
    return "^".join(_esc(part) for part in (code.value, code.meaning, code.hl7_system))


def _hl7_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _study_datetime(header: SourceHeader) -> str:
    if header.study_date is None:
        return ""
    moment = header.study_date.strftime("%Y%m%d")
    return moment + header.study_time.strftime("%H%M%S") if header.study_time else moment


def _person_names(draft: DraftHeader) -> list[str]:
    """Each value of Patient Name as an XPN: DICOM PN family^given^middle^prefix^suffix → HL7
    family^given^middle^suffix^prefix, from the alphabetic group, or from the first later group that holds the
    name, with XPN.8 (Name Representation Code) ``I`` or ``P`` saying which."""
    names = []
    for value in draft.patient_names:  # the PN values every draft carries (controls already replaced, noted)
        (family, given, middle, prefix, suffix), representation = name_group(value)
        parts = [_esc(part.strip(" ")) for part in (family, given, middle, suffix, prefix)]
        if representation != "A":
            parts += ["", "", representation]  # XPN.6 degree, XPN.7 name type: not known
        name = "^".join(parts).rstrip("^")
        if name:
            names.append(name)
    return names


def _patient_ids(ids: Sequence[str], draft: DraftHeader, *, issuer: bool = True) -> list[str]:
    """Each value of Patient ID the drafts carry (``ids``, :func:`~radtrace.reporting.sr_header.draft_patient_ids`)
    as one CX repetition of PID-3, with the issuer (CX.4) on each."""
    authority = _esc(draft.issuer_of_patient_id) if issuer else ""
    return [f"{_esc(value)}^^^{authority}" if authority else _esc(value) for value in ids]


def _assign(segment: Any, name: str, values: Sequence[str]) -> bool:
    """Set field ``name`` to ``values`` (repetitions); False, with the field left empty, when there are
    none or the field cannot hold one (hl7apy STRICT: too long for its data type). Never shortens."""
    if not values:
        return False
    try:
        setattr(segment, name, values[0])
        for value in values[1:]:
            segment.add_field(name).value = value
    except HL7apyException:
        for field in list(segment.children.get(name)):  # the repetitions set before the one refused
            segment.children.remove(field)
        return False
    return True


def _omitted(keyword: str, field: str) -> HeaderNote:
    return HeaderNote(keyword, f"too long for {field}; omitted from the HL7 message")


@dataclass(frozen=True)
class _Cut:
    """One text the message could not hold whole: what it is (``place``), and its characters kept and written."""

    kind: Literal["text", "evidence", "reasoning"]
    place: str
    kept: int
    total: int


_KIND_NAMES: Final = {"text": "Text", "evidence": "Evidence", "reasoning": "Reasoning"}


class _Observations:
    """Appends OBX segments (with their OBSERVATION groups), numbering OBX-1."""

    def __init__(self, order: Any, status: str) -> None:
        self.order = order
        self.status = status
        self.count = 0
        #: TX lines left: the evidence's own allowance, and the rest of the text's.
        self.rooms = {"text": MAX_TEXT_LINES, "evidence": MAX_EVIDENCE_LINES}
        self.cuts: list[_Cut] = []  # texts not held whole, in message order

    def add(self, value_type: str, identifier: Code, value: str, sub_id: str = "", units: str = "") -> None:
        self.count += 1
        obx = self.order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(self.count)
        obx.obx_2 = value_type
        obx.obx_3 = _cwe(identifier)
        if sub_id:
            obx.obx_4 = sub_id
        obx.obx_5 = value
        if units:
            obx.obx_6 = units
        obx.obx_11 = self.status

    def text(
        self,
        identifier: Code,
        text: str,
        sub_id: str = "",
        *,
        kind: Literal["text", "evidence", "reasoning"] = "text",
        place: str = "",
    ) -> None:
        """Add ``text`` as TX lines, as far as its allowance goes (the evidence's, else the text's), cut before
        splitting: a megabyte of model text costs no more than the lines kept. A text not held whole is recorded
        as ``place`` (what it is, for :meth:`note_cut`)."""
        pool = "evidence" if kind == "evidence" else "text"
        room = self.rooms[pool]
        pieces = split_text(text[: room * LINE_TARGET])[:room]
        self.rooms[pool] -= len(pieces)
        kept = sum(len(piece) for piece in pieces)
        if kept < len(text):
            self.cuts.append(_Cut(kind, place or identifier.meaning, kept, len(text)))
        for piece in pieces:
            self.add("TX", identifier, _esc(piece), sub_id)

    def note_cut(self) -> None:
        """TX lines saying how much text did not fit, if any, and where each kind of text was cut: the first text
        cut, after how many of its characters, and which texts after it were left out whole."""
        if not self.cuts:
            return
        left_out = sum(cut.total - cut.kept for cut in self.cuts)
        parts = [
            f"{left_out} characters of text left out (over {MAX_TEXT_LINES} lines of text and {MAX_EVIDENCE_LINES} "
            "of evidence); the SR holds them."
        ]
        for kind, name in _KIND_NAMES.items():
            cuts = [cut for cut in self.cuts if cut.kind == kind]
            if not cuts:
                continue
            first, rest = cuts[0], cuts[1:]
            where = f"{name} cut in {first.place} after {first.kept} of {first.total} characters"
            if rest:
                others = rest[0].place if len(rest) == 1 else f"{rest[0].place} to {rest[-1].place}"
                where += f"; {len(rest)} more left out whole ({others})"
            parts.append(where + ".")
        for piece in split_text(" ".join(parts)):
            self.add("TX", codes.READING_FLAGS, _esc(piece))


def _age(header: SourceHeader, obx: _Observations, recorded_in: Dataset | None = None) -> None:
    """The patient's age at the study (PID has no age field): an NM OBX coded in LOINC, its units UCUM, with the value
    every draft carries (:func:`~radtrace.reporting.draft_age.draft_age`; ``recorded_in`` the draft SR ``header`` was
    read from, for the assessment ORU). No OBX-14: the observation's time is then OBR-7's, the study's (HL7 v2.5.1
    7.4.2.14)."""
    age = draft_age(header, recorded_in=recorded_in)
    if age is not None:
        unit = age.quantity
        obx.add("NM", age.code, str(unit.value), units=f"{unit.ucum}^{unit.unit}^UCUM")


def _findings(reading: Reading, obx: _Observations) -> None:
    for index, finding in enumerate(reading.findings, 1):
        sub_id = str(index)
        obx.add("CWE", codes.finding_code(finding.label).code, _cwe(_PRESENCE[finding.status]), sub_id)
        if finding.confidence is not None:
            obx.add("NM", codes.CONFIDENCE, f"{finding.confidence:.6g}", sub_id, "1^no units^UCUM")
        if finding.label.casefold() == "support devices" and finding.status is not FindingStatus.ABSENT:
            text = finding.evidence or " ".join(s.text for s in reading.reasoning if s.section == "devices")
            for device in codes.device_codes(text):
                obx.add("CWE", codes.DEVICE, _cwe(device), sub_id)


def _narrative(
    reading: Reading, obx: _Observations, study_uid: str, sr_sop_instance_uid: str, notes: Sequence[HeaderNote]
) -> None:
    texts = [reading.impression or "", *(step.text for step in reading.reasoning), reading.raw_text]
    # the model's text as the SR and FHIR carry it (draft_text: controls but LF and CR replaced), then escaped
    sanitised = any(draft_text(text).changed for text in texts) or labels_sanitised(reading)
    if reading.impression and reading.impression.strip():
        obx.text(codes.IMPRESSION, draft_text(reading.impression).text)
    flags = output_flags(reading, sanitised=sanitised, extra=draft_flags(notes))
    if flags:
        obx.text(codes.READING_FLAGS, flags)
    if taken := image_notes(reading):
        obx.text(codes.IMAGE_NOTES, taken)
    if notes:
        obx.text(codes.HEADER_NOTES, "\n".join(str(note) for note in notes))
    # each finding's evidence, as the review console shows it (one rule: radtrace.model.evidence), under the
    # finding's OBX-4; after the impression, so a reasoning too long for the message never pushes that out
    # under an allowance of their own, so that the reasoning keeps its lines however many findings a reading has
    for index, finding in enumerate(reading.findings, 1):
        for number, sentence in enumerate(finding_evidence(reading, finding), 1):
            if (text := draft_text(sentence).text).strip():
                place = f"finding {index}'s sentence {number} (OBX-4 {index})"
                obx.text(codes.EVIDENCE, text, sub_id=str(index), kind="evidence", place=place)
    for index, step in enumerate(reading.reasoning, 1):
        if step.text:
            code = codes.reasoning_code(step.section)
            place = f"R{index} ({step.section})"
            obx.text(code, draft_text(step.text).text, sub_id=f"R{index}", kind="reasoning", place=place)
    if not reading.reasoning and reading.raw_text.strip():
        obx.text(codes.RAW_OUTPUT, draft_text(reading.raw_text).text)
    obx.note_cut()
    obx.add("ST", codes.REASONING_SHA256, reasoning_sha256(reading))
    obx.add("ST", STUDY_UID, study_uid)
    obx.add("ST", SR_UID, sr_sop_instance_uid)


def _oru(
    source: Dataset,
    settings: ReportingSettings,
    control: str,
    when: datetime,
    notes: Sequence[str],
    observe: Callable[[_Observations, SourceHeader, list[HeaderNote]], None],
    others: Sequence[Dataset] = (),
) -> OruMessage:
    """An ORU^R01 (MSH, PID, PV1, ORC, OBR, NTE ``notes``) about ``source``'s patient and study, its OBX segments
    added by ``observe``; STRICT-validated. Raises :class:`ReportError` for result status F or an invalid message."""
    status = settings.hl7_result_status
    if status not in ("P", "R"):  # the setting refuses F already; a draft must never claim final
        raise ReportError(f"HL7 result status {status!r} is not allowed for a draft")
    draft = draft_header(source, others)  # the SR's and FHIR's values and notes (one rule)
    header, ids = draft.source, draft.patient_ids
    header_notes = list(draft.notes)
    accession = _esc(draft.accession_number)
    try:
        message = Message("ORU_R01", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
        msh = message.msh
        msh.msh_3 = _esc(settings.sending_application)
        msh.msh_4 = _esc(settings.sending_facility)
        msh.msh_5 = _esc(settings.receiving_application)
        msh.msh_6 = _esc(settings.receiving_facility)
        msh.msh_7 = _hl7_datetime(when)
        msh.msh_9 = "ORU^R01^ORU_R01"
        msh.msh_10 = control
        msh.msh_11 = "P"
        msh.msh_12 = "2.5.1"
        msh.msh_18 = "UNICODE UTF-8"

        result = message.add_group("ORU_R01_PATIENT_RESULT")
        patient = result.add_group("ORU_R01_PATIENT")
        pid = patient.pid
        pid.pid_1 = "1"
        if _assign(pid, "pid_3", _patient_ids(ids, draft)):
            pass
        elif draft.issuer_of_patient_id and _assign(pid, "pid_3", _patient_ids(ids, draft, issuer=False)):
            header_notes.append(_omitted("IssuerOfPatientID", "PID-3 CX.4"))
        else:
            if ids:
                header_notes.append(_omitted("PatientID", "PID-3"))
            pid.pid_3 = '""'  # required: an explicit null, never a made-up identifier
        names = _person_names(draft)
        if not _assign(pid, "pid_5", names):
            if names:  # a name PID-5 could not hold (a name of only delimiters is no name: nothing omitted)
                header_notes.append(_omitted("PatientName", "PID-5"))
            pid.pid_5 = '""'
        if header.birth_date:
            pid.pid_7 = header.birth_date.strftime("%Y%m%d")
        if header.sex:
            pid.pid_8 = header.sex
        patient.add_group("ORU_R01_VISIT").pv1.pv1_2 = "U"  # patient class unknown to radtrace

        order = result.add_group("ORU_R01_ORDER_OBSERVATION")
        order.orc.orc_1 = "RE"  # observations to follow
        obr = order.obr
        obr.obr_1 = "1"
        if accession and not _assign(order.orc, "orc_3", [accession]):
            header_notes.append(_omitted("AccessionNumber", "ORC-3"))
        elif accession:
            obr.obr_3 = accession
            obr.obr_18 = accession
        obr.obr_4 = _cwe(codes.CHEST_XRAY)
        study_time = _study_datetime(header)
        if study_time:
            obr.obr_7 = study_time
        obr.obr_22 = _hl7_datetime(when)
        obr.obr_24 = "RAD"
        obr.obr_25 = status
        for number, note in enumerate(notes, 1):
            nte = order.add_segment("NTE")
            nte.nte_1 = str(number)
            nte.nte_2 = "L"
            nte.nte_3 = _esc(note)

        observe(_Observations(order, status), header, list(dict.fromkeys(header_notes)))
        message.validate()
        text = _restore_hex_escapes(message.to_er7()) + "\r"  # every segment ends with CR, the last one too
    except HL7apyException as exc:
        raise ReportError(f"HL7 ORU could not be built: {exc}") from exc
    return OruMessage(text=text, control_id=control)


def build_oru(
    reading: Reading,
    source: Dataset,
    *,
    settings: ReportingSettings,
    sr_sop_instance_uid: str,
    control_id: str | None = None,
    created_at: datetime | None = None,
    others: Sequence[Dataset] = (),
) -> OruMessage:
    """Build the ORU^R01 for one reading; ``source`` is the image whose patient and study it reports, ``others`` the
    other images the model was shown (their header notes are listed too, as in the SR and FHIR).

    Raises :class:`ReportError` if the result status would be ``F`` or the message fails hl7apy's
    STRICT validation.
    """
    identity = draft_identity(reading.identity)  # the SR's and FHIR's names of the model
    notes = [
        DRAFT_NOTICE_TEXT,
        f"Model: {identity.model_name} {identity.revision or ''} (profile {identity.profile} "
        f"{identity.profile_version}); codes {codes.CODE_TABLE_VERSION}",
    ]

    def observe(observations: _Observations, header: SourceHeader, header_notes: list[HeaderNote]) -> None:
        _age(header, observations)
        _findings(reading, observations)
        _narrative(reading, observations, header.study_instance_uid, sr_sop_instance_uid, header_notes)

    control = control_id or control_id_for(sr_sop_instance_uid)
    return _oru(source, settings, control, created_at or datetime.now(UTC), notes, observe, others)


@dataclass(frozen=True)
class Observation:
    """One observation of :func:`build_observation_oru`: a CWE (``value`` a :class:`Code`), a TX (text, split over
    as many OBX as it needs) or an ST (short text), with an optional OBX-4 sub-ID grouping observations."""

    value_type: Literal["CWE", "TX", "ST"]
    identifier: Code
    value: Code | str
    sub_id: str = ""


def build_observation_oru(
    source: Dataset,
    observations: Sequence[Observation],
    *,
    settings: ReportingSettings,
    control_id: str,
    notes: Sequence[str],
    created_at: datetime | None = None,
) -> OruMessage:
    """An ORU^R01 about ``source``'s patient and study carrying ``observations`` (e.g. a radiologist's assessment
    of a draft: :mod:`radtrace.console.assessment`), with the same header, result status rule (P or R, never F)
    and escaping as the draft's; NTE ``notes`` say what it is. Its first OBX is the patient's age at the study where
    the source has one, as the draft ORU's (``source`` the draft SR: its Patient's Age, calculated where the SR's
    header notes say it was derived)."""

    def observe(obx: _Observations, header: SourceHeader, header_notes: list[HeaderNote]) -> None:
        _age(header, obx, recorded_in=source)
        for item in observations:
            if isinstance(item.value, Code):
                obx.add("CWE", item.identifier, _cwe(item.value), item.sub_id)
            elif item.value_type == "TX":
                obx.text(item.identifier, item.value, item.sub_id)
            else:
                obx.add(item.value_type, item.identifier, _esc(item.value), item.sub_id)
        if header_notes:
            obx.text(codes.HEADER_NOTES, "\n".join(str(note) for note in header_notes))
        obx.note_cut()

    return _oru(source, settings, control_id, created_at or datetime.now(UTC), notes, observe)


def observation_texts(segments: Iterator[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """Join (OBX-3 code, OBX-4 sub-ID, unescaped OBX-5) triples into one text per code and sub-ID."""
    joined: dict[tuple[str, str], str] = {}
    for code, sub_id, value in segments:
        joined[(code, sub_id)] = joined.get((code, sub_id), "") + value
    return joined
