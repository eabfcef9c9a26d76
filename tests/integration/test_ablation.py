"""Attribute ablation: every attribute radtrace reads, changed every way a peer gets it wrong, through the whole
pipeline (listener → completion → worker → SR, HL7, FHIR), ends in a draft that validates, a reasoned skip, or a
refusal that names the element. Never a failure.

The variants come from the attribute table (:mod:`radtrace.dicom_listener.attributes`) applied to factory
studies and to each real film in ``tests/data/real-cxr``. CI runs a seeded sample: every attribute at least once
per change kind (``RADTRACE_ABLATION_SEED`` picks another sample). The full matrix, every source x attribute x
kind, runs with ``RADTRACE_FULL_ABLATION=1`` and the ``slow`` marker.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from ablation_support import AblationHarness, Tally, running_harness
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
# Read at collection: the suite's autouse fixture removes every RADTRACE_* variable before a test runs.
SEED = int(os.environ.get("RADTRACE_ABLATION_SEED", "20261204"))


@pytest.fixture(scope="module")
def harness(tiny_model_dir: Path) -> Iterator[AblationHarness]:
    """One harness for the module, in memory where there is room (see running_harness)."""
    with running_harness(tiny_model_dir, "radtrace-ablation-") as made:
        yield made


CHUNK = 8  # variants read as one batch by the worker


def _changed(variant: Variant) -> list[Dataset] | None:
    """The variant's instances; None when its change does not apply to the attribute's VR or to that source."""
    return apply_change(SOURCES[variant.source](), by_keyword(variant.keyword), variant.kind, variant.name)


def _run_all(harness: AblationHarness, variants: Iterable[tuple[Variant, list[Dataset]]]) -> Tally:
    """Run the variants in chunks of :data:`CHUNK` (one worker batch each), holding one chunk in memory."""
    tally = Tally()
    chunk: list[tuple[Variant, list[Dataset]]] = []
    for item in itertools.chain(variants, [None]):
        if item is not None:
            chunk.append(item)
        if chunk and (item is None or len(chunk) == CHUNK):
            outcomes = harness.run_many([(v.name, datasets) for v, datasets in chunk])
            for variant, _ in chunk:
                tally.add(variant.name, outcomes[variant.name])
            chunk = []
    return tally


def _applicable_sample(seed: int) -> tuple[list[Variant], set[tuple[str, str]]]:
    """The CI sample: a source drawn per (attribute, kind); where the change does not apply to that source (a
    truncation of compressed pixel data), the next source in a seeded order. Also the pairs that apply nowhere."""
    order = random.Random(seed)
    chosen: list[Variant] = []
    inapplicable: set[tuple[str, str]] = set()
    for variant in sample_variants(sorted(SOURCES), seed):
        for source in dict.fromkeys([variant.source, *order.sample(sorted(SOURCES), len(SOURCES))]):
            tried = Variant(source, variant.keyword, variant.kind)
            if _changed(tried) is not None:
                chosen.append(tried)
                break
        else:
            inapplicable.add((variant.keyword, variant.kind))
    return chosen, inapplicable


def _report(tally: Tally, applied: set[tuple[str, str]], what: str) -> None:
    print(f"\nablation {what}: {tally.line()}; {len(applied)} (attribute, kind) pairs covered")
    for kind, count in sorted(tally.counts.items()):
        print(f"  {kind}: {count}")


def test_the_sources_include_the_real_films() -> None:
    assert len([s for s in SOURCES if s.startswith("film:")]) >= 3, sorted(SOURCES)


def test_every_attribute_changed_every_way_ends_in_a_draft_a_reasoned_skip_or_a_named_refusal(
    harness: AblationHarness,
) -> None:
    seed = SEED
    chosen, inapplicable = _applicable_sample(seed)
    applied = {(v.keyword, v.kind) for v in chosen}
    tally = _run_all(harness, ((v, changed) for v in chosen if (changed := _changed(v)) is not None))
    _report(tally, applied, f"CI sample (seed {seed})")
    assert tally.bad == []
    assert tally.run == len(chosen)
    ablated = [a for a in ATTRIBUTES if a.ablate]
    assert applied | inapplicable == {(a.keyword, k) for a in ablated for k in CHANGE_KINDS}
    # What a change kind cannot apply to is binary (non-ASCII text in a US), a sequence, or a text VR with no
    # length limit (over-long UT).
    for keyword, kind in inapplicable:
        assert by_keyword(keyword).vr in ("US", "SQ", "OB", "UT"), (keyword, kind)
    for outcome in ("draft", "skipped", "refused"):
        assert tally.counts.get(outcome, 0) > 0, tally.line()


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("RADTRACE_FULL_ABLATION") != "1", reason="set RADTRACE_FULL_ABLATION=1")
def test_the_full_matrix_of_sources_attributes_and_changes(harness: AblationHarness) -> None:
    applicable = (
        (variant, changed) for variant in all_variants(sorted(SOURCES)) if (changed := _changed(variant)) is not None
    )
    applied: set[tuple[str, str]] = set()

    def noted() -> Iterator[tuple[Variant, list[Dataset]]]:
        for variant, changed in applicable:
            applied.add((variant.keyword, variant.kind))
            yield variant, changed

    tally = _run_all(harness, noted())
    _report(tally, applied, "full matrix")
    assert tally.bad == []
