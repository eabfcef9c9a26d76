"""The study page's pictures of an image the model read, made by the worker's own code.

``prepared`` is the picture the model was given: the revision's spooled instances go through
:meth:`radtrace.model.reader.StudyReader.prepare` (:func:`radtrace.model.study.prepare_study`) exactly as a GPU
worker's reader takes them (:meth:`StudyReader.for_service`: the profile's pixel budget, the listener's image size
limit, the same view choice and the header normalised by :func:`radtrace.dicom_listener.attributes.normalised`).
Rendering the file separately (its own read, the header as received, the model settings' budget) gave another
picture, or none, for a film whose header the worker had to normalise (a malformed window dropped).

``original`` is the same image at full resolution: the display values of the normalised header, 8-bit.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.dicom_listener.attributes import normalised
from radtrace.errors import DicomInputError
from radtrace.model.image import display_values
from radtrace.model.reader import StudyReader
from radtrace.model.study import Skipped, StudyImage, spooled_as_received
from radtrace.store.engine import Store
from radtrace.store.instances import revision_instances
from radtrace.store.models import Study

__all__ = ["render_image"]


def _revision_images(store: Store, settings: Settings, study_uid: str, revision: int) -> dict[str, StudyImage]:
    """The instances the worker read for this revision: of every revision up to it, the newest version of each SOP
    instance (as the worker selects them), as headers whose pixel data is read (and its SHA-256 checked) on use."""
    with store.session("selecting a revision's images") as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_uid))
        newest = revision_instances(session, study_id, revision) if study_id is not None else {}
    return {
        sop: spooled_as_received(settings.spool_dir / path, digest, settings.listener)
        for sop, (path, digest) in newest.items()
    }


def render_image(store: Store, settings: Settings, study_uid: str, revision: int, sop_uid: str, kind: str) -> bytes:
    """A PNG of ``sop_uid`` as the model read it in this revision: ``prepared`` or ``original`` (see the module).

    Raises:
        DicomInputError: the image is no longer in the spool, no longer matches its recorded SHA-256, cannot be
            decoded, or is not one the worker's preparation reads.
        OSError: the spool cannot be read.
    """
    images = _revision_images(store, settings, study_uid, revision)
    if sop_uid not in images:
        raise DicomInputError("the image is no longer in the spool")
    if kind == "original":
        image = images[sop_uid]
        dataset, _done = normalised((image.whole() if image.whole is not None else image).dataset, "model")
        values, _steps = display_values(dataset, max_source_pixels=settings.listener.max_image_pixels)
        return _png(np.rint(values * 255.0).astype(np.uint8))
    prepared = StudyReader.for_service(settings).prepare(list(images.values()))
    if isinstance(prepared, Skipped):
        raise DicomInputError(f"the worker's preparation no longer reads this study: {prepared.reason}")
    for source, picture in zip(prepared.sources, prepared.pictures, strict=True):
        if source.sop_instance_uid == sop_uid:
            return _png(picture.pixels)
    raise DicomInputError("the worker's preparation does not read this image")


def _png(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
