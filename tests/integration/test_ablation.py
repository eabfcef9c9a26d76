"""Attribute ablation: every attribute radtrace reads, changed every way a peer gets it wrong, through the whole
pipeline (listener → completion → worker → SR, HL7, FHIR), ends in a draft that validates, a reasoned skip, or a
refusal that names the element. Never a failure.

The variants come from the attribute table (:mod:`radtrace.dicom_listener.attributes`) applied to factory
studies and to each real film in ``tests/data/real-cxr``. CI runs a seeded sample: every attribute at least once
per change kind (``RADTRACE_ABLATION_SEED`` picks another sample). The full matrix, every source x attribute x
kind, runs with ``RADTRACE_FULL_ABLATION=1`` and the ``slow`` marker.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ablation_support import AblationHarness, Outcome, Tally
from radtrace.dicom_listener.attributes import ATTRIBUTES, by_keyword
from radtrace.testing.ablation import (
    CHANGE_KINDS,
    FACTORY_SOURCES,
    Variant,
    all_variants,
    apply_change,
    film_sources,
    sample_variants,
)

pytestmark = pytest.mark.integration

FILMS = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
SOURCES = FACTORY_SOURCES | film_sources(FILMS)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[AblationHarness]:
    """One harness for the module, in memory (/dev/shm) where there is one: each variant commits and fsyncs
    several times, and a disk's fsync would be most of the suite's time."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="radtrace-ablation-", dir=shm))
    else:
        root = tmp_path_factory.mktemp("ablation")
    made = AblationHarness(root, tiny_model_dir)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(root, ignore_errors=True)


def _run(harness: AblationHarness, variant: Variant) -> Outcome | None:
    """The variant's outcome; None when its change does not apply to the attribute's VR or to that source."""
    changed = apply_change(SOURCES[variant.source](), by_keyword(variant.keyword), variant.kind, variant.name)
    return None if changed is None else harness.run(changed)


def _sample(seed: int) -> list[Variant]:
    """The CI sample: a source drawn per (attribute, kind); where the change does not apply to that source (a
    truncation of compressed pixel data), the next source in a seeded order."""
    return sample_variants(sorted(SOURCES), seed)


def _report(tally: Tally, applied: set[tuple[str, str]], what: str) -> None:
    print(f"\nablation {what}: {tally.line()}; {len(applied)} (attribute, kind) pairs covered")
    for kind, count in sorted(tally.counts.items()):
        print(f"  {kind}: {count}")


def test_the_sources_include_the_real_films() -> None:
    assert len([s for s in SOURCES if s.startswith("film:")]) >= 3, sorted(SOURCES)


def test_every_attribute_changed_every_way_ends_in_a_draft_a_reasoned_skip_or_a_named_refusal(
    harness: AblationHarness,
) -> None:
    seed = int(os.environ.get("RADTRACE_ABLATION_SEED", "20261204"))
    tally = Tally()
    applied: set[tuple[str, str]] = set()
    inapplicable: set[tuple[str, str]] = set()
    order = random.Random(seed)
    for variant in _sample(seed):
        candidates = [variant.source, *order.sample(sorted(SOURCES), len(SOURCES))]
        for source in dict.fromkeys(candidates):
            tried = Variant(source, variant.keyword, variant.kind)
            outcome = _run(harness, tried)
            if outcome is not None:
                tally.add(tried.name, outcome)
                applied.add((variant.keyword, variant.kind))
                break
        else:
            inapplicable.add((variant.keyword, variant.kind))
    _report(tally, applied, f"CI sample (seed {seed})")
    assert tally.bad == []
    ablated = [a for a in ATTRIBUTES if a.ablate]
    assert applied | inapplicable == {(a.keyword, k) for a in ablated for k in CHANGE_KINDS}
    # Each change kind applies to most attributes; what it cannot apply to is binary or a sequence.
    for keyword, kind in inapplicable:
        assert by_keyword(keyword).vr in ("US", "SQ", "OB", "UT") or kind == "malformed", (keyword, kind)
    for outcome in ("draft", "skipped", "refused"):
        assert tally.counts.get(outcome, 0) > 0, tally.line()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RADTRACE_FULL_ABLATION") != "1", reason="set RADTRACE_FULL_ABLATION=1")
def test_the_full_matrix_of_sources_attributes_and_changes(harness: AblationHarness) -> None:
    tally = Tally()
    applied: set[tuple[str, str]] = set()
    for variant in all_variants(sorted(SOURCES)):
        outcome = _run(harness, variant)
        if outcome is not None:
            tally.add(variant.name, outcome)
            applied.add((variant.keyword, variant.kind))
    _report(tally, applied, "full matrix")
    assert tally.bad == []
