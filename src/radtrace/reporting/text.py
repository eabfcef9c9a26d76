"""Text safety for every output format, one function per format (DESIGN principle 6).

Model text, patient names, identifiers and any other peer-supplied string pass through exactly one of
these before they are written into an output:

* :func:`dicom_text` — DICOM PS3.5 6.2: the text VRs ``UT`` ``LT`` ``ST`` may hold the control
  characters LF, FF and CR (a TAB becomes a space); ``LO`` ``SH`` ``PN`` (and ``UC``) hold none, and
  ``LO`` ``SH`` may not hold the value delimiter ``\\``. ESC is allowed only to announce an ISO 2022 code
  extension; radtrace writes UTF-8 (``ISO_IR 192``), which has none, so ESC is not allowed either. Every
  other C0 control, DEL and every C1 control (U+0080 to U+009F) is replaced by U+FFFD, as is a lone
  surrogate (which UTF-8 cannot encode), and the text is cut to the VR's maximum length (counted in UTF-8
  bytes) where it has one.
* :func:`hl7_escape` — HL7 v2.5.1 section 2.7: ``\\ | ^ & ~`` as ``\\E\\ \\F\\ \\S\\ \\T\\ \\R\\`` and every
  control character (C0, DEL, C1) as ``\\Xhh…\\``, the hex of its UTF-8 bytes, so no raw CR, LF, VT or FS
  (the MLLP frame bytes) ever stands inside a field. Escaping is lossless; only lone surrogates are
  replaced (:func:`hl7_text`).
* :func:`fhir_text` — JSON escapes everything itself, but UTF-8 cannot carry a lone surrogate and FHIR's
  ``string`` (R4 2.1.28.0.1) allows no character below U+0020 other than TAB, CR and LF.

The model's text (impression, reasoning, raw output, evidence) first passes :func:`draft_text`, the one rule of all
three drafts, so that they carry the same text: lone surrogates and every control character other than LF and CR
(C0, DEL, C1; FF, which FHIR refuses) become U+FFFD, a TAB a space; each format's function then changes nothing more
(the HL7 escaping of LF and CR is lossless).

Each safe function returns a :class:`SafeText`; its ``changed`` says that a character was replaced or the
text was cut, so the output can say so (the ``text-sanitised`` flag). The audit trail keeps the raw text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DICOM_MAX_BYTES",
    "REPLACEMENT",
    "TEXT_SANITISED",
    "DicomTextVR",
    "SafeText",
    "cut_utf8",
    "dicom_text",
    "draft_text",
    "fhir_text",
    "fits_dicom",
    "hl7_escape",
    "hl7_text",
    "without_lone_surrogates",
]

REPLACEMENT: Final = "\ufffd"
TEXT_SANITISED: Final = "text-sanitised"
"""The flag an output carries when any of its texts differs from the model's raw text."""

DicomTextVR = Literal["UT", "LT", "ST", "UC", "LO", "SH", "PN"]

DICOM_MAX_BYTES: Final[dict[str, int]] = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "PN": 64}
"""PS3.5 table 6.2-1 maximum lengths (PN: per component group), applied to the UTF-8 bytes, as dciodvfy
measures them: never longer than the standard's characters, and valid for a byte-counting reader too."""

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_C0_C1: Final = "\x00-\x1f\x7f-\x9f"
# Characters each VR cannot hold. UT/LT/ST: controls other than TAB LF FF CR. The others: every control,
# and for LO/SH/UC the value delimiter too (PN keeps '^' and '=' as its component and group delimiters).
_TEXT_FORBIDDEN: Final = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # keeps LF FF CR (TAB: see below)
_NAME_FORBIDDEN: Final = re.compile(f"[{_C0_C1}\\\\]")
_FORBIDDEN: Final = {
    "UT": _TEXT_FORBIDDEN,
    "LT": _TEXT_FORBIDDEN,
    "ST": _TEXT_FORBIDDEN,
    "UC": _NAME_FORBIDDEN,
    "LO": _NAME_FORBIDDEN,
    "SH": _NAME_FORBIDDEN,
    "PN": _NAME_FORBIDDEN,
}
_HL7_DELIMITERS: Final = {"\\": "E", "|": "F", "^": "S", "&": "T", "~": "R"}
_HL7_CONTROL: Final = re.compile(f"[{_C0_C1}]")
_FHIR_FORBIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_DRAFT_FORBIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # keeps TAB (below), LF, CR


