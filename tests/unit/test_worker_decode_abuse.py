"""The worker's decode path under hostile stored films: a failed state with a reason, the process alive, memory and
time bounded.

Each film (radtrace.testing.decode_abuse, derived from tests/data/real-cxr) is decoded as the worker decodes it, in
a child process that measures its own peak RSS: a film must be read, skipped or fail with a RadtraceError whose
reason names what was wrong, never kill the process or raise anything else, and stay within

- memory: :data:`BYTES_PER_PIXEL` per pixel of the frame its header declares (capped at listener.max_image_pixels,
  the largest image the worker decodes) plus :data:`SLACK_BYTES`: a few kilobytes that expand to gigabytes break it;
- time: :data:`SECONDS` for a film of the CI sample (:data:`SLOW_SECONDS` for the 49-megapixel bomb).

CI runs the films but the 49-megapixel bomb, and :data:`EXAMPLES` header combinations; ``RADTRACE_FULL_DECODE=1``
runs every film, and ``RADTRACE_FUZZ_DECODE_EXAMPLES`` (default 600 with the switch) combinations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from radtrace.config_listener import ListenerSettings
from radtrace.testing.decode_abuse import DecodeChild, DecodeOutcome, HostileFilm, hostile_films

pytestmark = pytest.mark.unit

FULL = os.environ.get("RADTRACE_FULL_DECODE") == "1"
EXAMPLES = int(os.environ.get("RADTRACE_FUZZ_DECODE_EXAMPLES", "600" if FULL else "40"))
MAX_IMAGE_PIXELS = int(ListenerSettings.model_fields["max_image_pixels"].default)
#: The prepare chain holds the stored frame and at most two float64 images of it at once (measured in a fresh
#: process: 18 bytes a pixel on the 49-megapixel bomb, 25 on the RG1 film, 36 on the 1-megapixel 8-bit NIH film).
BYTES_PER_PIXEL = 32
SLACK_BYTES = 128 << 20
#: CharLS takes about 4 s of CPU to refuse the RG1 JPEG-LS film cut to 1% (15 s seen beside a loaded suite).
SECONDS = 60.0
SLOW_SECONDS = 180.0


def rss_bound(declared_pixels: int) -> int:
    """The most a decode may add to the worker's resident memory, for a frame of ``declared_pixels``."""
    return BYTES_PER_PIXEL * min(declared_pixels, MAX_IMAGE_PIXELS) + SLACK_BYTES


@pytest.fixture(scope="module")
def child() -> Iterator[DecodeChild]:
    with DecodeChild(timeout_s=SLOW_SECONDS) as decoder:
        yield decoder


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileFilm]:
    return {film.name: film for film in hostile_films(tmp_path_factory.mktemp("hostile-films"))}


def _declared_pixels(path: Path) -> int:
    from radtrace.errors import DicomInputError
    from radtrace.model.study import spooled_image

    try:
        ds = spooled_image(path, "").dataset  # the header only (pydicom would inflate a deflated film whole, here)
    except DicomInputError:  # a header refused (a sequence bomb): nothing is decoded, the bound is the slack
        return 1

    def count(keyword: str, default: int) -> int:
        try:
            return max(int(ds.get(keyword, default) or default), 1)
        except (TypeError, ValueError):
            return default

    return count("Rows", 1) * count("Columns", 1) * count("SamplesPerPixel", 1)


def _broken(film: HostileFilm, outcome: DecodeOutcome) -> list[str]:
    """What the outcome breaks of the invariants and of what this film must give."""
    problems = []
    if outcome.outcome in ("died", "unexpected", "timeout"):
        problems.append(f"{outcome.outcome}: {outcome.reason[-300:]}")
    elif outcome.outcome != film.expect:
        problems.append(f"{outcome.outcome} ({outcome.reason}), expected {film.expect}")
    elif film.expect == "failed" and film.reason not in outcome.reason:
        problems.append(f"reason {outcome.reason!r} does not name {film.reason!r}")
    bound = rss_bound(_declared_pixels(film.path))
    if outcome.peak_rss_growth > bound:
        problems.append(f"peak RSS grew {outcome.peak_rss_growth >> 20} MiB, bound {bound >> 20} MiB")
    if outcome.seconds > (SLOW_SECONDS if film.slow else SECONDS):
        problems.append(f"took {outcome.seconds:.1f} s")
    return problems


def test_each_hostile_film_fails_with_its_reason_or_is_read_within_memory_and_time(
    child: DecodeChild, films: dict[str, HostileFilm]
) -> None:
    broken: dict[str, list[str]] = {}
    figures = []
    for film in films.values():
        if film.slow and not FULL:
            continue
        outcome = child.decode(film.path)
        figures.append(f"{film.name}: {outcome.outcome} {outcome.seconds:.2f} s {outcome.peak_rss_growth >> 20} MiB")
        if problems := _broken(film, outcome):
            broken[film.name] = problems
    print("\n".join(figures))
    assert not broken, "\n".join(f"{name}: {'; '.join(problems)}" for name, problems in broken.items())


