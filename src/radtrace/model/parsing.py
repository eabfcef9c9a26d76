"""Text helpers shared by the profiles' parsers: reasoning sections, CheXpert label mentions, hedging.

Everything here is a pure function of strings and is written so that no input makes it raise: the model's
text is hostile input like any other. The rules are deliberately simple and readable, in the manner of
NegEx-style negation detection: a mention is *negated* when a negation cue precedes it in its clause (or the
mention itself says "normal"/"none"), and *hedged* when a hedging cue appears anywhere in its clause; hedging
wins over negation ("cannot be excluded").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from radtrace.model.reading import Finding, FindingStatus, ReasoningSection, ReasoningStep

__all__ = [
    "CHEXPERT_LABELS",
    "MAX_REASONING_STEPS",
    "Mention",
    "canonical_label",
    "differential_from",
    "findings_from",
    "label_mentions",
    "mention_positions",
    "normalise_text",
    "split_labels",
    "split_sections",
]

#: The 14 CheXpert labels, in CheXpert's order.
CHEXPERT_LABELS: Final[tuple[str, ...]] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

_ALIASES: Final[dict[str, str]] = {
    **{label.lower(): label for label in CHEXPERT_LABELS},
    "no findings": "No Finding",
    "normal": "No Finding",
    "no acute findings": "No Finding",
    "effusion": "Pleural Effusion",
    "pleural effusions": "Pleural Effusion",
    "support device": "Support Devices",
    "devices": "Support Devices",
    "enlarged cardiomediastinal silhouette": "Enlarged Cardiomediastinum",
    "opacity": "Lung Opacity",
    "lung opacities": "Lung Opacity",
    "lung lesions": "Lung Lesion",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "fractures": "Fracture",
    "oedema": "Edema",
    "pulmonary edema": "Edema",
}

# What counts as a mention of each label in free text (case-insensitive).
_MENTIONS: Final[dict[str, re.Pattern[str]]] = {
    label: re.compile(pattern, re.IGNORECASE)
    for label, pattern in {
        "Enlarged Cardiomediastinum": (
            r"enlarged cardiomediastin\w*|cardiomediastinal (?:silhouette|contour)s?"
            r"(?: (?:is|are|appears?))?(?: \w+)? (?:enlarged|widened|normal|within normal limits|unremarkable)"
            r"|widen\w* (?:of the )?mediastin\w*"
            r"|mediastin\w* (?:is |appears )?(?:widen\w*|enlarged|normal|unremarkable)"
        ),
        "Cardiomegaly": (
            r"cardiomegaly|enlarged (?:heart|cardiac silhouette)"
            r"|(?:normal|enlarged) (?:heart|cardiac) (?:size|silhouette)"
            r"|(?:heart|cardiac silhouette|heart size|cardiac size)(?: is| appears)?"
            r"(?: (?:mildly|moderately|markedly|severely|not|top))? (?:enlarged|normal|within normal limits)"
        ),
        "Lung Opacity": r"opacit\w*|opacification|airspace disease|infiltrat\w*",
        "Lung Lesion": r"nodul\w*|\bmass(?:es)?\b|(?:lung|pulmonary) lesions?",
        "Edema": r"\bo?edema\w*|vascular congestion|pulmonary venous (?:congestion|hypertension)|kerley",
        "Consolidation": r"consolidat\w*",
        "Pneumonia": r"pneumoni\w*|infectious process",
        "Atelectasis": r"atelecta\w*|volume loss|\bcollapse",
        "Pneumothorax": r"pneumothora\w*",
        "Pleural Effusion": r"effusions?",
        "Pleural Other": r"pleural (?:thickening|plaques?|scarring|calcification)|fibrothorax",
        "Fracture": r"fractur\w*",
        "Support Devices": (
            r"support devices?|\bdevices?\b|(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|chest|enteric)"
            r" tubes?|\btubes?\b|catheters?|\bpicc\b|pacemakers?|\bpacer\b|defibrillator|sternotomy wires?"
            r"|surgical clips?|\bdrains?\b|\bport\b|(?:pacing|pacemaker) leads?|\blines?\b(?! of)"
        ),
    }.items()
}

_NEGATION_BEFORE: Final = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|absent|none|resolved|no evidence of|nor)\b", re.IGNORECASE
)
_NEGATION_AFTER: Final = re.compile(
    r"^[\s:,-]*(?:(?:is|are|appears?|seems?)\s+)?"
    r"(?:not (?:seen|present|identified|evident|visible|demonstrated)|absent|normal|unremarkable|none|no|"
    r"within normal limits|resolved|clear|negative)\b",
    re.IGNORECASE,
)
_NEGATION_INSIDE: Final = re.compile(r"\b(?:normal|within normal limits|not)\b", re.IGNORECASE)
_HEDGE: Final = re.compile(
    r"\b(?:possibl[ey]|may|might|could|cannot be (?:excluded|ruled out)|can ?not (?:exclude|rule out)|"
    r"not (?:be )?(?:excluded|ruled out)|questionabl[ey]|suspicious|suspected|suggestive|suggests?|likely|unlikely|"
    r"probabl[ey]|equivocal|uncertain|indeterminate|versus|vs|concerning for|borderline|upper limits? of normal|"
    r"query|cannot exclude|differential)\b|\?",
    re.IGNORECASE,
)
_CLAUSE_BREAK: Final = re.compile(
    r"[.;!?\n]+|,\s*(?:but|however|although|though|while|whereas|and there is|and there are)\b"
    r"|\s(?:but|however|although|whereas)\s",
    re.IGNORECASE,
)
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+|\n+")

# Section headings: a name the model writes before a colon, mapped to a reasoning section.
_SECTION_NAME_PATTERNS: Final[tuple[tuple[str, ReasoningSection], ...]] = (
    (r"^(?:image|technical|film) quality|^quality|^technique|^projection", "image quality"),
    (r"^(?:support )?devices|^lines|^tubes|^hardware", "devices"),
    (r"^airways?|^trachea", "airways"),
    (r"^(?:right |left |both |bilateral )?lungs?|^lung fields|^parenchyma", "lungs"),
    (r"^pleura", "pleura"),
    (r"^(?:cardio)?mediastin", "mediastinum"),
    (r"^hil", "hila"),
    (r"^heart|^cardiac", "heart"),
    (r"^(?:upper )?abdomen|^subdiaphragm", "abdomen"),
    (r"^bones?|^osseous|^skelet|^bony|^soft tissues", "bones"),
    (r"^summary|^conclusion|^impression|^overall|^final|^assessment", "summary"),
)
_SECTION_NAMES: Final = tuple((re.compile(p, re.IGNORECASE), section) for p, section in _SECTION_NAME_PATTERNS)
_HEADING: Final = re.compile(
    r"(?:^|(?<=\n)|(?<=[.!?] ))[ \t]*(?:#+\s*|[-*•]\s*|\d{1,2}[.)]\s*)?(?:\*\*)?"
    r"(?P<name>[A-Za-z][A-Za-z /&,-]{1,40}?)(?:\*\*)?[ \t]*:(?:\*\*)?",
)
# Keyword fallback for sentences with no heading, tried in this order.
_SECTION_KEYWORD_PATTERNS: Final[tuple[tuple[str, ReasoningSection], ...]] = (
    (r"\b(?:in summary|overall|impression|in conclusion|to summari[sz]e)\b", "summary"),
    (
        r"\b(?:image quality|inspiration|rotated|rotation|penetrat\w*|exposure|positioning|technically)\b",
        "image quality",
    ),
    (r"\b(?:tube|catheter|picc|pacemaker|pacer|device|sternotomy|clip|drain)s?\b", "devices"),
    (r"\b(?:trachea|airways?|bronch\w*)\b", "airways"),
    (r"\b(?:pleura\w*|effusions?|pneumothorax|costophrenic)\b", "pleura"),
    (r"\b(?:heart|cardiac|cardiomegaly)\b", "heart"),
    (r"\b(?:mediastin\w*|aort\w*)\b", "mediastinum"),
    (r"\b(?:hila|hilar|hilum)\b", "hila"),
    (r"\b(?:abdom\w*|subdiaphragmatic|free air|bowel|stomach)\b", "abdomen"),
    (r"\b(?:bones?|osseous|ribs?|fractur\w*|spine|clavicles?|skelet\w*)\b", "bones"),
    (r"\b(?:lungs?|opacit\w*|consolidat\w*|atelecta\w*|nodul\w*|edema|parenchym\w*|airspace)\b", "lungs"),
)
_SECTION_KEYWORDS: Final = tuple((re.compile(p, re.IGNORECASE), section) for p, section in _SECTION_KEYWORD_PATTERNS)
_DIFFERENTIAL: Final = re.compile(
    r"\bdifferential(?: diagnos[ie]s| considerations?)?(?: (?:includes?|would include|is))?"
    r"\s*[:\-\u2013]?\s*(?P<items>[^.\n]+)",
    re.IGNORECASE,
)
_EVIDENCE_MAX: Final = 400
#: Reasoning steps per reading. Each step is an SR content item and OBX lines (drafting costs about 7 ms a step);
#: a trace's sections number about a dozen, while text that alternates headings could make a hundred thousand.
MAX_REASONING_STEPS: Final = 64


@dataclass(frozen=True)
class Mention:
    """One mention of a label in the text, with how it is qualified."""

    label: str
    negated: bool
    hedged: bool
    sentence: str
    start: int


def normalise_text(text: str) -> str:
    """NFC, no NULs or other control characters except newlines and tabs, Windows newlines folded."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")


