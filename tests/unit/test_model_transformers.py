"""The transformers backend end to end with the tiny model, through the real loading path, offline.

Every factory variant (each transfer syntax, photometric interpretation, bit depth, VOI kind and view) goes
from Part 10 bytes through view choice, preparation, the processor and ``generate`` to a parsed ``Reading``,
singly and in left-padded batches. The tiny model's output is noise, so its readings are flagged, never raised.
"""

from __future__ import annotations

import copy
import hashlib
import os
from io import BytesIO
from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.errors import DicomInputError, ModelLoadError
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading, ReadingFlag
from radtrace.model.study import Skipped, StudyImage, StudyInput, study_image
from radtrace.model.views import NO_FRONTAL
from radtrace.testing.studies import VALID_VARIANTS, ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.unit

MAX_NEW_TOKENS = 6


def part10(spec: ImageSpec, seed: int = 0) -> StudyImage:
    buffer = BytesIO()
    make_image(StudySpec(seed=seed), spec).save_as(buffer, enforce_file_format=True)
    return study_image(buffer.getvalue())


@pytest.fixture(scope="module")
def reader(tiny_model_dir: Path) -> StudyReader:
    """A reader whose backend loaded the tiny model offline, from its directory, as the worker would."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        settings = load_settings(model={"path": tiny_model_dir, "device": "cpu", "max_new_tokens": MAX_NEW_TOKENS})
        reader = StudyReader(settings.model)
        assert reader.backend.name == "transformers"  # loads the model now, offline
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    return reader


def check_reading(reading: Reading, image: StudyImage) -> None:
    assert reading.raw_text is not None
    # random weights: never a well-formed answer, always flagged; never an exception
    assert reading.flags & {ReadingFlag.UNPARSED, ReadingFlag.TRUNCATED}
    assert 0 < reading.tokens.image <= (476 // 28) ** 2
    assert reading.tokens.prompt > reading.tokens.image
    assert 1 <= reading.tokens.generated <= MAX_NEW_TOKENS
    source = reading.images[0]
    assert source.sha256 == image.sha256
    assert source.sop_instance_uid == image.dataset.SOPInstanceUID
    assert source.model_rows * source.model_columns <= 476 * 476
    steps = [step["step"] for step in source.preparation]
    # A lossy or annotated image (the factory's JPEG baseline variants) is marked by a "source" step after "decode".
    assert [step for step in steps if step != "source"][:4] == ["decode", "modality_lut", "voi", "inversion"]
    assert "source" not in steps or steps.index("source") == 1
    assert Reading.from_json(reading.to_json()) == reading


def test_single_reading_has_identity_with_the_weights_hash(reader: StudyReader, tiny_model_dir: Path) -> None:
    image = part10(VALID_VARIANTS["dx-pa"])
    reading = reader.read([image])
    assert isinstance(reading, Reading)
    check_reading(reading, image)
    identity = reading.identity
    expected = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert identity.weights_sha256 == expected
    assert identity.backend == "transformers"
    assert identity.profile == "nv-reason-cxr"
    assert identity.prompt == "Find abnormalities and support devices."
    assert "not for clinical use" in identity.model_name
    assert (identity.device, identity.dtype) == ("cpu", "float32")
    assert identity.generation["max_new_tokens"] == MAX_NEW_TOKENS
    assert identity.generation["do_sample"] is False


def test_every_factory_variant_single_and_batched(reader: StudyReader) -> None:
    images = {name: part10(spec, seed=i) for i, (name, spec) in enumerate(sorted(VALID_VARIANTS.items()))}
    # lateral-only studies are skipped as the service would; their pixels still go through the model below
    inputs: dict[str, StudyInput] = {}
    for name, image in images.items():
        prepared = reader.prepare([image])
        if VALID_VARIANTS[name].view in ("LL", "RL"):
            assert prepared == Skipped(NO_FRONTAL), name
            prepared = _as_frontal(reader, image)
        assert isinstance(prepared, StudyInput), name
        inputs[name] = prepared

    names = sorted(inputs)
    batched = reader.backend.read_batch([inputs[name] for name in names], reader.profile)
    assert len(batched) == len(names)
    for name, reading in zip(names, batched, strict=True):
        check_reading(reading, images[name])

    # left padding: a study read alone gives the same text as in a batch with studies of other sizes
    small = part10(ImageSpec(rows=128, columns=128))
    tall = part10(ImageSpec(rows=700, columns=300))
    pair = [reader.prepare([small]), reader.prepare([tall])]
    assert all(isinstance(item, StudyInput) for item in pair)
    together = reader.backend.read_batch(pair, reader.profile)  # type: ignore[arg-type]
    alone = [reader.backend.read(item, reader.profile) for item in pair]  # type: ignore[arg-type]
    assert together[0].tokens.image != together[1].tokens.image  # the prompts really differ in length
    assert [r.raw_text for r in together] == [r.raw_text for r in alone]
    assert [r.tokens for r in together] == [r.tokens for r in alone]


def test_read_many_keeps_order_and_skips(reader: StudyReader) -> None:
    pa, lateral = part10(VALID_VARIANTS["dx-pa"]), part10(VALID_VARIANTS["dx-ll"])
    outcomes = reader.read_many([[pa], [lateral], [lateral, pa]])
    assert isinstance(outcomes[0], Reading)
    assert outcomes[1] == Skipped("no frontal chest image")
    assert isinstance(outcomes[2], Reading)
    assert outcomes[2].images[0].sop_instance_uid == pa.dataset.SOPInstanceUID


def test_ap_study_is_read_and_its_view_flagged(reader: StudyReader) -> None:
    reading = reader.read([part10(VALID_VARIANTS["dx-ap"])])
    assert isinstance(reading, Reading)
    assert reading.images[0].view == "AP"
    assert "ap" in reading.images[0].view_flags


def test_missing_weights_are_a_load_error(tmp_path: Path) -> None:
    settings = load_settings(model={"path": tmp_path / "nowhere", "device": "cpu"})
    with pytest.raises(ModelLoadError, match="does not exist"):
        StudyReader(settings.model).read([part10(VALID_VARIANTS["dx-pa"])])
    offline = load_settings(model={"repo_id": "nvidia/NV-Reason-CXR-3B", "device": "cpu"})
    with pytest.raises(ModelLoadError, match="not available locally"):
        StudyReader(offline.model).read([part10(VALID_VARIANTS["dx-pa"])])


def _as_frontal(reader: StudyReader, image: StudyImage) -> StudyInput:
    """Prepare a lateral as if it were the study's frontal image (to push its pixels through the model)."""
    image.dataset.ViewPosition = "PA"
    if "ViewCodeSequence" in image.dataset:
        del image.dataset.ViewCodeSequence
    prepared = reader.prepare([image])
    assert isinstance(prepared, StudyInput)
    return prepared


