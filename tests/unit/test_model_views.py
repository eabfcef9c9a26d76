"""View selection: which image of a study the model reads."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydicom.dataset import Dataset

from radtrace.model.views import NO_FRONTAL, choose_views, read_view
from radtrace.testing.studies import VALID_VARIANTS, ImageSpec, StudySpec, make_image, make_study

pytestmark = pytest.mark.unit


def image(variant: str, **changes: object) -> Dataset:
    spec = replace(VALID_VARIANTS[variant], **changes) if changes else VALID_VARIANTS[variant]
    return make_image(StudySpec(), spec)


@pytest.mark.parametrize(
    ("variant", "projection", "source"),
    [
        ("dx-pa", "PA", "view_code"),
        ("dx-pa-view-code-only", "PA", "view_code"),
        ("dx-pa-view-position-only", "PA", "view_position"),
        ("dx-ll-view-code-only", "LL", "view_code"),
        ("dx-ap", "AP", "view_code"),
        ("dx-rl", "RL", "view_code"),
        ("cr-ap", "AP", "view_position"),
        ("cr-ll", "LL", "view_position"),
        ("dx-ap-view-unrecorded", "AP", "description"),  # the factory's series description says "CHEST AP"
        ("cr-rl-view-unrecorded", "RL", "description"),
    ],
)
def test_view_is_read_from_code_then_position(variant: str, projection: str | None, source: str | None) -> None:
    view = read_view(image(variant))
    assert (view.projection, view.source) == (projection, source)


def test_view_code_wins_over_a_contradicting_view_position() -> None:
    ds = image("dx-pa")
    ds.ViewPosition = "AP"
    assert read_view(ds).projection == "PA"


def test_descriptions_are_the_last_resort() -> None:
    ds = image("dx-ap-view-unrecorded")
    del ds.SeriesDescription
    assert read_view(ds).projection is None
    ds.SeriesDescription = "CHEST AP PORTABLE"
    view = read_view(ds)
    assert (view.projection, view.source, view.portable) == ("AP", "description", True)
    ds.SeriesDescription = "Thorax lateral"
    assert read_view(ds).projection == "LATERAL"


def test_pa_is_preferred_over_ap_and_a_lateral_comes_second() -> None:
    study = make_study(images=[ImageSpec(view="AP"), ImageSpec(view="LL"), ImageSpec(view="PA")])
    choice = choose_views(study, want_lateral=True)
    assert (choice.frontal, choice.lateral, choice.flags) == (2, 1, ())
    assert choose_views(study).lateral is None  # only when the profile takes a lateral


def test_ap_only_study_is_read_and_flagged() -> None:
    study = make_study(images=[ImageSpec(view="LL"), ImageSpec(view="AP")])
    choice = choose_views(study)
    assert choice.frontal == 1
    assert "ap" in choice.flags
    assert choice.skip_reason is None


@pytest.mark.parametrize(
    "images",
    [
        [ImageSpec(view="LL"), ImageSpec(view="RL")],
        [ImageSpec(view="PA", view_source="none")],
        [ImageSpec(view="PA", body_part="HAND")],
    ],
    ids=["laterals-only", "view-unrecorded", "not-a-chest"],
)
def test_no_frontal_chest_image_is_a_skip(images: list[ImageSpec]) -> None:
    study = make_study(images=images)
    for ds in study:
        del ds.SeriesDescription  # nothing anywhere says which view it is
    choice = choose_views(study)
    assert choice.frontal is None
    assert choice.skip_reason == NO_FRONTAL == "no frontal chest image"


def test_a_chest_image_with_no_recorded_view_is_read_only_when_allowed_and_flagged() -> None:
    study = make_study(images=[ImageSpec(view="PA", view_source="none")])
    del study[0].SeriesDescription
    assert choose_views(study).frontal is None
    choice = choose_views(study, accept_unknown_view=True)
    assert (choice.frontal, choice.flags) == (0, ("view-unknown",))
    # a known lateral is never taken for a frontal, nor is an unknown view of another body part
    laterals = make_study(images=[ImageSpec(view="LL"), ImageSpec(view="PA", body_part="HAND", view_source="none")])
    for ds in laterals:
        del ds.SeriesDescription
    assert choose_views(laterals, accept_unknown_view=True).frontal is None


def test_larger_image_wins_among_equal_views() -> None:
    study = make_study(images=[ImageSpec(rows=128, columns=128), ImageSpec(rows=512, columns=416)])
    assert choose_views(study).frontal == 1
