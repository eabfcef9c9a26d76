"""Text in another script's code page under a wrong or empty (0008,0005): how often it is read wrong, unflagged.

Senders on Windows or DOS write their code page (Arabic Windows-1256 or DOS 720, Cyrillic 1251 or 866, Greek 1253 or
737, Hebrew 1255 or 862, Thai 874) and declare nothing, or the Latin-1 ``ISO_IR 100`` their software hard-codes.
Every word of each script's languages in the corpus (as written, upper case and title case) is encoded in each page
and read as a received header's name is (:func:`radtrace.dicom_charset.read_text_as`, the site assuming ISO_IR 100)
under no declaration and under ``ISO_IR 100``; counted: read as written (flagged or not), read wrong but flagged,
read wrong and unflagged (the hazard). Then every word of every language Latin-1 encodes, written in Latin-1 under
the same two declarations (genuine text): read otherwise (must stay 0 where it was) and newly flagged.

Corpus as bench/charset_windows.py's (Faker, Babel CLDR, pycountry: ``pip install --target DIR faker babel
pycountry``). Another commit's code: ``PYTHONPATH=<its src>``.

``--write-table FILE`` writes instead each script's letter bigrams of its languages' words (lower case, ``_`` a
word's edge) into FILE's ``scripts`` (src/radtrace/dicom_charset_ngrams.json, the rest of it kept):
:mod:`radtrace.dicom_charset_scripts` weighs the readings of pages of several scripts with them.

    .venv/bin/python bench/charset_other_scripts.py --corpus-path /tmp/charset-corpus [--json] [--write-table FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from charset_windows import corpus, encodings, read
from radtrace.dicom_charset import CharsetChoice

# (script, its languages, its pages)
SCRIPTS = [
    ("Arabic", ("ar", "fa", "ur"), ("cp1256", "cp720")),
    ("Cyrillic", ("ru", "uk", "bg", "be", "mk", "sr"), ("cp1251", "cp866")),
    ("Greek", ("el",), ("cp1253", "cp737")),
    ("Hebrew", ("he", "iw"), ("cp1255", "cp862")),
    ("Thai", ("th",), ("cp874",)),
]
DECLARED = (None, "ISO_IR 100")
# What is no letter of a word: an edge in the bigrams
_NOT_LETTER = re.compile(r"[^\w]|[\d_]")
# A bigram counted fewer times than this is left out of the table (an unseen one's weight)
_FEWEST = 2


def script_table(words: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    """For each script (its Unicode name's start, ``CYRILLIC``), the counts of the letter bigrams holding a
    character past ASCII in the distinct lower-case words of its languages (``_`` a word's edge), those counted at
    least :data:`_FEWEST` times, and the total of all."""
    table: dict[str, dict[str, Any]] = {}
    for script, languages, _ in SCRIPTS:
        counts: dict[str, int] = {}
        for word in {w.lower() for language in languages for w in words.get(language, ())}:
            edged = "_" + _NOT_LETTER.sub("_", word) + "_"
            for index in range(len(edged) - 1):
                gram = edged[index : index + 2]
                if not gram.isascii():
                    counts[gram] = counts.get(gram, 0) + 1
        kept = {gram: count for gram, count in sorted(counts.items()) if count >= _FEWEST}
        table[script.upper()] = {"n": 2, "total": sum(counts.values()), "counts": kept}
    return table


def _read(term: str | None, data: bytes) -> tuple[str, str]:
    """(text, because) as radtrace reads a header holding ``data`` under ``term`` (None: no (0008,0005))."""
    if term is not None:
        return read(term, data)
    import warnings

    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    from radtrace.dicom_charset import read_text_as

    name = Tag(0x00100010)
    ds = Dataset()
    ds[name] = RawDataElement(name, "PN", len(data), data, 0, False, True)
    ds.set_original_encoding(False, True, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choice: CharsetChoice | None = read_text_as(ds)
        return str(ds.PatientName), choice.because if choice else ""


def _flagged(because: str) -> bool:
    return bool(because) and because not in {"ascii", "site-rule"}


def measure(words: dict[str, set[str]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for script, languages, pages in SCRIPTS:
        for page in pages:
            found = encodings((w for language in languages for w in words.get(language, ())), page)
            for term in DECLARED:
                right = right_flagged = wrong_flagged = wrong_unflagged = 0
                for data, word in found.items():
                    text, because = _read(term, data)
                    if text == word:
                        right += 1
                        right_flagged += _flagged(because)
                    elif _flagged(because):
                        wrong_flagged += 1
                    else:
                        wrong_unflagged += 1
                rows.append(
                    {
                        "case": f"{script} {page} under {term or 'no declaration'}",
                        "encodings": len(found),
                        "read_as_written": right,
                        "of_which_flagged": right_flagged,
                        "wrong_flagged": wrong_flagged,
                        "wrong_unflagged": wrong_unflagged,
                    }
                )
    genuine = encodings((w for group in words.values() for w in group), "latin-1")
    for term in DECLARED:
        otherwise = flagged = 0
        for data, word in genuine.items():
            text, because = _read(term, data)
            otherwise += text != word
            flagged += text == word and _flagged(because) and because != "assumed"
        rows.append(
            {
                "case": f"genuine Latin-1 under {term or 'no declaration'}",
                "encodings": len(genuine),
                "read_otherwise": otherwise,
                "flagged_beyond_assumed": flagged,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", action="append", default=[], help="a folder holding faker/babel/pycountry")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-table", type=Path, help="write the scripts' bigrams into this n-gram table file")
    args = parser.parse_args()
    sys.path[:0] = args.corpus_path
    words, sources = corpus()
    if args.write_table:
        tables = json.loads(args.write_table.read_text("utf-8")) if args.write_table.exists() else {}
        tables["scripts"] = script_table(words)
        args.write_table.write_text(json.dumps(tables, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
        print(f"wrote {args.write_table} ({args.write_table.stat().st_size:,} bytes)")
        return
    rows = measure(words)
    if args.json:
        print(json.dumps({"corpus": sources, "rows": rows}, indent=2))
        return
    print("corpus:", "; ".join(sources))
    for row in rows:
        print(" | ".join(f"{key} {value:,}" if isinstance(value, int) else str(value) for key, value in row.items()))


if __name__ == "__main__":
    main()
