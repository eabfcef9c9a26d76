"""Logging for radtrace's entry points: text or JSON, and never a patient identifier.

Library modules only call ``logging.getLogger(__name__)``. Entry points (the CLI) call
:func:`configure_logging` once. Every handler it installs carries a :class:`PatientDataFilter`, which
runs *after* the message is formatted, so patient names, IDs and birth dates are removed whatever
reached the log call: a pydicom dataset, a pynetdicom dump, an HL7 PID segment, an exception text or a
value registered with :func:`redacting`. Log lines identify a study by :func:`study_key`, a hash.

Much of what is logged comes from a peer (AE titles, UIDs, element values, PDU bytes, pynetdicom's and
pydicom's warnings about them): the same filter escapes every control character in the message as
``\\xNN`` (:func:`escape`), so that a newline or NUL in a calling AE title cannot forge a log line,
in text and JSON formats alike. The same holds for an exception's message and notes inside a traceback
(a traceback keeps its own lines, none of which a peer writes), for ``extra`` values (scrubbed too; an
extra named like a patient attribute is dropped), and for bidirectional controls. A message, extra or
exception message longer than :data:`MAX_MESSAGE_CHARS` is cut, saying how much was left out.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import IO, Any, Final

from pydicom.dataset import Dataset
from pydicom.misc import warn_and_log
from pydicom.valuerep import PersonName

__all__ = [
    "JsonFormatter",
    "PatientDataFilter",
    "configure_logging",
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
    candidates = args if isinstance(args, tuple) else (args,)
    found: set[str] = set()
    for arg in candidates:
        if isinstance(arg, PersonName):  # an element value passed on its own: PN is always a person's name
            found.add(str(arg))
        elif isinstance(arg, Dataset):
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


_CAUSE: Final = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT: Final = "\nDuring handling of the above exception, another exception occurred:\n\n"
MAX_GROUP_MEMBERS: Final = 15  # as the traceback module shows at most
MAX_CHAIN: Final = 20  # causes and contexts shown, newest last; a longer chain is cut, saying so


def _format_exception(exc_info: tuple[type[BaseException], BaseException, Any]) -> str:
    """The traceback, with every exception's message and notes on one escaped line each.

    A traceback's own lines come from our code; an exception's message often echoes a peer's bytes (a NAK's
    text, an element value). Built from public pieces (``traceback.format_tb`` for the frames, the exception's
    own ``str``, ``__notes__`` and chain) so that no message can add a line that reads as a record, whatever
    the Python version keeps inside ``TracebackException``.
    """
    return "".join(_exception_text(exc_info[1], set(), 0)).rstrip()


def _exception_text(exception: BaseException, seen: set[int], depth: int) -> list[str]:
    seen.add(id(exception))
    parts: list[str] = []
    cause, context = exception.__cause__, exception.__context__
    earlier, joint = (cause, _CAUSE) if cause is not None else (context, _CONTEXT)
    if cause is None and exception.__suppress_context__:
        earlier = None
    if earlier is not None and id(earlier) not in seen:
        if depth >= MAX_CHAIN:
            parts.append(f"[earlier exceptions of the chain left out after {MAX_CHAIN}]\n{joint}")
        else:
            parts += [*_exception_text(earlier, seen, depth + 1), joint]
    if exception.__traceback__ is not None:
        parts.append("Traceback (most recent call last):\n")
        parts += traceback.format_tb(exception.__traceback__)
    parts += _exception_lines(exception)
    if isinstance(exception, BaseExceptionGroup):
        members = exception.exceptions
        for index, member in enumerate(members[:MAX_GROUP_MEMBERS], start=1):
            parts.append(f"+---------------- {index} ----------------\n")
            member_text = "".join(_exception_text(member, seen, depth + 1)) if id(member) not in seen else ""
            parts += [f"| {line}\n" for line in member_text.splitlines()]
        if len(members) > MAX_GROUP_MEMBERS:
            parts.append(f"+---------------- ... ----------------\nand {len(members) - MAX_GROUP_MEMBERS} more\n")
    return parts


def _exception_lines(exception: BaseException) -> list[str]:
    """``Type: message`` and each note, one escaped line each (a SyntaxError's place and text too)."""
    kind = type(exception)
    name = (
        kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    )
    lines = []
    message: object
    if isinstance(exception, SyntaxError):
        if exception.filename is not None or exception.lineno is not None:
            lines.append(f'  File "{_one_line(str(exception.filename))}", line {exception.lineno}\n')
        if exception.text:
            lines.append(f"    {_one_line(exception.text.strip())}\n")
        message = exception.msg
    else:
        try:
            message = str(exception)
        except Exception:  # a broken __str__ must not lose the record
            message = "<exception str() failed>"
    text = _one_line(str(message)) if message else ""
    lines.append(f"{name}: {text}\n" if text else f"{name}\n")
    notes = getattr(exception, "__notes__", None)
    if isinstance(notes, list | tuple):
        lines += [f"{_one_line(str(note))}\n" for note in notes]
    return lines


def _template_on_one_line(record: logging.LogRecord) -> None:
    """A library's own multi-line message template (a string constant of the module that logs it, such as Celery's
    ``CONNECTION_ERROR``, 'consumer: Cannot connect to %s: %s.\\n%s\\n') joined into one line before formatting,
    so its lines read 'refused.. Trying again in 2.00 seconds' instead of '\\x0aTrying again'. Only the template's
    newlines: the code wrote them, not a peer, and the arguments formatted into it are escaped as any message is."""
    template = record.msg
    if not isinstance(template, str) or "\n" not in template or not record.args:
        return
    module = sys.modules.get(record.name)
    if module is not None and any(template is value for value in vars(module).values()):
        record.msg = " ".join(part.strip() for part in template.splitlines() if part.strip())


class PatientDataFilter(logging.Filter):
    """Handler filter that formats each record's message, then scrubs patient identifiers from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _template_on_one_line(record)
        extra_values = _dataset_values(record.args)
        with redacting(*extra_values):
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not lose the line, nor leak its arguments
                message = f"{record.msg!s} <unformattable arguments>"
            record.msg = _one_line(message)
            record.args = None
            # Another handler may already have cached an unredacted exc_text: always rebuild it.
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = _format_exception(record.exc_info)
            elif record.exc_text:
                record.exc_text = _bounded(record.exc_text, 4 * MAX_MESSAGE_CHARS)
            if record.exc_text:  # a traceback keeps its lines; other controls are escaped
                record.exc_text = _CONTROL_BUT_NEWLINE.sub(_hex, redact_text(record.exc_text))
            record.exc_info = None
            if record.stack_info:
                record.stack_info = redact_text(record.stack_info)
            for key, value in list(vars(record).items()):  # extras (the JSON format writes them out)
                if key in _STANDARD_ATTRS or key.startswith("_"):
                    continue
                if _PATIENT_KEY.match(key):
                    setattr(record, key, REDACTED)
                elif isinstance(value, str) or not isinstance(value, (int, float, bool, type(None))):
                    setattr(record, key, _one_line(value if isinstance(value, str) else repr(value)))
        return True


_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = escape(value) if isinstance(value, str) else value
                if not isinstance(value, (str, int, float, bool, type(None))):
                    entry[key] = escape(repr(value))
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _LoggedByPydicom(logging.Filter):
    """On the ``py.warnings`` logger: drops a warning raised by pydicom's ``warn_and_log``.

    That function logs its message through the ``pydicom`` logger, then raises the same message as a warning, which
    :func:`logging.captureWarnings` would log a second time (as ``py.warnings``, with pydicom's file and line). The
    filter runs inside the ``warnings.warn`` call, so the caller's frames tell which warnings came that way. Other
    warnings, pydicom's own plain ones included, are logged as before.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code is _WARN_AND_LOG_CODE:
                return False
            frame = frame.f_back
        return True


_WARN_AND_LOG_CODE: Final = warn_and_log.__code__


class _InterruptLoggedByALibrary(logging.Filter):
    """Drops a library's record of a Ctrl-C passing through it (SQLAlchemy's pool logs 'Exception closing
    connection' with the KeyboardInterrupt's traceback when the signal lands while it closes a connection): radtrace
    says the interrupt once itself ('radtrace: interrupted (Ctrl-C) ...'); its own records are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        interrupted = bool(record.exc_info) and isinstance(record.exc_info[1], KeyboardInterrupt)  # type: ignore[index]
        return not interrupted or record.name.startswith("radtrace")


def _quiet_libraries() -> None:
    # pynetdicom logs full C-STORE/C-FIND identifiers (patient data) at DEBUG unless told not to.
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    # highdicom logs at INFO the SOP Instance UID of every data set it copies the patient and study from.
    for name in (
        "pynetdicom",
        "highdicom",
        "celery",
        "kombu",
        "urllib3",
        "httpx",
        "filelock",
        "transformers",
        "alembic",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(fmt: str = "text", level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Install radtrace's single root handler (text or JSON) with the patient-data filter.

    Call only from entry points. Replaces handlers a previous call installed, so it is safe to
    call twice. Returns the handler (tests attach to its stream).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_InterruptLoggedByALibrary())  # first: PatientDataFilter turns exc_info into redacted text
    handler.addFilter(PatientDataFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_radtrace", False)]:
        root.removeHandler(old)
    handler._radtrace = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    _quiet_libraries()
    logging.captureWarnings(True)
    captured_warnings = logging.getLogger("py.warnings")
    if not any(isinstance(existing, _LoggedByPydicom) for existing in captured_warnings.filters):
        captured_warnings.addFilter(_LoggedByPydicom())
    return handler
