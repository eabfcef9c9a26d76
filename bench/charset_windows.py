"""Windows code-page text declared as the ISO set it extends: how often radtrace reads it wrong and unflagged.

For each page whose letters past ASCII the ISO set holds at other bytes (Windows-1257 under ISO_IR 110, 1256 under
ISO_IR 127, 1250 under ISO_IR 101), every word of the page's languages in the corpus, as written, upper case and
title case, is encoded in the page and declared the ISO term; every word of every language that the ISO set
encodes is encoded in the set (genuine text). Each header (one PN value) goes through
:func:`radtrace.dicom_charset.read_text_as` as a received one does. Counted: Windows encodings read wrong and
unflagged (the hazard), read wrong but flagged; genuine encodings read otherwise (must be 0) and flagged doubtful
(a glance each); and the detection's µs per name (:func:`windows_reading` alone, median of 5 passes).

Corpus: Faker's provider word lists (person, address, company, lorem ...), Babel's CLDR names (languages,
territories, scripts, months, days) and pycountry's translated names (ISO 3166-1/2/3, 639-3, 4217, 15924) in each
language, split into runs of letters. None of them is a dependency of radtrace: install them anywhere and point
``--corpus-path`` at it (``pip install --target DIR faker babel pycountry``); the sources found are printed.

    .venv/bin/python bench/charset_windows.py --corpus-path /tmp/charset-corpus [--dump DIR] [--json]

Another commit's code: ``PYTHONPATH=<its src>`` (e.g. a git worktree of 977afda).
"""

from __future__ import annotations

import argparse
import gettext
import importlib
import json
import pkgutil
import re
import statistics
import sys
import time
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.charset import python_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from radtrace import dicom_charset_windows
from radtrace.dicom_charset import read_text_as
from radtrace.dicom_charset_windows import windows_reading

# (term, page, the page's languages: the Windows writers' words)
CASES = [
    ("ISO_IR 110", "cp1257", ("lt", "lv", "et")),
    ("ISO_IR 127", "cp1256", ("ar", "fa", "ur")),
    ("ISO_IR 101", "cp1250", ("pl", "cs", "sk", "hu", "sl", "hr", "ro", "sq", "de", "bs", "sr")),
]
_RUN = re.compile(r"[^\W\d_]+")
_CHARSET, _NAME = Tag(0x00080005), Tag(0x00100010)


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _strings(item)


def _faker(words: dict[str, set[str]], sources: list[str]) -> None:
    try:
        providers = importlib.import_module("faker.providers")
    except ImportError:
        return
    found = 0
    for group in pkgutil.iter_modules(providers.__path__):
        try:
            package = importlib.import_module(f"faker.providers.{group.name}")
        except ImportError:
            continue
        for locale in pkgutil.iter_modules(getattr(package, "__path__", [])):
            language = locale.name.split("_")[0]
            try:
                module = importlib.import_module(f"faker.providers.{group.name}.{locale.name}")
            except ImportError:
                continue
            provider = getattr(module, "Provider", None)
            for name, value in vars(provider).items() if provider else ():
                if name.startswith("_") or "format" in name:
                    continue
                for text in _strings(value):
                    words.setdefault(language, set()).update(_RUN.findall(text))
                    found += 1
    sources.append(f"Faker {importlib.import_module('faker').VERSION} ({found:,} strings)")


def _babel(words: dict[str, set[str]], sources: list[str], languages: Iterable[str]) -> None:
    try:
        babel = importlib.import_module("babel")
    except ImportError:
        return
    found = 0
    for language in languages:
        try:
            locale = babel.Locale.parse(language)
        except Exception:  # a language CLDR lacks
            sources.append(f"(CLDR has no {language})")
            continue
        texts = [*locale.languages.values(), *locale.territories.values(), *locale.scripts.values()]
        for context in ("format", "stand-alone"):
            for width in ("wide", "abbreviated"):
                texts += [*locale.months[context][width].values(), *locale.days[context][width].values()]
        for text in texts:
            words.setdefault(language, set()).update(_RUN.findall(text))
        found += len(texts)
    sources.append(f"Babel {babel.__version__} CLDR ({found:,} names)")