def canonical_label(text: str) -> str | None:
    """The CheXpert label a piece of answer text names, or ``None``."""
    key = re.sub(r"[\s_]+", " ", re.sub(r"[*`\"'.:()\[\]]", "", text)).strip().lower()
    return _ALIASES.get(key)


def split_labels(answer: str, separators: str = r"[,;\n|]") -> tuple[str, ...]:
    """The labels of an answer as given (trimmed, empties and duplicates dropped, order kept)."""
    parts = [part.strip().strip("*-•. ").strip() for part in re.split(separators, answer)]
    seen: dict[str, None] = {}
    for part in parts:
        if part and len(part) <= 200:
            seen.setdefault(part, None)
    return tuple(seen)


def split_sections(text: str) -> tuple[ReasoningStep, ...]:
    """Split reasoning into ordered sections: at headings where the model wrote them, else by keywords.

    Consecutive pieces of the same section merge. Text before the first heading, or that no rule places,
    goes to ``other`` (or to the section before it, for keyword fallback). Text order is kept.
    """
    text = text.strip()
    if not text:
        return ()
    pieces: list[tuple[ReasoningSection, str]] = []
    headings = [
        (match, section) for match in _HEADING.finditer(text) if (section := _section_of_heading(match["name"]))
    ]
    if headings:
        if headings[0][0].start() > 0:
            pieces.extend(_by_keywords(text[: headings[0][0].start()]))
        for index, (match, section) in enumerate(headings):
            end = headings[index + 1][0].start() if index + 1 < len(headings) else len(text)
            pieces.append((section, text[match.start() : end].strip()))
    else:
        pieces = _by_keywords(text)
    merged: list[tuple[ReasoningSection, str]] = []
    for section, piece in pieces:
        if not piece:
            continue
        if merged and merged[-1][0] == section:
            merged[-1] = (section, f"{merged[-1][1]} {piece}")
        else:
            merged.append((section, piece))
    return tuple(ReasoningStep(section=section, text=piece) for section, piece in _capped(merged))


