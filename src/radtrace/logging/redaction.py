"""Patient identifiers out of log text, and every control character escaped: what each log line is made of.

A handler's :class:`~radtrace.logging.records.PatientDataFilter` applies these after the message is formatted. Much
of what is logged comes from a peer (AE titles, UIDs, element values, PDU bytes, pynetdicom's and pydicom's warnings
about them): :func:`escape` writes every control character as ``\\xNN``, so that a newline or NUL in a calling AE
title cannot forge a log line. :func:`redact_text` removes the forms of patient data it knows and the values
registered with :func:`redacting`; :func:`study_key` is the only study reference a log line holds. A message longer
than :data:`MAX_MESSAGE_CHARS` is cut, saying how much was left out.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # pydicom is imported by what handles DICOM, not by every radtrace command that logs
    from pydicom.dataset import Dataset

__all__ = [
    "MAX_MESSAGE_CHARS",
    "REDACTED",
    "escape",
    "patient_values",
    "redact_text",
    "redacting",
    "registered",
    "study_key",
]

REDACTED: Final = "<redacted>"

# Keywords and names of patient-identifying attributes (Patient module, group 0010).
_PATIENT_WORDS = (
    r"PatientName|PatientID|PatientBirthDate|PatientBirthTime|OtherPatientIDs|OtherPatientNames|"
    r"OtherPatientIDsSequence|PatientAddress|PatientMotherBirthName|PatientTelephoneNumbers|IssuerOfPatientID|"
    r"Patient's Name|Patient ID|Patient's Birth Date|Patient's Birth Time|Other Patient IDs|Other Patient Names|"
    r"Patient's Address|Patient's Mother's Birth Name|patient_name|patient_id|birth_date"
)
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # pydicom / dcmdump dataset lines: "(0010,0010) Patient's Name   PN: 'DOE^JOHN'" or "(0010,0010) PN [DOE^JOHN]"
    (
        re.compile(r"(\(0010,\s?[0-9A-Fa-f]{4}\)[^\n]*?)(?:[A-Z]{2}:\s*|[A-Z]{2}\s+)(\[[^\]\n]*\]|'[^'\n]*'|[^\n]*)"),
        rf"\1{REDACTED}",
    ),
    # keyword=value / keyword: value / "keyword": "value" / 'keyword': 'value' (a dict's repr)
    (
        re.compile(
            rf"([\"']?\b(?:{_PATIENT_WORDS})[\"']?\s*[:=]\s*)(\"[^\"\n]*\"|'[^'\n]*'|[^,;\s\n}}\]]+)", re.IGNORECASE
        ),
        rf"\1{REDACTED}",
    ),
    # pydicom quoting a value it finds invalid ("Invalid value for VR DA: '19561103x'.", "Unable to convert
    # '...' to 'DA' object", 'Value "x" is not valid for elements with a VR of DS'): for the VRs that hold names,
    # dates, ages, free text, the patient's sex, size and weight, and UIDs (a log line names a study by its
    # study_key, never by its Study Instance UID), the value goes.
    (
        re.compile(
            r"(Invalid value for VR (?:PN|DA|DT|TM|AS|LO|SH|LT|ST|UT|UC|CS|DS|IS|UI): )(?:'[^'\n]*'|\"[^\"\n]*\"|\S+)"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r'(Value )"[^"\n]*"( is not valid for elements with a VR of (?:DS|IS))'), rf"\1{REDACTED}\2"),
    (
        re.compile(r"(Unable to convert (?:non-conformant value )?)'[^'\n]*'( to '(?:DA|DT|TM)' object)"),
        rf"\1{REDACTED}\2",
    ),
    # highdicom's check of a person name quotes the name
    (re.compile(r'(The string ")[^"\n]*(" is unlikely to represent the intended person name)'), rf"\1{REDACTED}\2"),
    # HL7 v2 PID segment: keep the segment id, drop every field
    (re.compile(r"(^|[\r\n]|\\r|\s)PID\|[^\r\n]*"), rf"\1PID|{REDACTED}"),
)

_registered_values: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "radtrace_redacted_values", default=frozenset()
)


# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators, the bidirectional controls (which make
# a line read as something else than it holds: U+202E turns the rest of it around), and lone surrogates (bytes a
# file name or a peer's text decoded with surrogateescape: no UTF-8 stream can write them, and logging's error
# handler would print the record's raw arguments instead).
_BIDI: Final = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_SURROGATE: Final = r"\ud800-\udfff"
_CONTROL: Final = re.compile(rf"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}{_SURROGATE}]")
_CONTROL_BUT_NEWLINE: Final = re.compile(rf"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}{_SURROGATE}]")
# A record's message, an extra's value and an exception's message are cut to this many characters (before
# escaping): a peer's megabyte-long value must not become a megabyte-long log line.
MAX_MESSAGE_CHARS: Final = 8_000


def _hex(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(value: object) -> str:
    """``value`` as text with every control character written ``\\xNN``: one line, nothing hidden.

    For any peer-supplied string (AE title, UID, element value, PDU bytes) before it is logged; the
    log filter applies it to every message as well.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("ascii", "backslashreplace")  # raw bytes: anything not ASCII as \\xNN
    return _CONTROL.sub(_hex, str(value))