def _pycountry(words: dict[str, set[str]], sources: list[str], languages: Iterable[str]) -> None:
    try:
        pycountry = importlib.import_module("pycountry")
    except ImportError:
        return
    databases = {
        "iso3166-1": [c.name for c in pycountry.countries],
        "iso3166-2": [s.name for s in pycountry.subdivisions],
        "iso3166-3": [c.name for c in pycountry.historic_countries],
        "iso639-3": [x.name for x in pycountry.languages],
        "iso4217": [x.name for x in pycountry.currencies],
        "iso15924": [x.name for x in pycountry.scripts],
    }
    found = 0
    for language in languages:
        for domain, names in databases.items():
            try:
                translation = gettext.translation(domain, pycountry.LOCALES_DIR, languages=[language])
            except OSError:
                continue
            for name in names:
                translated = translation.gettext(name)
                if translated != name:
                    words.setdefault(language, set()).update(_RUN.findall(translated))
                    found += 1
    sources.append(f"pycountry ({found:,} translated names)")


def corpus() -> tuple[dict[str, set[str]], list[str]]:
    """Words by language code, and the sources found."""
    words: dict[str, set[str]] = {}
    sources: list[str] = []
    _faker(words, sources)
    languages = sorted(set(words) | {language for _, _, group in CASES for language in group})
    _babel(words, sources, languages)
    _pycountry(words, sources, languages)
    if not sources:
        raise SystemExit("no word source: install faker, babel and pycountry somewhere and pass --corpus-path")
    return words, sources


def encodings(words: Iterable[str], codec: str) -> dict[bytes, str]:
    """Distinct encodings in ``codec`` of each word as written, upper case and title case, holding a byte past ASCII."""
    found: dict[bytes, str] = {}
    for word in words:
        for form in {word, word.upper(), word.title()}:
            try:
                data = form.encode(codec)
            except UnicodeEncodeError:
                continue
            if not data.isascii() and data.decode(codec) == form:
                found.setdefault(data, form)
    return found


def read(term: str, data: bytes) -> tuple[str, str]:
    """What radtrace reads a received header of ``data`` (its name) under ``term`` as, and why ('' when as declared)."""
    ds = Dataset()
    ds[_CHARSET] = RawDataElement(_CHARSET, "CS", len(term), term.encode(), 0, False, True)
    ds[_NAME] = RawDataElement(_NAME, "PN", len(data), data, 0, False, True)
    ds.set_original_encoding(False, True, [term])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choice = read_text_as(ds)
        return str(ds.PatientName), choice.because if choice else ""