def test_a_codestream_whose_components_disagree_with_the_header_fails_and_the_worker_lives(
    child: DecodeChild, films: dict[str, HostileFilm]
) -> None:
    """GDCM, pydicom's first JPEG 2000 and JPEG-LS decoder, threw a C++ exception no one caught: std::terminate
    killed the worker (SIGABRT) on a 676 KB film whose SIZ declares 3 components under Samples per Pixel 1, which
    the listener accepts (its sizes agree); redelivered, the same film killed the next worker."""
    for name in ("j2k-3-components-1-sample", "j2k-3-components-monochrome", "jls-4-components-1-sample"):
        outcome = child.decode(films[name].path)
        assert outcome.outcome == "failed", (name, outcome)
        assert films[name].reason in outcome.reason


def test_a_film_is_prepared_holding_at_most_two_float_copies_of_it() -> None:
    """The prepare chain held the stored frame and up to four float64 copies at once (window, levels, 8-bit
    conversion, each out of place): 35.5 bytes a pixel on the RG1 film (128 MB for its 3.6 megapixels) and 1.65 GB
    for a 676 KB JPEG 2000 declaring 7000 x 7000, under listener.max_image_pixels. Now computed in place."""
    from radtrace.testing.decode_abuse import REAL_FILMS, RG1_J2K

    with DecodeChild() as fresh:  # nothing decoded before: the growth is this film's
        outcome = fresh.decode(REAL_FILMS / RG1_J2K)
    assert outcome.outcome == "read"
    assert outcome.peak_rss_growth <= 30 * 1955 * 1841, outcome.peak_rss_growth / (1955 * 1841)


# --- header combinations ------------------------------------------------------------------------------------------

_ATTRIBUTES: dict[str, list[Any]] = {
    "BitsAllocated": [None, 0, 1, 8, 12, 16, 32, 64],
    "BitsStored": [None, 0, 1, 7, 8, 9, 12, 16, 17, 32],
    "HighBit": [None, 0, 6, 7, 8, 15, 31, 40],
    "PixelRepresentation": [None, 0, 1, 2],
    "SamplesPerPixel": [None, 0, 1, 2, 3, 4],
    "PlanarConfiguration": [None, 0, 1, 2],
    "NumberOfFrames": [None, 0, 1, 2, 3, 1000],
    "PhotometricInterpretation": [
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "PALETTE COLOR",
        "",
    ],
    "RescaleSlope": ["1e308", "-1e308", "0", "1e-320", "NaN", "inf"],
    "RescaleIntercept": ["-1e308", "1e308", "NaN", "-inf"],
    "WindowCenter": ["1e308", "-1e308", "NaN", "inf", "0"],
    "WindowWidth": ["1e308", "1e-300", "0", "-1", "NaN", "inf"],
    "VOILUTFunction": ["SIGMOID", "LINEAR_EXACT", "CUBIC"],
    "Rows": [0, 1, 84, 338, 4096, 65535],
    "Columns": [0, 1, 105, 422, 4096, 65535],
}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The canine film (169 x 211, 8 bit) as stored, and re-encoded in JPEG 2000, JPEG-LS and RLE."""
    from pydicom import dcmread
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    from radtrace.testing.decode_abuse import REAL_FILMS

    directory = tmp_path_factory.mktemp("encoded")
    out = {}
    for name, syntax, plugin in (
        ("native", None, ""),
        ("j2k", JPEG2000Lossless, "pylibjpeg"),
        ("jls", JPEGLSLossless, "pyjpegls"),
        ("rle", RLELossless, "pydicom"),  # GDCM's RLE encoder aborts on this film's odd width
    ):
        ds = dcmread(REAL_FILMS / "canine-dx-thorax-lateral-mono1-small.dcm")
        if syntax is not None:
            ds.compress(syntax, encoding_plugin=plugin)
        out[name] = directory / f"{name}.dcm"
        ds.save_as(out[name], enforce_file_format=True)
    return out


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FULL,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(encoding="j2k", changes={"SamplesPerPixel": 3}, pixel_bytes=None)  # GDCM aborted the process
@example(encoding="jls", changes={"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"}, pixel_bytes=None)
@example(encoding="native", changes={"RescaleSlope": "1e308", "RescaleIntercept": "-1e308"}, pixel_bytes=None)
@given(
    encoding=st.sampled_from(["native", "j2k", "jls", "rle"]),
    changes=st.lists(st.sampled_from(sorted(_ATTRIBUTES)), min_size=1, max_size=3, unique=True).flatmap(
        lambda keywords: st.fixed_dictionaries({k: st.sampled_from(_ATTRIBUTES[k]) for k in keywords})
    ),
    pixel_bytes=st.sampled_from([None, None, None, 0, 1, 17_831, 35_659, 35_660, 71_320, 1 << 20]),
)
def test_any_header_combination_fails_with_a_reason_or_is_read_and_the_worker_lives(
    child: DecodeChild,
    encoded: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    encoding: str,
    changes: dict[str, Any],
    pixel_bytes: int | None,
) -> None:
    from radtrace.testing.decode_abuse import header_variant

    directory = tmp_path_factory.mktemp("variant")
    native_bytes = pixel_bytes if encoding == "native" else None
    path = header_variant(encoded[encoding], changes, directory / "variant.dcm", pixel_bytes=native_bytes)
    outcome = child.decode(path)
    film = HostileFilm("variant", path, outcome.outcome if outcome.outcome in ("read", "skipped") else "failed")
    assert not _broken(film, outcome), (encoding, changes, pixel_bytes, outcome)