def study_key(study_instance_uid: str) -> str:
    """A short, stable, non-reversible key for a study, the only study reference allowed in logs."""
    return hashlib.sha256(study_instance_uid.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def redacting(*values: object) -> Iterator[None]:
    """Within this block (and its thread / task context), also scrub these values from logs, as whole tokens.

    Used where a step holds a patient's identifiers (e.g. while handling one instance) so that
    even free text mentioning them, such as a library's error message, is scrubbed. What is matched
    (:func:`_terms`): each value whole; a person name's components and their words; a birth date in its usual
    written forms.
    """
    terms = _terms(values)
    if not terms:
        yield
        return
    token = _registered_values.set(_registered_values.get() | terms)
    try:
        yield
    finally:
        _registered_values.reset(token)


# Scripts written without spaces between words (Han, kana, Hangul): a name there is matched wherever it stands.
_UNSPACED: Final = re.compile(r"[\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
                              r"\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")  # fmt: skip
_DATE: Final = re.compile(r"(\d{4})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")


def _terms(values: Iterable[object]) -> frozenset[str]:
    """What :func:`redacting` matches for these values.

    - Each value whole, from 2 characters.
    - A person name (a value with ``^`` or ``=``): each component group and component, and each word of a
      component (``VAN DER BERG``, ``ANNE-MARIE``), from 2 characters, or 1 in a script written without spaces
      (``李``, ``김``). A single Latin letter is left alone: it names no one, and as a token it is ``a``, ``I``, a
      view (``L``) or a sex (``M``); the name around it is scrubbed.
    - A date of 8 digits (a birth date): also as 1873-04-17, 1873/04/17, 17.04.1873, 17/04/1873 and 04/17/1873.
    """
    terms: set[str] = set()
    for value in values:
        if value is None:
            continue
        text = str(value).strip()
        if len(text) >= 2:
            terms.add(text)
        if "^" in text or "=" in text:
            for group in text.split("="):
                pieces = [group, *group.split("^")]
                pieces += [word for component in group.split("^") for word in re.split(r"[\s\-]+", component)]
                terms.update(p for piece in pieces if len(p := piece.strip()) >= 2 or _UNSPACED.match(p))
        if date := _DATE.fullmatch(text):
            year, month, day = date.groups()
            terms.update((f"{year}-{month}-{day}", f"{year}/{month}/{day}", f"{day}.{month}.{year}",
                          f"{day}/{month}/{year}", f"{month}/{day}/{year}"))  # fmt: skip
    return frozenset(terms)


def _word_edge(char: str) -> bool:
    """Whether a term's first or last character has a token boundary to check: a letter, digit or ``_`` of a script
    written with spaces."""
    return (char.isalnum() or char == "_") and not _UNSPACED.match(char)


def _term_pattern(term: str) -> str:
    """``term`` as a whole token: not inside a longer word (letters, digits, ``_``), nor inside a number or a UID
    (digits joined by dots); case-insensitive from 3 characters. An edge in a script written without spaces has no
    boundary to check. 1 or 2 characters (``LI``, ``AN``, ``O``) match as registered, in capitals or capitalised
    (``Li``) only: in lower case, ``an``, ``no``, ``do``, ``he`` are English words a log line is made of. The check
    before a term that starts a word (``(?<!\\w)``) is :func:`_matcher`'s, made once for all of them."""
    if len(term) <= 2:
        forms = dict.fromkeys(re.escape(form) for form in (term, term.upper(), term.capitalize()))
        body = "(?:" + "|".join(forms) + ")"
    else:
        body = f"(?i:{re.escape(term)})"
    before = r"(?<!\d\.)" if term[0].isdigit() else ""
    after = ""
    if _word_edge(term[-1]):
        after = r"(?!\w)(?!\.\d)" if term[-1].isdigit() else r"(?!\w)"
    return f"{before}{body}{after}"


def _alternatives(terms: Iterable[str]) -> str:
    return "|".join(_term_pattern(term) for term in sorted(terms, key=lambda t: (-len(t), t)))


@functools.lru_cache(maxsize=256)
def _matcher(terms: frozenset[str]) -> re.Pattern[str]:
    """One pattern for a registered set: its terms, longest first (a whole name before its components). Terms that
    start a word are tried only where a word starts, and only when its first character could be theirs."""
    words = {term for term in terms if _word_edge(term[0])}
    others = terms - words
    parts = []
    if words:
        firsts = "".join(sorted({c for term in words for c in (term[0], term[0].upper(), term[0].lower())}))
        parts.append(rf"(?<!\w)(?=[{re.escape(firsts)}])(?:{_alternatives(words)})")
    if others:
        parts.append(f"(?:{_alternatives(others)})")
    return re.compile("|".join(parts))


def registered() -> frozenset[str]:
    """The values registered with :func:`redacting` in this context, to register them again where the context does
    not reach (another process: :mod:`radtrace.worker.drafting`)."""
    return _registered_values.get()


_PATIENT_KEYWORDS: Final = ("PatientName", "PatientID", "PatientBirthDate", "IssuerOfPatientID", "AccessionNumber")


def patient_values(datasets: Iterable[Dataset]) -> tuple[str, ...]:
    """The patient's name, ID, birth date, the issuer and the accession in a study's headers: what
    :func:`redacting` is given while the study is handled."""
    values: set[str] = set()
    for ds in datasets:
        for keyword in _PATIENT_KEYWORDS:
            with contextlib.suppress(Exception):  # a value pydicom cannot convert is not logged by us either
                if value := ds.get(keyword):
                    values.add(str(value))
    return tuple(sorted(values))


def redact_text(text: str) -> str:
    """Remove patient identifiers from a piece of text (a formatted log message or traceback): the forms
    :data:`_PATTERNS` knows, then the values registered with :func:`redacting`, as whole tokens."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if terms := _registered_values.get():
        text = _matcher(terms).sub(REDACTED, text)
    return text


def _dataset_values(args: object) -> set[str]:
    """Patient identifiers held by any pydicom dataset or person name among the log call's arguments."""
    # Looked up, not imported: no dataset or name can exist before something has imported pydicom.
    person_name = getattr(sys.modules.get("pydicom.valuerep"), "PersonName", None)
    dataset = getattr(sys.modules.get("pydicom.dataset"), "Dataset", None)
    if person_name is None and dataset is None:
        return set()
    candidates = args if isinstance(args, tuple) else (args,)
    found: set[str] = set()
    for arg in candidates:
        # an element value passed on its own: PN is always a person's name
        if person_name is not None and isinstance(arg, person_name):
            found.add(str(arg))
        elif dataset is not None and isinstance(arg, dataset):
            for keyword in (
                "PatientName",
                "PatientID",
                "PatientBirthDate",
                "OtherPatientIDs",
                "OtherPatientNames",
            ):
                value = getattr(arg, keyword, None)
                if value:
                    found.add(str(value))
    return found


def _bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _one_line(text: str) -> str:
    """Patient values removed, cut to a bounded length, every control character escaped."""
    return escape(_bounded(redact_text(text)))


_PATIENT_KEY: Final = re.compile(rf"^(?:{_PATIENT_WORDS})$", re.IGNORECASE)
