"""Which character set a received header's text is read in, when the header does not say it usably.

Real modalities write UTF-8 (or Latin-1) names with no Specific Character Set (0008,0005), with ``ISO_IR 6``
(ASCII, which holds no ``ü`` or ``ド``), or with a term that is not a DICOM defined term (``UTF8``, ``ISO IR 100``).
pydicom then reads the text as its default, Latin-1 (or warns and does so for an unknown term): UTF-8 bytes
become mojibake (``MÃ¼ller``), which the drafts would carry under their own ``ISO_IR 192``, made permanent and
valid. :func:`read_text_as` decides instead, as a PACS's "default encoding" setting does, and says that it did:

* a header that declares defined terms (other than ASCII alone) is read as it declares: nothing is decided;
* text bytes that are all ASCII read the same in every candidate: nothing to decide (an unknown term is read as
  ASCII, so pydicom has nothing to warn about);
* text bytes that are valid UTF-8 (and hold no ESC, which UTF-8 data sets never hold) are read as UTF-8: Latin-1
  text of accented letters is almost never valid UTF-8, while UTF-8 read as Latin-1 is always mojibake;
* other bytes are read in the declared term as pydicom corrects its spelling (``ISO IR 144`` -> ``ISO_IR 144``)
  where it does, else in the site's assumed character set (``ISO_IR 100`` unless configured otherwise).

A header may also declare a term its bytes are not in: modalities and gateways that write UTF-8 and hard-code
``ISO_IR 100`` (or ``ISO_IR 144``, ``ISO_IR 101`` ...) are common, and pydicom reads their ``Müller`` as
``MÃ¼ller`` (their ``Иванов`` under ISO_IR 144 as C1 controls between Cyrillic letters). Where the declared term
is one of :data:`OVERRIDABLE_TERMS` and every text value is valid UTF-8 holding at least one multi-byte character
(no ESC, and its UTF-8 reading holds no control, unassigned or private-use character), the text is read as UTF-8
and the choice is flagged like the others (``because`` ``declared-overridden``). A declaration is never overridden
when any text value is not valid UTF-8. Why this is safe:

* **ISO_IR 100 (Latin-1), ISO_IR 148 (Latin-5)**: a valid multi-byte UTF-8 sequence is a lead byte (C2-F4) followed
  by continuation bytes (80-BF). In these sets 80-9F are C1 controls and A0-BF are NBSP and symbols (``¡ ° ² µ · º``
  ...), never letters, and C0/C1 (``À Á``) and F5-FF (``õ ö ÷ ø ... ÿ``) are never valid. So Latin-1 text is
  valid UTF-8 only where *every* accented letter stands directly before one to three symbols or controls, e.g.
  ``Ã`` then ``©`` (two unusual characters in a row, the shape of mojibake itself) or ``É`` then NBSP; an accented
  letter before a letter, a digit, a space, ``^`` or the value's end makes the value invalid. Measured on every word
  of Debian's German, French, Spanish, Portuguese (both), Italian, Catalan, Danish, Swedish and Norwegian word lists
  and every Faker person name (its 86 locales), each as written, in upper case and in title case: 3,104,922 distinct
  Latin-1 encodings holding a non-ASCII byte, 0 valid UTF-8 (ISO_IR 148: 3,104,105, 0). The C1 guard also turns
  away ``Â`` before a Windows-1252 punctuation byte (80-9F) read as Latin-1.
* **ISO_IR 127 (Arabic), ISO_IR 138 (Hebrew)**: every letter is a byte at C1 or above, never a continuation byte,
  so any word of two letters makes a value invalid UTF-8 (measured: Faker's 1,435 Arabic and 984 Hebrew name
  encodings, 0 valid).
* **ISO_IR 101, 109, 110 (Latin-2, -3, -4), 144 (Cyrillic), 126 (Greek), 166 (Thai)**: these sets hold letters in
  A0-BF (``Ł Ś Š Ž Ż Ņ Ş``, the Cyrillic capitals A to PE, Greek ``Ά Ώ``, Thai consonants), so their own text can
  be valid UTF-8: Czech ``POSPÍŠIL`` (``Í`` ``Š`` is the UTF-8 of U+0369), Latvian ``KALNIŅŠ`` (U+0469 ``ѩ``), Bulgarian
  ``ТОШО`` (``¾Ⱦ``), Greek ``ΗΏ`` (``ǿ``), Thai ``เขต``. Measured (every word of Faker's person, address, company and
  lorem lists, Babel's CLDR names and pycountry's translated names in the languages written in each set, as
  written, upper and title case): of 49,773 / 6,518 / 12,442 / 81,656 / 18,872 / 4,985 distinct encodings, 189 /
  14 / 29 / 113 / 1 / 17 are valid UTF-8 whose reading is text (1.4e-3 to 3.8e-3 of them; Greek 5.3e-5). So for these
  terms the UTF-8 reading must also be text the declared set could have carried: every character of it is one the
  set holds, or the bytes hold one in 80-9F, which the set reads as a C1 control, so that its own reading is wrong
  whatever (a Romanian ``Ș``, a Ukrainian ``Ґ``, which Latin-2 and ISO 8859-5 lack). Not one of those 174,246
  encodings passes that (each coincidence reads as characters of other scripts, IPA or combining marks), while
  97.8-100 % of the same words written in UTF-8 do. Where the text is multi-byte UTF-8 but fails it, the
  declaration is kept and the choice flagged as doubtful (``because`` ``declared-doubtful``, flag
  ``character-set-doubtful``): either reading may be wrong, and the radiologist is told to check the name.
* A multi-byte or code-extension set (GB18030, ISO 2022 with ESC) and several declared terms are read as declared.

Modalities and RIS bridges running on Windows also write the Windows code page that extends the ISO set they
declare (or that the site assumes for undeclared text): Windows-1252 under ISO_IR 100, 1250 under 101, 1251 under
144, 1253 under 126, 1254 under 148, 1255 under 138, 1256 under 127, 874 under 166, 1257 under 110
(:data:`WINDOWS_PAGES`). Where the text is not read as UTF-8 (the rules above come first),
:mod:`radtrace.dicom_charset_windows` reads it in the page (``read_as`` ``cp1250`` ..., ``because``
``windows-code-page``, flagged ``character-set-assumed``) where some byte is one the ISO set never writes (80-9F, or
a byte it leaves undefined) or the ISO reading is in no word's shape while the page's is, and only letters of the
page's script and name punctuation; where both readings of Windows-1251 or 1253 text could be words (``ИВАНОВ`` is
``ШТРЭЮТ`` in ISO 8859-5, Greek ``Ά``, A2, is ISO 8859-7's curly apostrophe) it is read as declared and flagged
``character-set-doubtful`` (``because`` ``windows-doubtful``). Measured (/work/notes/charset-win/measure.py: every word
of Faker's person, address, company and lorem lists, Babel's CLDR names and pycountry's translated names in the
languages written in each page, as written, upper and title case), wrong and unflagged before -> after: 1250 859 -> 637
of 46,263 distinct encodings, 1251 26,542 -> 52 of 80,321 (9,189 flagged doubtful), 1253 2,374 -> 0 of 18,539 (flagged),
1255 254 -> 0 of 4,266, 1256 5,735 -> 3,153 of 5,973, 1257 5,990 -> 5,968 of 7,420 (its letters lie in A0-FF where ISO
8859-4 has other letters); 1252, 1254 and 874: 0. None of the 4,033 to 79,835 encodings of all those words in each ISO
set is read otherwise, nor any of their 204,511 UTF-8 encodings; 2,877 of the 79,835 ISO 8859-5 ones (words of the
alphabet's second half, which Windows-1251 reads as words of its first) and 1 of 18,765 ISO 8859-7 ones are flagged
doubtful. Then each run's letters of one language (Baltic, Central European, any Latin-script one for the ISO reading)
and Arabic vowel marks where a writer puts them, with a doubtful flag where ISO 8859-4 reads a Baltic word as another
language's or Windows-1256's reading begins with the article or ISO 8859-6 reads ``م ع ط`` as the rarer ``ك غ ظ`` or a
Polish word's ``ą`` is Latin-2 ``š`` (measured again on the current word lists): 1257 4,545 -> 407 of 5,312 (3,632
flagged), 1256 3,146 -> 659 of 5,974 (1,315 flagged), 1250 620 -> 334 of 42,475 (187 flagged), at a cost of 5 of 5,302
Baltic words in ISO 8859-4, 205 of 5,211 ISO 8859-6 ones (3.9 %) and 40 of 66,942 Latin-2 ones flagged doubtful.
Then, where both readings of Windows-1257, 1250 or 1256 text are words, the text is flagged doubtful where the page's
reading is the likelier word by the measured words' letter bigrams (trigrams for 1256, instead of the article,
tanween and ``ك غ ظ`` rules): wrong and unflagged 522 -> 25 of 5,828, 723 -> 241 of 6,132, 381 -> 17 of 51,295
encodings of a larger corpus (bench/charset_windows.py), genuine ISO text read otherwise 3 -> 0, flagged doubtful
5.3 -> 5.5 %, 4.3 -> 2.3 %, 0.3 -> 1.5 % of it (:mod:`radtrace.dicom_charset_windows` gives the figures).

Senders also write a code page of another script than the one they declare, or than the site assumes for undeclared
text: Arabic Windows-1256 or DOS 720, Cyrillic 1251 or DOS 866, Greek 1253 or 737, Hebrew 1255 or 862, Thai 874 under
no declaration or a hard-coded ``ISO_IR 100`` (or one script's page under another's ISO term). Their bytes were read
as Latin-1 mojibake, C1 controls or U+FFFD, and under a declaration unflagged. Where the declared, corrected or
assumed single-byte set reads the text (that is not UTF-8 nor in the set's own Windows page) as controls, bytes it
leaves undefined or letters in no word's shape of its script (Latin: a run of three letters all past ASCII, or a
run's letters no one language's), each page of :data:`OTHER_SCRIPT_PAGES` is tried: one whose reading is at least 4
letters of its script in words' shapes (each run one case, one Cyrillic alphabet, Arabic marks where a writer puts
them; a Cyrillic or Greek run of three letters or more holds a vowel, Greek ``ς`` and Hebrew finals end a run, Thai
marks follow a letter) is taken, flagged ``character-set-assumed`` (``because`` ``other-script``), or flagged
``character-set-doubtful`` where another page of that script reads other words (``other-script-doubtful``:
Windows-1256 and ISO 8859-6). Where pages of two scripts read words, or none does and the set's reading holds a
control or an undefined byte, the text is read as declared and flagged ``character-set-doubtful``
(``code-page-doubtful``); a Windows page of Cyrillic or Greek the rules above chose whose reading holds a run of 5
letters without a vowel gives way to another script's page, flagged doubtful. Measured (bench/charset_other_scripts.py,
the Faker, Babel CLDR and pycountry words of each script's languages, as written, upper and title case), read wrong
and unflagged under ``ISO_IR 100`` 8ca5b11 -> now: Windows-1256 6,096 -> 768 of 6,132, DOS 720 4,944 -> 504 of
5,380, Windows-1251 73,301 -> 3,386 of 73,875, DOS 866 55,257 -> 1,409 of 55,769, Windows-1253 19,939 -> 425 of
19,940, DOS 737 19,703 -> 39 of 19,913, Windows-1255 4,003 -> 634 of 4,003, DOS 862 3,944 -> 0 of 4,003, Windows-874
4,041 -> 1,316 of 4,185 (the rest flagged; read as written: 0 -> 61 % on average); undeclared, all were flagged
(assumed) and none read as written, now 36-85 % are (Hebrew 2-11 %). Genuine Latin-1 words of every language (55,044
encodings) read otherwise or newly flagged: 0, declared or not; the Windows-page figures below unchanged. And text
declared ISO_IR 127 whose ISO 8859-6 reading holds dammatan or kasratan (EC, ED) where Windows-1256 reads ``ى`` or
``ي`` in Arabic words is flagged doubtful, read as declared (names carry no vowel marks: ``أخرى`` is ``أخرٌ``):
bench/charset_windows.py --held-out, Windows-1256 wrong and unflagged 218 -> 200 of 3,061 (whole corpus 241 -> 222
of 6,132), genuine ISO 8859-6 flagged unchanged (98 of 2,681; 126 of 5,380), 0 read otherwise.

Most words still read wrong and unflagged under ``ISO_IR 100`` were short: a page's reading of fewer than 4 letters
is not taken (Latin-1 ``Ä`` alone in a German description is Windows-1251 ``Д``), so Windows-1251 ``АДА`` (Latin-1
``ÀÄÀ``, no word's shape) or ``ви`` (``âè``) was read as Latin-1 with no flag, and DOS 866's lower-case letters of
A0-AF (Latin-1's no-break space and symbols) made readings without a letter, which passed as words (``железо`` is
``¦¥«¥§®``). Now two characters past ASCII side by side that are no letter nor digit are no Latin word's, and
Latin-1 text (declared or assumed) is read as declared and flagged ``character-set-doubtful``
(``code-page-doubtful``) where a page reads words of 2 letters or more and the Latin-1 reading is no words, or holds
a run of two letters both past ASCII, or where it holds a run of three or more (Windows-1251 ``ЮниКредит``), which
no page need read (:mod:`radtrace.dicom_charset_scripts`; not for Latin-2, 4 or ISO 8859-6,
where it would flag 21 of the measured words, Czech ``Číž``: bench/charset_windows.py unchanged). Measured
(bench/charset_other_scripts.py, 0c82f62 -> now), wrong and unflagged under ``ISO_IR 100``: Windows-1256 768 -> 38,
DOS 720 504 -> 29, Windows-1251 3,386 -> 101, DOS 866 1,409 -> 42, Windows-1253 425 -> 15, DOS 737 39 -> 5,
Windows-1255 634 -> 24, DOS 862 0 -> 0, Windows-874 1,316 -> 40 (the rest flagged; read as written unchanged);
genuine Latin-1 words read otherwise 0 -> 0, flagged beyond assumed 0 -> 2 of 55,044 (Turkish ``üç``, ``Üç``, which
Latin-5 writes; Windows-1253 reads ``όη``), undeclared unchanged. What is left is mostly one letter past ASCII
(Latin-1 ``ä`` is Arabic ``ن`` in Windows-1256) and two-letter words with an ASCII letter or a lone symbol.
Now a value of Latin-1 symbols alone (no letter nor digit: DOS 720 ``س`` is ``«``, DOS 866 ``в`` is ``¢``) that a
page reads as a letter of its script is flagged doubtful too, and so is a Latin-1 reading that is no words where it
holds three letters past ASCII side by side inside a run with ASCII letters (Windows-1251 ``МАКДОНАЛД`` ending in a
Latin ``C`` is ``ÌÀÊÄÎÍÀËÄC``) or two symbols side by side but a no-break space (DOS 866 ``северный``, a Latin ``C``
first). Measured (bench/charset_other_scripts.py, wrong and unflagged under ``ISO_IR 100``, e4b2b03 -> now): 294 ->
214 (DOS 720 29 -> 16, Windows-1251 101 -> 71, DOS 866 42 -> 24, DOS 737 5 -> 3, Windows-874 40 -> 24, Windows-1255
24 -> 23); genuine Latin-1 words read otherwise 0, flagged beyond assumed 2 (unchanged). A lone Latin-1 letter stays
unflagged: each is a word or a name of some language Latin-1 writes (French ``à``, Swedish ``Å``), whatever page
reads it.
Where pages of several scripts read words, the likeliest script's reading by far is read, flagged doubtful
(:mod:`radtrace.dicom_charset_scripts` gives the rule and the figures).

What was decided is a :class:`CharsetChoice`: the image's preparation records it (audit), as does the listener's
``instance_received`` event (its ``character_set`` and label), the drafts flag it (``character-set-assumed``, or
``character-set-doubtful``) and say it on the image's line, so a wrong guess is visible, never silent.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from pydicom.charset import ESC, convert_encodings, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR

from radtrace.dicom_charset_scripts import OTHER_SCRIPT_PAGES, other_script, page_or_other_script, tanween_for_yeh
from radtrace.dicom_charset_windows import WINDOWS_PAGES, windows_reading

__all__ = [
    "CHARACTER_SET_ASSUMED",
    "CHARACTER_SET_DOUBTFUL",
    "DEFAULT_ASSUMED_CHARACTER_SET",
    "OVERRIDABLE_TERMS",
    "SITE_PAGES",
    "SITE_RULE",
    "WINDOWS_PAGES",
    "CharsetChoice",
    "SiteCharset",
    "audit_record",
    "charset_record",
    "check_actual",
    "check_assumed",
    "read_text_as",
    "recorded_choice",
    "without_charset_warnings",
]

logger = logging.getLogger(__name__)

#: The flag of a draft whose source text was read in a character set its header did not declare.
CHARACTER_SET_ASSUMED: Final = "character-set-assumed"
#: The flag of a draft whose source text was read as its header declared, though it is also valid multi-byte UTF-8
#: that the declared set could not have carried: either reading may be wrong.
CHARACTER_SET_DOUBTFUL: Final = "character-set-doubtful"
#: What text that is neither ASCII nor UTF-8 is read as when the header does not say: Latin-1, the most common
#: single-byte set of undeclared real headers (and pydicom's own default).
DEFAULT_ASSUMED_CHARACTER_SET: Final = "ISO_IR 100"
UTF8_TERM: Final = "ISO_IR 192"
_ASCII_ONLY: Final = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
#: Declared single-byte terms whose text is read as UTF-8 instead when every text value is valid UTF-8 holding a
#: multi-byte character (for :data:`OWN_CHARACTERS_ONLY` terms: and that reading is text the set could carry): their
#: own text almost never is (the module's docstring gives the argument and figures). The ISO 2022 form of each reads
#: the same where no ESC stands in the text, which the override requires.
OVERRIDABLE_TERMS: Final = frozenset(
    f"{prefix} {number}"
    for prefix in ("ISO_IR", "ISO 2022 IR")
    for number in (100, 101, 109, 110, 126, 127, 138, 144, 148, 166)
)
#: The overridable terms whose own letters can form valid UTF-8 (letters in A0-BF): their text is read as UTF-8
#: only where every character of that reading is one the set holds, or some byte is in 80-9F (a C1 control in the
#: set, so its own reading is wrong whatever); otherwise it is read as declared and flagged doubtful.
OWN_CHARACTERS_ONLY: Final = frozenset(
    f"{prefix} {number}" for prefix in ("ISO_IR", "ISO 2022 IR") for number in (101, 109, 110, 126, 144, 166)
)
# What the UTF-8 reading of overridden text may not hold: controls (a C1 control is Latin-1's reading of a
# Windows-1252 byte), unassigned and private-use code points; a UTF-8 writer's names and texts hold none
_NOT_TEXT: Final = frozenset({"Cc", "Cn", "Co"})
_CHARSET_TAG: Final = 0x00080005
# pydicom's spelling corrections (charset._python_encoding_for_corrected_encoding), which it applies with a warning
_MISSPELT_SINGLE: Final = re.compile(r"^ISO[^_]IR")
_MISSPELT_EXTENSION: Final = re.compile(r"^(?=ISO.2022.IR.)(?!ISO 2022 IR )")
_CODE_STRING: Final = re.compile(r"[A-Z0-9 _]{1,16}")
_TERM_TEXT: Final = re.compile(r"[A-Za-z0-9 _.\\-]{1,64}")
_PYDICOM_CHARSET_WARNINGS: Final = r"(Unknown encoding|Incorrect value for Specific Character Set)"
#: ``because`` of a choice the site made: a ``listener.sender_character_sets`` rule for the calling AE.
SITE_RULE: Final = "site-rule"
#: The code pages a site may name as what a sender's text is really in (``listener.sender_character_sets``'
#: ``actual``, :func:`check_actual`), besides defined terms: each ISO set's Windows page (:data:`WINDOWS_PAGES`) and
#: the DOS pages of :data:`OTHER_SCRIPT_PAGES` (Arabic 720, Greek 737, Hebrew 862, Cyrillic 866), which DOS-era
#: modalities and RIS bridges write and which no guess can always tell from Latin-1 or another page
SITE_PAGES: Final = frozenset(WINDOWS_PAGES.values()) | frozenset(
    page for _, pages in OTHER_SCRIPT_PAGES for page in pages if page not in python_encoding
)
# The choices read as declared (or in a page) though another reading may be the right one: flagged doubtful
_DOUBTFUL_BECAUSE: Final = frozenset(
    {"declared-doubtful", "windows-doubtful", "other-script-doubtful", "code-page-doubtful"}
)


@dataclass(frozen=True)
class SiteCharset:
    """A site's rule that text a sender writes is in ``actual`` (a defined term, or a code page of
    :data:`SITE_PAGES` such as Windows ``cp1256`` or DOS ``cp866``), whatever it declares, or only where it declares
    ``declared`` (None: any declaration, none included). ``rule`` names the setting it came from
    (``listener.sender_character_sets[0]``): what the records say, never the text."""

    rule: str
    declared: str | None
    actual: str


@dataclass(frozen=True)
class CharsetChoice:
    """The character set a header's text was read in, where its header did not declare one usably.

    ``declared``: (0008,0005) as sent, values joined by ``\\`` ('' when absent or empty); ``read_as``: the defined
    term the text was read in; ``because``: ``utf-8`` (the bytes are valid UTF-8), ``corrected`` (the declared
    term as pydicom corrects its spelling), ``assumed`` (the site's setting) or ``declared-overridden`` (a declared
    :data:`OVERRIDABLE_TERMS` term over bytes that are valid multi-byte UTF-8) or ``declared-doubtful`` (read as the
    declared :data:`OWN_CHARACTERS_ONLY` term, though its bytes are also valid multi-byte UTF-8 whose reading that set
    could not carry: ``read_as`` is the declared term) or ``windows-doubtful`` (read as the declared term, though
    its bytes may be its Windows page's, which reads them as other words) or ``windows-code-page`` (text in the
    declared, corrected or assumed ISO set's :data:`WINDOWS_PAGES` page: bytes the set never writes that are
    letters and punctuation there, or text the set reads as no word; ``read_as`` is the page, e.g. ``cp1250``,
    which is no DICOM term); ``ascii``: the text was all ASCII, so nothing was guessed (not flagged)."""

    declared: str
    read_as: str
    because: str
    rule: str = ""

    @property
    def flagged(self) -> bool:
        """Whether a reader of the drafts must be told: any choice that was not between equal readings, nor the
        site's own rule for the sender (:data:`SITE_RULE`: nothing was guessed)."""
        return self.because not in {"ascii", SITE_RULE}

    @property
    def recorded(self) -> bool:
        """Whether the image's preparation records the choice: a flagged one, and a site rule's (which rule)."""
        return self.flagged or self.because == SITE_RULE

    @property
    def flag(self) -> str:
        """The drafts' flag for a flagged choice: :data:`CHARACTER_SET_DOUBTFUL` where the declaration was kept over
        text that may be UTF-8, else :data:`CHARACTER_SET_ASSUMED`."""
        return CHARACTER_SET_DOUBTFUL if self.because in _DOUBTFUL_BECAUSE else CHARACTER_SET_ASSUMED

    def sentence(self) -> str:
        """The choice as the drafts say it (the declared term is a code string the header's own sender wrote)."""
        where = "declared" if _usable(self.declared.split("\\")) else "the assumed set"
        if not self.declared:
            declared = "not declared"
        elif _TERM_TEXT.fullmatch(self.declared):
            declared = f"declared '{self.declared}'"
        else:  # peer bytes that are no code string are not repeated into a report
            declared = "declared as a value that is no character set term"
        why = {
            "utf-8": "its bytes are valid UTF-8",
            "corrected": "the declared term with its spelling corrected",
            "assumed": "not valid UTF-8: the site's assumed character set",
            "declared-overridden": "the declaration overridden: its bytes are valid UTF-8 with multi-byte characters, "
            "which text in the declared set almost never is",
            "declared-doubtful": "as declared, though its bytes are also valid UTF-8, which would read as characters "
            "the declared set does not hold: either reading may be wrong",
            "windows-code-page": f"Windows code page {self.read_as.removeprefix('cp')}: read in the ISO set, its "
            "bytes are control characters, bytes it leaves undefined or letters in no word's shape",
            SITE_RULE: f"the site's rule {self.rule} for this sender",
            "other-script": f"read {where}, its bytes are control characters, bytes it leaves undefined or letters "
            "in no word's shape; in this code page of another script they are its words",
            "other-script-doubtful": f"read {where}, its bytes are no words; this code page of another script reads "
            "them as words, and so does another page of that script, as other words: either reading may be wrong",
            "code-page-doubtful": f"{where}, though so its bytes are control characters, bytes it leaves undefined "
            "or letters in no word's shape, or code pages of more than one script read them as words: the name may "
            "be wrong",
            "windows-doubtful": "as declared, though its bytes may be Windows code page "
            f"{WINDOWS_PAGES.get(self.read_as, '').removeprefix('cp')}, which reads them as other words: either "
            "reading may be wrong",
        }.get(self.because, "all ASCII")
        return (
            f"Specific Character Set {declared}: names and texts read as {self.read_as} ({why}); check the "
            "patient's name against the film"
        )


