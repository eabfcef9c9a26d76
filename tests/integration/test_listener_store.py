"""The listener against dcmtk's storescu/echoscu: what is acknowledged is on disk, in the database, audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from listener_support import audit_types, dataset_bytes, listener_settings, rows, running
from radtrace.config import Settings
from radtrace.dicom_listener.dcmtk import STORESCU_PROPOSE, echoscu, storescu
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, Revision, RevisionState, Study
from radtrace.testing.studies import VALID_VARIANTS, ImageSpec, StudySpec, make_image, make_study, write_study

pytestmark = pytest.mark.integration


def test_a_study_sent_with_storescu_is_spooled_recorded_and_audited(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    files = write_study(make_study(StudySpec(study_uid="1.2.826.0.1.3680043.8.498.1")), tmp_path / "in")
    with running(settings, store) as listener:
        assert echoscu(listener_port).returncode == 0
        sent = storescu(files, listener_port)
    assert sent.returncode == 0, sent.stderr
    metric = listener.metrics.registry.get_sample_value
    door = {"port": str(listener_port), "tls": "false"}  # every series names the listener port
    assert metric("radtrace_listener_instances_total", {"outcome": "received", **door}) == len(files)
    assert metric("radtrace_listener_statuses_total", {"status": "0x0000", **door}) == len(files)
    assert metric("radtrace_listener_associations_total", {"result": "accepted", **door}) == 2
    assert metric("radtrace_listener_received_bytes_total", door) == sum(i.size_bytes for i in rows(store, Instance))
    assert metric("radtrace_listener_echoes_total", door) == 1
    instances = rows(store, Instance)
    assert len(instances) == len(files)
    by_sop = {i.sop_instance_uid: i for i in instances}
    for source in files:
        stored = by_sop[dcmread(source, stop_before_pixels=True).SOPInstanceUID]
        spooled = settings.spool_dir / stored.path
        assert spooled.parent.name == "1.2.826.0.1.3680043.8.498.1"
        assert dataset_bytes(spooled) == dataset_bytes(source)  # stored as received
        assert stored.size_bytes == spooled.stat().st_size
        assert (stored.modality, stored.body_part, stored.calling_ae) == ("DX", "CHEST", "PACS")
        header = dcmread(source, stop_before_pixels=True)  # the input mix QA watches, as sent
        assert (stored.manufacturer, stored.manufacturer_model, stored.photometric) == (
            header.Manufacturer, header.ManufacturerModelName, header.PhotometricInterpretation,
        )  # fmt: skip
        assert stored.pixel_spacing_mm == pytest.approx(float(header.ImagerPixelSpacing[0]), abs=1e-4)
    assert not list((settings.spool_dir / ".incoming").iterdir())
    [study] = rows(store, Study)
    assert study.study_description == "XR CHEST PA AND LATERAL"
    [revision] = rows(store, Revision)
    assert revision.state is RevisionState.RECEIVING  # settle_seconds (10 s) has not passed
    assert audit_types(store).count("instance_received") == len(files)


def _encode_elsewhere(syntax: str, directory: Path) -> Path:
    """Deflate and JPEG baseline/extended, which the factory does not write: built here from a DX image."""
    import io

    import numpy as np
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = make_image(StudySpec(), ImageSpec())
    pixels = (ds.pixel_array >> 4).astype(np.uint8)
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax != DeflatedExplicitVRLittleEndian:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "encoded.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", sorted(STORESCU_PROPOSE))
def test_every_transfer_syntax_is_accepted_and_kept_bit_for_bit(
    tmp_path: Path, settings: Settings, listener_port: int, syntax: str
) -> None:
    variants = [spec for spec in VALID_VARIANTS.values() if spec.transfer_syntax == syntax]
    if variants:
        source = write_study(make_study(StudySpec(), variants[:1]), tmp_path / "in")[0]
    else:
        source = _encode_elsewhere(syntax, tmp_path / "in")
    store = Store.from_url(settings.store_url)
    upgrade(store)
    listener = listener_settings(tmp_path, listener_port)
    with running(listener, store):
        sent = storescu([source], listener_port, options=[STORESCU_PROPOSE[syntax]])
    assert sent.returncode == 0, sent.stderr
    [instance] = rows(store, Instance)
    assert instance.transfer_syntax_uid == syntax
    assert dataset_bytes(listener.spool_dir / instance.path) == dataset_bytes(source)
    store.dispose()