def _capped(steps: list[tuple[ReasoningSection, str]]) -> list[tuple[ReasoningSection, str]]:
    """At most :data:`MAX_REASONING_STEPS`: past the first ones, the text goes into one ``other`` step, all of it,
    in order, except that the last summary (the impression) stays a summary step, last."""
    if len(steps) <= MAX_REASONING_STEPS:
        return steps
    head, rest = steps[: MAX_REASONING_STEPS - 2], steps[MAX_REASONING_STEPS - 2 :]
    summaries = [index for index, (section, _) in enumerate(rest) if section == "summary"]
    summary = [rest.pop(summaries[-1])] if summaries else []
    return [*head, ("other", " ".join(piece for _, piece in rest)), *summary]


def mention_positions(text: str, label: str) -> list[int]:
    """Where ``label`` is named in ``text``: its mention patterns (CheXpert labels) and the label itself."""
    positions = [match.start() for match in _MENTIONS[label].finditer(text)] if label in _MENTIONS else []
    lowered, needle = text.lower(), label.lower()
    start = lowered.find(needle)
    while start != -1 and len(positions) < 1000:
        positions.append(start)
        start = lowered.find(needle, start + 1)
    return sorted(set(positions))


def label_mentions(text: str, labels: Iterable[str] | None = None) -> list[Mention]:
    """Every mention of a CheXpert label (or of ``labels`` only), in text order."""
    wanted = set(labels) if labels is not None else set(_MENTIONS)
    mentions: list[Mention] = []
    for clause_start, clause_end in _clauses(text):
        clause = text[clause_start:clause_end]
        hedged = bool(_HEDGE.search(clause))
        for label, pattern in _MENTIONS.items():
            if label not in wanted:
                continue
            for match in pattern.finditer(clause):
                before, inside, after = clause[: match.start()], match.group(0), clause[match.end() :]
                negated = bool(
                    _NEGATION_BEFORE.search(before) or _NEGATION_INSIDE.search(inside) or _NEGATION_AFTER.search(after)
                )
                position = clause_start + match.start()
                mentions.append(Mention(label, negated, hedged, _sentence_around(text, position), position))
                break  # one mention per label per clause is enough to qualify it
    mentions.sort(key=lambda mention: mention.start)
    return mentions


