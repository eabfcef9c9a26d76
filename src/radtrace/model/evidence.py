"""Which sentences of a model's reasoning are the evidence of each finding: one rule for the review console's study
page and for every draft (the SR's, the ORU's and the FHIR Bundle's per-finding evidence), so that what a radiologist
reviews is what the PACS, the RIS and the EHR receive.

:func:`evidence_sentences` gives, for one finding, the parser's evidence sentence first, then each sentence of the
reasoning naming the finding (its label or an alias, as whole words); for "No Finding", which no word names, each
sentence saying the whole film is normal ("Normal chest radiograph without acute cardiopulmonary abnormality."), never
a part of the chest found normal, a hedge, an exception or a prior film's. :func:`finding_evidence` applies it to a
:class:`~radtrace.model.reading.Reading`'s finding, as the drafts do; the console applies it to the recorded reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from radtrace.model.reading import Finding, Reading

__all__ = ["MAX_EVIDENCE", "NO_FINDING", "SENTENCE", "evidence_sentences", "finding_evidence"]

#: The most sentences given as one finding's evidence.
MAX_EVIDENCE: Final = 6

#: A sentence of the model's text: up to a full stop, "!" or "?" that a space, a line's end or the text's end follows.
#: One inside a word or a number ("a cardiothoracic ratio above 0.55") does not end it: cut there, the evidence of a
#: finding read "a cardiothoracic ratio above 0." A run of marks ("...") stays with its sentence.
SENTENCE: Final = re.compile(r"(?:[^.!?\n]|[.!?]+(?=[^\s.!?]))+[.!?]*|[.!?]+")
#: Words naming a finding, besides its label: each matched as a whole word (a stem with ``\w*``), so "line" does not
#: name Support Devices in "the trachea is midline" or "linear atelectasis", nor "tube" in "tuberculosis".
_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "Pleural Effusion": (r"effusions?",),
    "Enlarged Cardiomediastinum": (r"cardiomediastin\w*", r"mediastin\w*"),
    "Cardiomegaly": (r"cardiomegaly", r"heart size", r"cardiac silhouette", r"enlarged heart"),
    "Lung Opacity": (r"opacit\w*",),
    "Lung Lesion": (r"lesions?", r"nodul\w*", r"mass(?:es)?"),
    "Support Devices": (r"devices?", r"tubes?", r"catheters?", r"lines?", r"pacemakers?", r"wires?"),
    "Pneumothorax": (r"pneumothora\w*",),
    "Atelectasis": (r"atelecta\w*",),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (r"pneumonias?",),
    "Edema": (r"edema\w*", r"oedema\w*"),
    "Fracture": (r"fractur\w*",),
    "Pleural Other": (r"pleural thickening", r"pleural plaques?"),
}


def _naming(label: str) -> re.Pattern[str]:
    """Whole words naming ``label`` (the label itself, or one of its :data:`_ALIASES`), any case, any spacing."""
    words = (re.escape(label).replace("\\ ", " "), *_ALIASES.get(label, ()))
    return re.compile(r"(?<!\w)(?:" + "|".join(words).replace(" ", r"\s+") + r")(?!\w)", re.IGNORECASE)


NO_FINDING: Final = "No Finding"
#: A sentence saying the whole film is normal: what supports "No Finding", which no word names ("Normal chest
#: radiograph without acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.", "No acute findings.").
#: A part of the chest found normal ("Heart size is normal.", "No acute fracture.", "No acute abnormality of the
#: ribs.") is not one, nor a finding of nothing in particular ("No finding to suggest pneumonia.").
_WHOLE_FILM_NORMAL: Final = re.compile(
    r"(?<!\w)(?:"
    r"no\s+findings?"
    r"|(?:no|without)\s+(?:(?:radiographic\s+)?evidence\s+of\s+)?(?:an?\s+|any\s+)?"
    r"(?:(?:(?:acute|active|significant)\s+)?(?:cardiopulmonary|intrathoracic|thoracic)|acute|active|significant)\s+"
    r"(?:abnormalit(?:y|ies)|process(?:es)?|disease|findings?|pathology)"
    r"|no\s+(?:radiographic\s+)?abnormalit(?:y|ies)\s+(?:is\s+|are\s+)?(?:seen|detected|identified|demonstrated)"
    r"|(?:normal|unremarkable)\s+(?:(?:PA|AP|frontal|portable|upright)\s+)?(?:chest\s+)?"
    r"(?:radiograph|x-?ray|film|study|examination|exam|CXR)"
    r"|(?:chest\s+(?:radiograph|x-?ray|film|study|examination|exam)|radiograph|CXR)\s+(?:is|appears)\s+"
    r"(?:normal|unremarkable|within\s+normal\s+limits)"
    r")(?!\w)(?!\s+(?:of|in|on|at|involving|to|for|that|which|suggest\w*|concerning)(?!\w))",
    re.IGNORECASE,
)
#: What makes such a sentence no evidence of a normal film: an exception ("Otherwise normal chest radiograph."), a
#: hedge or a negation ("not a normal study", "cannot exclude"), or a comparison (a prior film's being normal).
_NOT_WHOLE_FILM: Final = re.compile(
    r"(?<!\w)(?:otherwise|except\w*|apart\s+from|aside\s+from|other\s+than|besides|but|however|although|though"
    r"|whereas|while|not|no\s+longer|cannot|can\s*not|may|might|could|possibl[ey]|questionabl[ey]|suspic\w*"
    r"|suspect\w*|likely|probabl[ey]|equivocal|uncertain|indeterminate|concerning|prior|previous\w*|compar\w*"
    r"|interval|new|since|than)(?!\w)|\?",
    re.IGNORECASE,
)


def _names(label: str, status: str | None) -> Callable[[str], bool]:
    """Whether a sentence concerns ``label``: it names it (:func:`_naming`); for "No Finding" (unless absent), it says
    the whole film is normal (:data:`_WHOLE_FILM_NORMAL`) with nothing taking it back (:data:`_NOT_WHOLE_FILM`)."""
    if label != NO_FINDING:
        naming = _naming(label)
        return lambda sentence: naming.search(sentence) is not None
    if status == "absent":
        return lambda _sentence: False
    return lambda sentence: bool(_WHOLE_FILM_NORMAL.search(sentence)) and not _NOT_WHOLE_FILM.search(sentence)


def evidence_sentences(
    label: str, reasoning: Sequence[tuple[str, str]], given: str | None, status: str | None = None
) -> tuple[str, ...]:
    """The sentences of the reasoning that concern ``label``: the parser's evidence first, then any naming it (for
    "No Finding", saying the whole film is normal: :func:`_names`). The parser's evidence cut inside a word or a number
    of its sentence (a recorded reading's "ratio above 0." of "ratio above 0.55.") is shown as that whole sentence."""
    names = _names(label, status)
    sentences = [
        sentence
        for _section, text in reasoning
        for match in SENTENCE.finditer(text)
        if (sentence := match.group(0).strip())
    ]
    found: list[str] = []
    if given and given.strip():
        given = given.strip()
        whole = (s for s in sentences if s.startswith(given) and len(s) > len(given) and not s[len(given)].isspace())
        found.append(next(whole, given))
    for sentence in sentences:
        if names(sentence) and sentence not in found:
            found.append(sentence)
    return tuple(found[:MAX_EVIDENCE])


def finding_evidence(reading: Reading, finding: Finding) -> tuple[str, ...]:
    """The evidence sentences of ``finding`` in ``reading`` (:func:`evidence_sentences`), as the console shows them
    for the same reading recorded."""
    reasoning = [(str(step.section), step.text) for step in reading.reasoning]
    return evidence_sentences(finding.label, reasoning, finding.evidence, finding.status.value)