@dataclass(frozen=True)
class SafeText:
    """A text made safe for one format, and whether that changed it (a character replaced, or a cut)."""

    text: str
    changed: bool


def without_lone_surrogates(text: str) -> SafeText:
    """Replace each lone surrogate (not encodable in UTF-8) by U+FFFD."""
    cleaned, count = _LONE_SURROGATE.subn(REPLACEMENT, text)
    return SafeText(cleaned, count > 0)


def dicom_text(text: str, vr: DicomTextVR) -> SafeText:
    """``text`` as a value of ``vr`` (PS3.5 6.2) in a UTF-8 data set: disallowed characters replaced by
    U+FFFD, cut to the VR's maximum length (PN: each of its component groups); leading and trailing
    spaces, which DICOM does not keep, are not counted as a change."""
    surrogates = without_lone_surrogates(text)
    cleaned, count = _FORBIDDEN[vr].subn(REPLACEMENT, surrogates.text)
    if vr in ("UT", "LT", "ST"):
        # TAB is a DICOM control character (PS3.5 6.1.3), but the text VRs list only CR, LF, FF and ESC, and
        # dciodvfy refuses it: it becomes a space, the nearest thing a reader sees.
        cleaned, tabs = cleaned.replace("\t", " "), cleaned.count("\t")
        count += tabs
    cut = False
    if vr == "PN":  # at most 3 component groups of at most 5 components, 64 characters each
        groups = cleaned.split("=")
        kept = [cut_utf8("^".join(group.split("^")[:5]), DICOM_MAX_BYTES["PN"]) for group in groups[:3]]
        cut = kept != groups
        cleaned = "=".join(kept)
    elif vr in DICOM_MAX_BYTES and len(cleaned.encode("utf-8")) > DICOM_MAX_BYTES[vr]:
        cleaned, cut = cut_utf8(cleaned, DICOM_MAX_BYTES[vr]), True
    cleaned = cleaned.strip(" ") if vr in ("LO", "SH", "PN", "UC") else cleaned.rstrip(" ")
    return SafeText(cleaned, surrogates.changed or count > 0 or cut)


def cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, at a character boundary."""
    return text.encode("utf-8")[: max(limit, 0)].decode("utf-8", "ignore")


def fits_dicom(value: str, vr: DicomTextVR) -> bool:
    """Whether ``value`` can be written as ``vr`` unchanged (for identifiers, which are never cut)."""
    return not dicom_text(value, vr).changed and value == value.strip(" ")


def hl7_text(text: str) -> SafeText:
    """The text an HL7 field carries once unescaped: ``text`` with lone surrogates replaced."""
    return without_lone_surrogates(text)


def hl7_escape(text: str, *, hex_escape: str = "\\") -> str:
    """Escape ``text`` for an HL7 v2 field (section 2.7.4, 2.7.5): delimiters as ``\\E\\`` … and every
    control character as ``\\Xhh…\\`` (its UTF-8 bytes in hex). ``hex_escape`` is the character written
    around hex sequences (a stand-in for ``\\`` where a library would re-escape a bare backslash); it is
    itself hex-escaped wherever the text contains it."""

    def one(char: str) -> str:
        if char in _HL7_DELIMITERS:
            return f"\\{_HL7_DELIMITERS[char]}\\"
        if _HL7_CONTROL.match(char) or (char == hex_escape and char != "\\"):
            return f"{hex_escape}X{char.encode('utf-8').hex().upper()}{hex_escape}"
        return char

    return "".join(one(char) for char in hl7_text(text).text)


def fhir_text(text: str) -> SafeText:
    """``text`` as a FHIR ``string``: lone surrogates and controls other than TAB, CR, LF replaced."""
    surrogates = without_lone_surrogates(text)
    cleaned, count = _FHIR_FORBIDDEN.subn(REPLACEMENT, surrogates.text)
    return SafeText(cleaned, surrogates.changed or count > 0)


def draft_text(text: str) -> SafeText:
    """The model's ``text`` as every draft carries it (the SR, the ORU and FHIR alike): lone surrogates and every
    control character but LF and CR replaced by U+FFFD, a TAB by a space (DICOM's text VRs list no TAB, and dciodvfy
    refuses it). ``changed`` says the drafts flag ``text-sanitised``."""
    surrogates = without_lone_surrogates(text)
    cleaned, count = _DRAFT_FORBIDDEN.subn(REPLACEMENT, surrogates.text)
    tabs = cleaned.count("\t")
    return SafeText(cleaned.replace("\t", " "), surrogates.changed or count > 0 or tabs > 0)