def findings_from(
    answer_labels: Sequence[str], reasoning: str, *, labels: Sequence[str] = CHEXPERT_LABELS
) -> tuple[Finding, ...]:
    """Findings for ``labels``: present when answered; otherwise uncertain where the reasoning hedges or
    affirms without the answer agreeing, absent where it only negates; unmentioned labels are left out.

    ``answer_labels`` are canonical labels. Findings come in ``labels`` order.
    """
    answered = set(answer_labels)
    mentions = label_mentions(reasoning)
    findings: list[Finding] = []
    for label in labels:
        own = [mention for mention in mentions if mention.label == label]
        affirmed = [mention for mention in own if not mention.negated and not mention.hedged]
        hedged = [mention for mention in own if mention.hedged]
        if label in answered:
            supporting = affirmed or hedged
            evidence = _evidence(supporting[0]) if supporting else None
            findings.append(Finding(label=label, status=FindingStatus.PRESENT, evidence=evidence))
        elif hedged or affirmed:
            findings.append(
                Finding(label=label, status=FindingStatus.UNCERTAIN, evidence=_evidence((hedged or affirmed)[0]))
            )
        elif own:
            findings.append(Finding(label=label, status=FindingStatus.ABSENT, evidence=_evidence(own[0])))
    return tuple(findings)


def differential_from(text: str) -> tuple[str, ...]:
    """The differential diagnoses the text lists after "Differential …:", in order, without duplicates."""
    items: dict[str, None] = {}
    for match in _DIFFERENTIAL.finditer(text):
        for part in re.split(r",|;|/|\bor\b|\band\b|\bversus\b|\bvs\.?", match["items"], flags=re.IGNORECASE):
            cleaned = part.strip().strip("*-•:() ").strip()
            if cleaned and len(cleaned) <= 120 and cleaned.lower() not in ("includes", "include", "none"):
                items.setdefault(cleaned, None)
    return tuple(items)[:12]


def _section_of_heading(name: str) -> ReasoningSection | None:
    name = name.strip()
    for pattern, section in _SECTION_NAMES:
        if pattern.search(name):
            return section
    return None


def _by_keywords(text: str) -> list[tuple[ReasoningSection, str]]:
    pieces: list[tuple[ReasoningSection, str]] = []
    current: ReasoningSection = "other"
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        for pattern, section in _SECTION_KEYWORDS:
            if pattern.search(sentence):
                current = section
                break
        pieces.append((current, sentence))
    return pieces


def _clauses(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _CLAUSE_BREAK.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _sentence_around(text: str, position: int) -> str:
    start = max(text.rfind(mark, 0, position) for mark in (". ", "\n", "! ", "? ")) + 1
    ends = [i for i in (text.find(mark, position) for mark in (". ", "\n", "! ", "? ")) if i != -1]  # not 0.5's "."
    end = min(ends) + 1 if ends else len(text)
    return text[start:end].strip()


def _evidence(mention: Mention | None) -> str | None:
    if mention is None or not mention.sentence:
        return None
    sentence = mention.sentence
    return sentence if len(sentence) <= _EVIDENCE_MAX else sentence[: _EVIDENCE_MAX - 1] + "…"
