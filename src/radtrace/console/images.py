"""The study page's pictures of an image the model read, made by the worker's own code.

``prepared`` is the picture the model was given: the revision's spooled instances go through
:meth:`radtrace.model.reader.StudyReader.prepare` (:func:`radtrace.model.study.prepare_study`) exactly as a GPU
worker's reader takes them (:meth:`StudyReader.for_service`: the profile's pixel budget, the listener's image size
limit, the same view choice and the header normalised by :func:`radtrace.dicom_listener.attributes.normalised`).
Rendering the file separately (its own read, the header as received, the model settings' budget) gave another
picture, or none, for a film whose header the worker had to normalise (a malformed window dropped).

``original`` is the same image at full resolution: the display values of the normalised header, 8-bit.

Making them decodes the spooled files and (``prepared``) prepares the whole study again: ~0.25 s for a small
synthetic study and 1 to 2 s for a real JPEG-LS film on a loaded 2-core machine (bench/console_pages.py), for
every picture asked for (each image, each switch between the two, each reload). A :class:`PictureCache` keeps
the PNGs made, per study revision and image, keyed by the SHA-256 of each spooled file the revision reads, as
hashed again on every request: a file changed or gone since is never answered from the cache (it is made again,
and its check refuses it as before). Bounded in bytes, least recently used first out.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

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

__all__ = ["PICTURE_CACHE_BYTES", "PictureCache", "render_image"]

#: The most bytes of PNGs a console process keeps (a prepared picture is ~0.1-0.3 MB, an original 1-5 MB).
PICTURE_CACHE_BYTES: Final = 64 * 1024 * 1024

#: (study UID, revision, the SHA-256 of each spooled file the revision reads, in SOP order, kind)
_Key = tuple[str, int, tuple[str, ...], str]


class PictureCache:
    """The pictures made for the study page, per revision (see the module): at most ``max_bytes`` of PNGs, least
    recently used out first; safe to share between the threads serving requests."""

    def __init__(self, max_bytes: int = PICTURE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[_Key, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """The bytes of PNGs kept now."""
        return self._bytes

    def get(self, key: _Key, sop_uid: str) -> bytes | None:
        with self._lock:
            found = self._entries.get((key, sop_uid))
            if found is not None:
                self._entries.move_to_end((key, sop_uid))
            return found

    def put(self, key: _Key, pictures: Mapping[str, bytes]) -> None:
        """Keep ``pictures`` (SOP Instance UID: PNG) under ``key``; one larger than a quarter of the bound is not
        kept (it would push out most of the others)."""
        with self._lock:
            for sop_uid, data in pictures.items():
                if len(data) > self.max_bytes // 4 or (key, sop_uid) in self._entries:
                    continue
                self._entries[(key, sop_uid)] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _key, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


def _newest(store: Store, study_uid: str, revision: int) -> dict[str, tuple[str, str]]:
    """Of every revision up to this one, the newest version of each SOP instance (as the worker selects them):
    its spool path and recorded SHA-256."""
    with store.session("selecting a revision's images") as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_uid))
        return revision_instances(session, study_id, revision) if study_id is not None else {}


def _revision_images(settings: Settings, newest: Mapping[str, tuple[str, str]]) -> dict[str, StudyImage]:
    """The instances the worker read for this revision, as headers whose pixel data is read (and its SHA-256
    checked) on use."""
    return {
        sop: spooled_as_received(settings.spool_dir / path, digest, settings.listener)
        for sop, (path, digest) in newest.items()
    }


def _cache_key(settings: Settings, study_uid: str, revision: int, newest: Mapping[str, tuple[str, str]],
               kind: str) -> _Key | None:  # fmt: skip
    """The cache key of a revision's pictures: None when a spooled file is gone, unreadable or no longer hashes to
    its recorded SHA-256 (then the picture is made, and refused, as without a cache)."""
    digests = []
    for _sop, (path, recorded) in sorted(newest.items()):
        try:
            with Path(settings.spool_dir / path).open("rb") as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError:
            return None
        if digest != recorded:
            return None
        digests.append(digest)
    return (study_uid, revision, tuple(digests), kind)


def render_image(store: Store, settings: Settings, study_uid: str, revision: int, sop_uid: str, kind: str,
                 cache: PictureCache | None = None) -> bytes:  # fmt: skip
    """A PNG of ``sop_uid`` as the model read it in this revision: ``prepared`` or ``original`` (see the module),
    from ``cache`` when it was made already from the same spooled files (and kept there once made).

    Raises:
        DicomInputError: the image is no longer in the spool, no longer matches its recorded SHA-256, cannot be
            decoded, or is not one the worker's preparation reads.
        OSError: the spool cannot be read.
    """
    newest = _newest(store, study_uid, revision)
    if sop_uid not in newest:
        raise DicomInputError("the image is no longer in the spool")
    key = _cache_key(settings, study_uid, revision, newest, kind) if cache is not None else None
    if key is not None and cache is not None and (kept := cache.get(key, sop_uid)) is not None:
        return kept
    pictures = _make(settings, _revision_images(settings, newest), sop_uid, kind)
    if key is not None and cache is not None:
        cache.put(key, pictures)
    if sop_uid not in pictures:
        raise DicomInputError("the worker's preparation does not read this image")
    return pictures[sop_uid]


def _make(settings: Settings, images: Mapping[str, StudyImage], sop_uid: str, kind: str) -> dict[str, bytes]:
    """The PNGs one making gives: ``original``, the one of ``sop_uid``; ``prepared``, each image the worker's
    preparation reads (the whole study is prepared for any of them)."""
    if kind == "original":
        image = images[sop_uid]
        dataset, _done = normalised((image.whole() if image.whole is not None else image).dataset, "model")
        values, _steps = display_values(dataset, max_source_pixels=settings.listener.max_image_pixels)
        return {sop_uid: _png(np.rint(values * 255.0).astype(np.uint8))}
    prepared = StudyReader.for_service(settings).prepare(list(images.values()))
    if isinstance(prepared, Skipped):
        raise DicomInputError(f"the worker's preparation no longer reads this study: {prepared.reason}")
    return {
        source.sop_instance_uid: _png(picture.pixels)
        for source, picture in zip(prepared.sources, prepared.pictures, strict=True)
    }


def _png(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