def test_each_transfer_syntax_and_photometric_interpretation_reads_alone(reader: StudyReader) -> None:
    names = [name for name in sorted(VALID_VARIANTS) if name.startswith("dx-pa-") or "monochrome1" in name]
    names = [name for name in names if VALID_VARIANTS[name].view == "PA"]
    assert len(names) >= 10
    for name in names:
        image = part10(VALID_VARIANTS[name])
        reading = reader.read([image])
        assert isinstance(reading, Reading), name
        check_reading(reading, image)


def test_a_profile_that_takes_a_lateral_gets_it_as_the_second_image(reader: StudyReader) -> None:
    from radtrace.model.profiles.nv_reason_cxr import NvReasonCxr
    from radtrace.model.study import prepare_study

    class WithLateral(NvReasonCxr):
        name = "nv-reason-cxr-with-lateral"
        takes_lateral = True

    lateral, frontal = part10(VALID_VARIANTS["dx-ll"]), part10(VALID_VARIANTS["dx-pa"])
    study = prepare_study([lateral, frontal], min_pixels=128 * 128, max_pixels=476 * 476, want_lateral=True)
    assert isinstance(study, StudyInput)
    reading = reader.backend.read(study, WithLateral())
    assert [(image.role, image.view) for image in reading.images] == [("frontal", "PA"), ("lateral", "LL")]
    assert reading.tokens.image == sum((i.model_rows // 28) * (i.model_columns // 28) for i in reading.images)


def test_real_films_from_disk(reader: StudyReader) -> None:
    from radtrace.model.study import load_study_images

    real = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
    fuji = load_study_images(real / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm")  # no preamble, no File Meta
    reading = reader.read(fuji)
    assert isinstance(reading, Reading)
    assert reading.images[0].view == "PA"
    assert (reading.images[0].model_rows, reading.images[0].model_columns) == (448, 448)
    assert reading.images[0].preparation[3]["applied"] is True  # MONOCHROME1 inverted
    # the NIH film records no view anywhere (only "Cardiomegaly" as its study description): read, and flagged
    nih = load_study_images(real / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm")
    nih_reading = reader.read(nih)
    assert isinstance(nih_reading, Reading)
    assert nih_reading.images[0].view is None
    assert "view-unknown" in nih_reading.images[0].view_flags
    # a site that wants only films with a recorded frontal view turns that off
    strict = StudyReader(reader.settings.model_copy(update={"accept_unknown_view": False}), backend=reader.backend)
    assert strict.read(nih) == Skipped(NO_FRONTAL)


def test_batch_of_eight_reads_exactly_as_eight_single_reads(tiny_model_dir: Path) -> None:
    """Greedy output at batch 8 equals batch 1 in float32 on the CPU, for studies of eight different sizes
    (left padding of prompts with different image token counts); each reading records its batch size."""
    studies = [[part10(ImageSpec(rows=200 + 90 * i, columns=640 - 40 * i), seed=i)] for i in range(8)]
    outcomes = {}
    for batch in (1, 8):
        settings = load_settings(
            model={"path": tiny_model_dir, "device": "cpu", "dtype": "float32", "max_new_tokens": 12,
                   "batch_size": batch}
        )  # fmt: skip
        reader = StudyReader(settings.model)
        outcomes[batch] = reader.read_many(studies)
        reader.close()
    single, batched = outcomes[1], outcomes[8]
    assert all(isinstance(r, Reading) for r in single + batched)
    assert len({r.tokens.image for r in single}) > 1  # the prompts really differ in length
    assert [r.raw_text for r in batched] == [r.raw_text for r in single]  # type: ignore[union-attr]
    assert [r.tokens for r in batched] == [r.tokens for r in single]  # type: ignore[union-attr]
    assert {r.timings.batch_size for r in single} == {1}  # type: ignore[union-attr]
    assert {r.timings.batch_size for r in batched} == {8}  # type: ignore[union-attr]
    assert all(r.identity.dtype == "float32" and r.identity.backend == "transformers" for r in batched)  # type: ignore[union-attr]


def test_read_many_keeps_a_bad_study_to_itself(reader: StudyReader) -> None:
    """One undecodable study among good ones: read_prepared keeps every other study's reading."""
    good = part10(VALID_VARIANTS["dx-pa"])
    broken = study_image(_truncated_pixels(good))
    outcomes = reader.read_prepared(reader.prepare_each([[good], [broken], [good]]))
    assert isinstance(outcomes[0], Reading)
    assert isinstance(outcomes[1], DicomInputError)
    assert isinstance(outcomes[2], Reading)
    with pytest.raises(DicomInputError):
        reader.read_many([[good], [broken]])


def _truncated_pixels(image: StudyImage) -> bytes:
    dataset = copy.deepcopy(image.dataset)  # a shallow copy shares its elements with the original
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 3]
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_static_kv_cache_reads_as_the_dynamic_one(tiny_model_dir: Path, reader: StudyReader) -> None:
    """model.kv_cache = static reaches generate (recorded in the identity) and changes no greedy token."""
    settings = load_settings(
        model={"path": tiny_model_dir, "device": "cpu", "max_new_tokens": MAX_NEW_TOKENS, "kv_cache": "static"}
    )
    static = StudyReader(settings.model)
    image = part10(VALID_VARIANTS["dx-pa"])
    with_static, with_dynamic = static.read([image]), reader.read([image])
    assert isinstance(with_static, Reading)
    assert isinstance(with_dynamic, Reading)
    assert with_static.identity.generation["cache_implementation"] == "static"
    assert "cache_implementation" not in with_dynamic.identity.generation
    assert with_static.raw_text == with_dynamic.raw_text
    assert with_static.tokens == with_dynamic.tokens


def test_the_worker_decodes_no_image_over_the_listeners_pixel_budget(tiny_model_dir: Path) -> None:
    """``listener.max_image_pixels`` reaches the worker's decoder: an image over it fails before decoding."""
    settings = load_settings(model={"path": tiny_model_dir, "device": "cpu"}, listener={"max_image_pixels": 100_000})
    small = StudyReader(settings.model, max_source_pixels=settings.listener.max_image_pixels)
    with pytest.raises(DicomInputError, match=r"exceeds listener\.max_image_pixels \(100000\)"):
        small.prepare([part10(ImageSpec(rows=512, columns=512))])
    assert isinstance(small.prepare([part10(ImageSpec(rows=256, columns=256))]), StudyInput)


def test_on_cuda_the_backend_takes_cudnn_out_of_sdpa_and_records_it(reader: StudyReader) -> None:
    """cuDNN plans every new attention shape (a decoding step is one): the backend turns it off on CUDA, process-
    wide, records that in the identity, and a benchmark can turn it back on. Nothing changes on the CPU."""
    import dataclasses

    import torch

    from radtrace.model.backends.transformers import TransformersBackend

    loaded = reader.backend
    assert isinstance(loaded, TransformersBackend)
    assert "cudnn_attention" not in loaded.identity(reader.profile).generation
    on_cuda = dataclasses.replace(loaded.vlm, device="cuda:0")  # only the device name is read here
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        backend = TransformersBackend(on_cuda, source="tiny", max_new_tokens=4)
        backend._weights_sha256 = "0" * 64  # no hashing of weights in this test
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert backend.identity(reader.profile).generation["cudnn_attention"] is False
        TransformersBackend(on_cuda, source="tiny", max_new_tokens=4, cudnn_attention=True)
        assert torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