def measure(words: dict[str, set[str]], dump: Path | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for term, page, languages in CASES:
        iso = python_encoding[term]
        windows = encodings((w for language in languages for w in words.get(language, ())), page)
        own = encodings((w for language in languages for w in words.get(language, ())), iso)
        genuine = encodings((w for group in words.values() for w in group), iso)
        wrong_unflagged, wrong_flagged, misread, doubtful, own_doubtful = [], 0, [], [], 0
        for data, word in windows.items():
            text, because = read(term, data)
            if text != word:
                if because:
                    wrong_flagged += 1
                else:
                    wrong_unflagged.append(f"{word}\t{text}")
        for data, word in genuine.items():
            text, because = read(term, data)
            if text != word:
                misread.append(f"{word}\t{text}\t{because}")
            elif because:
                doubtful.append(f"{word}\t{because}")
                own_doubtful += data in own
        values = [[data] for data in list(windows) + list(genuine)]
        passes = []
        for _ in range(5):
            start = time.perf_counter()
            for value in values:
                windows_reading(value, term)
            passes.append((time.perf_counter() - start) / max(1, len(values)) * 1e6)
        rows.append(
            {
                "case": f"{page} under {term}",
                "windows": len(windows),
                "wrong_unflagged": len(wrong_unflagged),
                "wrong_flagged": wrong_flagged,
                "genuine": len(genuine),
                "genuine_misread": len(misread),
                "genuine_doubtful": len(doubtful),
                "own_languages": len(own),
                "own_doubtful": own_doubtful,
                "us_per_name": round(statistics.median(passes), 2),
            }
        )
        if dump:
            dump.mkdir(parents=True, exist_ok=True)
            for name, lines in (("wrong", wrong_unflagged), ("misread", misread), ("doubtful", doubtful)):
                (dump / f"{page}-{name}.txt").write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return rows


# The letter n-grams each page's readings are weighed by (n, the fewest times one is counted to be kept): Arabic
# words are told apart by trigrams (held out: half the Windows-1256 words left unflagged that bigrams leave)
NGRAMS = {"cp1257": (2, 1), "cp1250": (2, 1), "cp1256": (3, 2)}


def ngram_table(words: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    """For each page, its n and the counts of the letter n-grams holding a letter past ASCII (``_`` a word's edge,
    n - 1 of them at each end) in the words of its case, lower case: the page's languages' words in the page and
    every word the ISO set encodes, each as written, upper and title case (what
    :mod:`radtrace.dicom_charset_windows` weighs both readings with)."""
    table: dict[str, dict[str, Any]] = {}
    for term, page, languages in CASES:
        size, fewest = NGRAMS[page]
        texts = [
            *encodings((w for language in languages for w in words.get(language, ())), page).values(),
            *encodings((w for group in words.values() for w in group), python_encoding[term]).values(),
        ]
        counts: dict[str, int] = {}
        for text in texts:
            edged = "_" * (size - 1) + text.lower() + "_" * (size - 1)
            for index in range(len(edged) - size + 1):
                gram = edged[index : index + size]
                if not gram.isascii():
                    counts[gram] = counts.get(gram, 0) + 1
        kept = {gram: count for gram, count in sorted(counts.items()) if count >= fewest}
        table[page] = {"n": size, "counts": kept}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", action="append", default=[], help="a folder holding faker/babel/pycountry")
    parser.add_argument("--dump", type=Path, help="write each case's wrong, misread and doubtful words here")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="score with a table of half the words (by a hash of each) and count only the other half",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--write-table", type=Path, help="write the n-gram table (src/radtrace/dicom_charset_ngrams.json)"
    )
    args = parser.parse_args()
    sys.path[:0] = args.corpus_path
    words, sources = corpus()
    if args.write_table:  # the other scripts' bigrams (bench/charset_other_scripts.py) are kept
        table = json.loads(args.write_table.read_text("utf-8")) if args.write_table.exists() else {}
        table.update({"corpus": "; ".join(sources), "ngrams": ngram_table(words)})
        args.write_table.write_text(json.dumps(table, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
        print(f"wrote {args.write_table} ({args.write_table.stat().st_size:,} bytes)")
        return
    if args.held_out:
        halves = [
            {
                language: {w for w in group if zlib.crc32(w.lower().encode()) % 2 == half}
                for language, group in words.items()
            }
            for half in (0, 1)
        ]
        held = ngram_table(halves[0])
        bits = {page: dicom_charset_windows.ngram_bits(grams) for page, grams in held.items()}
        dicom_charset_windows._ngram_bits = bits.__getitem__  # type: ignore[assignment]
        words = halves[1]
        sources.append("held out: scored with a table of the other half of the words")
    rows = measure(words, args.dump)
    if args.json:
        print(json.dumps({"corpus": sources, "rows": rows}, indent=2))
        return
    print("corpus:", "; ".join(sources))
    print(
        "| case | Windows encodings | wrong, unflagged | wrong, flagged | genuine ISO encodings | read otherwise "
        "| flagged doubtful (of the page's languages) | µs/name |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        share = f"{row['genuine_doubtful']:,} ({row['genuine_doubtful'] / max(1, row['genuine']):.1%}"
        print(
            f"| {row['case']} | {row['windows']:,} | {row['wrong_unflagged']:,} | {row['wrong_flagged']:,} "
            f"| {row['genuine']:,} | {row['genuine_misread']:,} | {share}; {row['own_doubtful']:,} of "
            f"{row['own_languages']:,}) | {row['us_per_name']} |"
        )


if __name__ == "__main__":
    main()