@contextmanager
def without_charset_warnings() -> Iterator[None]:
    """A context in which pydicom's warnings about an unknown or misspelt (0008,0005) are not raised (the test
    suite makes warnings errors): those headers are judged by :func:`read_text_as` instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PYDICOM_CHARSET_WARNINGS)
        yield


def _declared(ds: Dataset) -> list[str]:
    raw = ds.get_item(_CHARSET_TAG) if _CHARSET_TAG in ds else None
    if raw is None:
        return []
    value: Any = raw.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
        return [term.strip(" \x00") for term in text.split("\\")]
    if isinstance(value, str):
        return [value.strip()]
    return [str(term).strip() for term in value] if value is not None else []


def _usable(terms: list[str]) -> bool:
    """Defined terms that say more than ASCII: pydicom reads them as declared."""
    if not terms or all(term in _ASCII_ONLY for term in terms):
        return False
    return terms[0] in python_encoding and all(term in python_encoding or not term for term in terms)


def _corrected(terms: list[str]) -> str | None:
    first = terms[0] if terms else ""
    if _MISSPELT_SINGLE.match(first):
        patched = "ISO_IR" + first[6:]
    elif _MISSPELT_EXTENSION.match(first):
        patched = "ISO 2022 IR " + first[12:]
    else:
        return None
    return patched if patched in python_encoding and patched not in _ASCII_ONLY else None


def _text_bytes(ds: Dataset) -> Iterator[bytes]:
    """The raw bytes of every text value (SH LO ST PN LT UC UT) of ``ds`` and of its sequences' items that do not
    declare their own character set. Values left on disk (deferred: the pixel data of a header read) are not read."""
    for tag in list(ds.keys()):
        if tag == _CHARSET_TAG:
            continue
        element = ds.get_item(tag, keep_deferred=True)
        vr = element.VR
        if vr is None and not tag.is_private:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr == "SQ":
            try:
                items = ds[tag].value
            except Exception:  # a sequence pydicom cannot parse: the listener recorded it as a deviation
                logger.debug("not looking into unparsable sequence %s", tag)
                continue
            for item in items:
                if _CHARSET_TAG not in item:
                    yield from _text_bytes(item)
        elif vr in CUSTOMIZABLE_CHARSET_VR and isinstance(element, RawDataElement) and element.value:
            yield element.value


def _reread_items(ds: Dataset, encodings: list[str]) -> None:
    """Sequence items parsed while deciding were given the old encoding: give them the chosen one."""
    for tag in list(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)  # elements() would read what was left on disk
        if isinstance(element, RawDataElement) or element.VR != "SQ":
            continue
        for item in element.value:
            if _CHARSET_TAG not in item:
                item._parent_encoding = encodings
                implicit_vr, little_endian = item.original_encoding
                item.set_original_encoding(implicit_vr, little_endian, encodings)
                _reread_items(item, encodings)


def check_assumed(term: str) -> str:
    """``term`` if it can be a site's assumed character set (``listener.assumed_character_set``): a single-byte or
    double-byte defined term without code extensions, other than ASCII and UTF-8 (text that is valid UTF-8 is read
    as UTF-8 already: the assumed set is for the bytes that are not); else ValueError saying what is."""
    if term not in python_encoding or term in _ASCII_ONLY or term == UTF8_TERM or term.startswith("ISO 2022"):
        raise ValueError(
            "must be a DICOM defined term without code extensions, other than ASCII and UTF-8 (valid UTF-8 is read "
            f"as UTF-8 anyway), e.g. ISO_IR 100 (Latin-1), ISO_IR 144 (Cyrillic) or GB18030; not {term!r}"
        )
    return term


def check_actual(term: str) -> str:
    """``term`` if a site may say a sender's text is in it (``listener.sender_character_sets``' ``actual``): a
    defined term without code extensions other than ASCII (UTF-8 included), or a code page of :data:`SITE_PAGES`
    (Windows ``cp1256``, DOS ``cp866``); else ValueError saying what is."""
    if term in SITE_PAGES:
        return term
    if term not in python_encoding or term in _ASCII_ONLY or term.startswith("ISO 2022"):
        raise ValueError(
            "must be a DICOM defined term without code extensions, other than ASCII (e.g. ISO_IR 127, ISO_IR 192), "
            f"or a Windows or DOS code page ({', '.join(sorted(SITE_PAGES))}); not {term!r}"
        )
    return term


def _site_choice(ds: Dataset, terms: list[str], site: Sequence[SiteCharset]) -> CharsetChoice | None:
    """The first of ``site``'s rules for this declaration, where the text is not all ASCII (nothing to decide) and
    every text value decodes in its set (else the rule cannot be what the sender wrote: the usual reading, and its
    flags, decide instead)."""
    declared = "\\".join(terms)
    rule = next((rule for rule in site if rule.declared is None or rule.declared == declared), None)
    if rule is None:
        return None
    values = list(_text_bytes(ds))
    if all(value.isascii() and ESC not in value for value in values):
        return None
    codec = python_encoding.get(rule.actual, rule.actual)
    try:
        for value in values:
            value.decode(codec)
    except UnicodeDecodeError:
        logger.warning("text does not decode in %s of %s: read as usual instead", rule.actual, rule.rule)
        return None
    return CharsetChoice(declared, rule.actual, SITE_RULE, rule.rule)


def read_text_as(
    ds: Dataset, *, assumed: str = DEFAULT_ASSUMED_CHARACTER_SET, site: Sequence[SiteCharset] = ()
) -> CharsetChoice | None:
    """Decide the character set of ``ds``'s text where its header does not declare a usable one, or declares an
    :data:`OVERRIDABLE_TERMS` term over text that is multi-byte UTF-8, and make pydicom read the text in it (call
    before any text value is read: values already read keep their text). None when the header's declared terms
    are read as declared; else the :class:`CharsetChoice` (``because`` ``ascii`` when nothing needed guessing).
    ``assumed`` is the site's character set for undeclared bytes that are not UTF-8 (a defined term). ``site``: the
    site's rules for the sender (:class:`SiteCharset`); where one applies the text is read in its set, nothing
    guessed (``because`` :data:`SITE_RULE`, not flagged, the rule named)."""
    check_assumed(assumed)
    terms = _declared(ds)
    if site and (chosen := _site_choice(ds, terms, site)) is not None:
        choice = chosen
    elif _usable(terms):
        if len(terms) != 1 or terms[0] not in OVERRIDABLE_TERMS:
            return None
        values = list(_text_bytes(ds))
        if _multibyte_utf8(values):
            if terms[0] in OWN_CHARACTERS_ONLY and not _utf8_in_the_set(values, terms[0]):
                return CharsetChoice(terms[0], terms[0], "declared-doubtful")  # read as declared: nothing to change
            choice = CharsetChoice(terms[0], UTF8_TERM, "declared-overridden")
        elif (windows := windows_reading(values, terms[0])) == "windows-doubtful":
            return CharsetChoice(terms[0], terms[0], windows)  # read as declared: nothing to change
        elif windows:
            choice = _page_or_other_script(values, CharsetChoice(terms[0], WINDOWS_PAGES[terms[0]], windows), terms[0])
        elif (other := _other_script(values, terms[0], terms[0])) is None:
            return CharsetChoice(terms[0], terms[0], "windows-doubtful") if tanween_for_yeh(values, terms[0]) else None
        elif other.read_as == terms[0]:
            return other  # read as declared, flagged: nothing to change
        else:
            choice = other
    else:
        choice = _undeclared_choice(terms, list(_text_bytes(ds)), assumed)
    with without_charset_warnings():
        encodings = convert_encodings(choice.read_as)
    implicit_vr, little_endian = ds.original_encoding
    ds.set_original_encoding(implicit_vr, little_endian, encodings)
    ds._parent_encoding = encodings
    _reread_items(ds, encodings)
    return choice


def _undeclared_choice(terms: list[str], values: list[bytes], assumed: str) -> CharsetChoice:
    """What text is read as where (0008,0005) is absent, ASCII alone, unknown or misspelt."""
    data = b"".join(values)
    corrected = _corrected(terms)
    if data.isascii() and ESC not in data:
        return CharsetChoice("\\".join(terms), corrected or "ISO_IR 6", "ascii")
    if ESC not in data and all(_is_utf8(value) for value in values):
        return CharsetChoice("\\".join(terms), UTF8_TERM, "utf-8")
    if windows_reading(values, corrected or assumed) == "windows-code-page":
        page = CharsetChoice("\\".join(terms), WINDOWS_PAGES[corrected or assumed], "windows-code-page")
        return _page_or_other_script(values, page, corrected or assumed)
    other = _other_script(values, corrected or assumed, "\\".join(terms))
    if other is not None and other.read_as != (corrected or assumed):  # else flagged below, as assumed or corrected
        return other
    if corrected:
        return CharsetChoice("\\".join(terms), corrected, "corrected")
    return CharsetChoice("\\".join(terms), assumed, "assumed")


def _other_script(values: list[bytes], term: str, declared: str, *, own_checked: bool = False) -> CharsetChoice | None:
    """:func:`radtrace.dicom_charset_scripts.other_script` as a choice of ``declared``."""
    found = other_script(values, term, own_checked=own_checked)
    return None if found is None else CharsetChoice(declared, *found)


def _page_or_other_script(values: list[bytes], page: CharsetChoice, term: str) -> CharsetChoice:
    """``page`` (text read in ``term``'s Windows page), or the other script's page that
    :func:`radtrace.dicom_charset_scripts.page_or_other_script` finds, flagged doubtful."""
    other = page_or_other_script(values, page.read_as, term)
    return page if other is None else CharsetChoice(page.declared, other, "other-script-doubtful")


def _multibyte_utf8(values: list[bytes]) -> bool:
    """Whether text declared in an :data:`OVERRIDABLE_TERMS` term is UTF-8 instead: some byte is not ASCII, no
    ESC, every value decodes as UTF-8 and its reading holds no control (past ASCII's), unassigned or private-use
    character. A value that is not valid UTF-8 keeps the declaration, whatever the others are."""
    if all(value.isascii() for value in values):
        return False
    for value in values:
        if ESC in value:
            return False
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if any(ord(char) >= 0x80 and unicodedata.category(char) in _NOT_TEXT for char in text):
            return False
    return True


def _utf8_in_the_set(values: list[bytes], term: str) -> bool:
    """Whether the UTF-8 reading of ``values`` (valid UTF-8) is text that ``term``'s set could have carried: every
    character of it is one the set holds, or some byte is in 80-9F, which the set reads as a C1 control (so its own
    reading is wrong whatever: a Romanian ``Ș`` under Latin-2). A coincidence of the set's own letters reads as
    characters of other scripts, IPA or combining marks, which it does not hold."""
    if any(0x80 <= byte <= 0x9F for value in values for byte in value):
        return True
    codec = python_encoding[term]
    try:
        for value in values:
            value.decode("utf-8").encode(codec)
    except UnicodeError:
        return False
    return True


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def charset_record(choice: CharsetChoice) -> dict[str, str]:
    """The choice as an image's preparation records it (audit payload: code strings only, no patient text; a site
    rule's name, e.g. ``listener.sender_character_sets[0]``)."""
    record = {"declared": choice.declared, "read_as": choice.read_as, "because": choice.because}
    if choice.rule:
        record["rule"] = choice.rule
    return record


def audit_record(choice: CharsetChoice) -> dict[str, str]:
    """:func:`charset_record` for an audit event written from a peer's header: the declared terms kept only where
    each is a code string (CS: upper-case letters, digits, space, underscore; at most 16 characters), so a hostile
    (0008,0005) carries no text of the peer's into the audit log."""
    record = charset_record(choice)
    if any(not _CODE_STRING.fullmatch(term) for term in choice.declared.split("\\") if term):
        record["declared"] = "(not a code string)"
    return record


def recorded_choice(preparation: Iterable[object]) -> CharsetChoice | None:
    """The character set choice an image's preparation recorded (``SourceImage.preparation``, or its JSON in
    ``inference_completed``), None when none was; entries of any other shape are passed over."""
    for step in preparation:
        if not isinstance(step, Mapping) or step.get("step") != "header":
            continue
        record = step.get("character_set")
        if isinstance(record, Mapping):
            declared, read_as, because = (record.get(key) for key in ("declared", "read_as", "because"))
            if isinstance(declared, str) and isinstance(read_as, str) and isinstance(because, str):
                rule = record.get("rule")
                return CharsetChoice(declared, read_as, because, rule if isinstance(rule, str) else "")
    return None
