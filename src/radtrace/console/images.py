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
and its check refuses it as before). Bounded in bytes (``console.picture_cache_bytes``), least recently used first
out.

A study purged from the spool (the site's retention job deletes ``spool/<study>``; another process, which tells the
console nothing) is not kept either: a request that finds a file gone or changed drops every picture of the study
at once, and while the cache holds anything a checker thread looks at the files each picture was made from every
:data:`CHECK_EVERY_S` (a ``stat`` each, no hashing) and drops the pictures of any file gone or changed, so a purged
study's pixels leave each console process's memory within seconds, asked for again or not.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.config import Settings
from radtrace.console.worklist import reading_for_revision, recorded_inputs
from radtrace.dicom_listener.attributes import normalised
from radtrace.errors import DicomInputError
from radtrace.model.image import display_values
from radtrace.model.reader import StudyReader
from radtrace.model.study import Skipped, StudyImage, spooled_as_received
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Revision, Study

__all__ = ["CHECK_EVERY_S", "PICTURE_CACHE_BYTES", "PictureCache", "render_image"]

log = logging.getLogger(__name__)

#: The most bytes of PNGs a console process keeps by default (``console.picture_cache_bytes``; a prepared picture
#: is ~0.1-0.3 MB, an original 1-5 MB).
PICTURE_CACHE_BYTES: Final = 64 * 1024 * 1024

#: How often (seconds) the pictures kept are checked against their spooled files: a study purged meanwhile is
#: dropped within this long.
CHECK_EVERY_S: Final = 2.0

#: (study UID, revision, the SHA-256 of each spooled file the revision reads, in SOP order, kind)
_Key = tuple[str, int, tuple[str, ...], str]

#: A spooled file as a picture was made from it: its path and (device, inode, size, mtime in ns)
_Source = tuple[Path, tuple[int, int, int, int]]


def _fingerprint(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _unchanged(sources: tuple[_Source, ...]) -> bool:
    """Whether every file is still there, the same file (device, inode), size and modification time."""
    for path, fingerprint in sources:
        try:
            if _fingerprint(path.stat()) != fingerprint:
                return False
        except OSError:
            return False
    return True


class PictureCache:
    """The pictures made for the study page, per revision (see the module): at most ``max_bytes`` of PNGs, least
    recently used out first, none kept past its spooled files (purged, changed); safe to share between the
    threads serving requests."""

    #: how often a checker thread, running while anything is kept, looks at those files (None: only :meth:`sweep`
    #: and the requests do)
    check_every_s: float | None = CHECK_EVERY_S

    def __init__(self, max_bytes: int = PICTURE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[_Key, str], bytes] = OrderedDict()
        self._sources: dict[_Key, tuple[_Source, ...]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._checker: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def size_bytes(self) -> int:
        """The bytes of PNGs kept now."""
        return self._bytes

    def studies(self) -> set[str]:
        """The Study Instance UIDs some picture is kept for."""
        with self._lock:
            return {key[0] for key, _sop in self._entries}

    def get(self, key: _Key, sop_uid: str) -> bytes | None:
        with self._lock:
            found = self._entries.get((key, sop_uid))
            if found is not None:
                self._entries.move_to_end((key, sop_uid))
            return found

    def put(self, key: _Key, pictures: Mapping[str, bytes], sources: tuple[_Source, ...] = ()) -> None:
        """Keep ``pictures`` (SOP Instance UID: PNG) under ``key``, made from the spooled files ``sources`` (dropped
        once one is gone or changed); one larger than a quarter of the bound is not kept (it would push out most
        of the others)."""
        with self._lock:
            for sop_uid, data in pictures.items():
                if len(data) > self.max_bytes // 4 or (key, sop_uid) in self._entries:
                    continue
                self._entries[(key, sop_uid)] = data
                self._bytes += len(data)
                self._sources[key] = sources
            while self._bytes > self.max_bytes:
                (dropped_key, _sop), dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
                if not any(k == dropped_key for k, _s in self._entries):
                    self._sources.pop(dropped_key, None)
            self._start_checker()

    def forget(self, study_uid: str) -> int:
        """Drop every picture of ``study_uid`` (all revisions); returns the bytes freed."""
        with self._lock:
            return self._drop(lambda key: key[0] == study_uid)

    def sweep(self) -> int:
        """Drop the pictures whose spooled files are gone or changed since they were made (a ``stat`` of each, no
        hashing); returns the bytes freed."""
        with self._lock:
            kept = dict(self._sources)
        stale = {key for key, sources in kept.items() if not _unchanged(sources)}
        if not stale:
            return 0
        purged = {key[0] for key in stale}  # a study whose file is gone is dropped whole (all its revisions)
        with self._lock:
            return self._drop(lambda key: key[0] in purged)

    def close(self) -> None:
        """Stop the checker thread (the pictures kept stay until dropped)."""
        self._closed.set()
        checker = self._checker
        if checker is not None and checker is not threading.current_thread():
            checker.join(timeout=5)

    def _drop(self, which: Callable[[_Key], bool]) -> int:
        """Under the lock: drop the pictures whose key ``which`` says."""
        freed = 0
        for entry in [entry for entry in self._entries if which(entry[0])]:
            freed += len(self._entries.pop(entry))
        for key in [key for key in self._sources if which(key)]:
            del self._sources[key]
        self._bytes -= freed
        return freed

    def _start_checker(self) -> None:
        """Under the lock: start the checker when something is kept and none runs."""
        if self.check_every_s is None or self._checker is not None or not self._entries or self._closed.is_set():
            return
        self._checker = threading.Thread(target=self._check, name="console-picture-check", daemon=True)
        self._checker.start()

    def _check(self) -> None:
        """The checker: every ``check_every_s``, :meth:`sweep`; ends once nothing is kept (a later :meth:`put`
        starts it again) or on :meth:`close`."""
        while not self._closed.wait(self.check_every_s or CHECK_EVERY_S):
            try:
                freed = self.sweep()
            except Exception:  # never leave pictures held without a checker: log, go on
                log.exception("console: the picture cache could not be checked against the spool")
                continue
            if freed:
                log.info("console: %d bytes of pictures dropped: their spooled files are gone or changed", freed)
            with self._lock:
                if not self._entries:
                    self._checker = None
                    return
        with self._lock:
            self._checker = None


def _newest(store: Store, study_uid: str, revision: int) -> tuple[dict[str, tuple[str, str]], dict[str, str | None]]:
    """The images this revision's reading was made from (:func:`read_images`): their spool path and the SHA-256 the
    reading recorded; and the calling AE of each spooled file, where the site has
    ``listener.sender_character_sets`` (as the worker's pipeline reads them)."""
    with store.session("selecting a revision's images") as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_uid))
        if study_id is None:
            return {}, {}
        senders = {
            str(path): calling
            for path, calling in session.execute(
                sa.select(Instance.path, Instance.calling_ae).where(Instance.study_id == study_id)
            )
        }
        return read_images(session, study_id, study_uid, revision), senders


def read_images(session: Session, study_id: int, study_uid: str, revision: int) -> dict[str, tuple[str, str]]:
    """Exactly the images this revision's reading was made from (its ``inference_completed`` inputs), each as the
    version of the study's own instance whose bytes hashed to what the reading recorded: ``{SOP Instance UID:
    (path under the spool, SHA-256)}``, in SOP Instance UID order.

    Not the revision's instances as the console would choose among them again: a later revision leaves out an
    image the PACS moved to another study or rejected (:mod:`radtrace.worker.read_instances`), and the view choice
    made again over every instance could show that image where the model read another. Where no spooled version
    has the recorded SHA-256 any more, the newest is given with the recorded one (its check then refuses it):
    a picture is never made from bytes the model did not read."""
    recorded = recorded_inputs(reading_for_revision(session, study_uid, revision))
    if not recorded:
        return {}
    rows = session.execute(
        sa.select(Instance.sop_instance_uid, Instance.path, Instance.sha256)
        .join(Revision, Instance.revision_id == Revision.id)
        .where(
            Instance.study_id == study_id,
            Revision.number <= revision,
            Instance.sop_instance_uid.in_(list(recorded)),
        )
        .order_by(Instance.sop_instance_uid, Instance.version)
    ).all()
    newest: dict[str, str] = {}
    matched: dict[str, str] = {}
    for sop, path, digest in rows:
        newest[str(sop)] = str(path)
        if str(digest) == recorded[str(sop)]:
            matched[str(sop)] = str(path)
    return {sop: (matched.get(sop, path), recorded[sop]) for sop, path in sorted(newest.items())}


def _revision_images(
    settings: Settings, newest: Mapping[str, tuple[str, str]], senders: Mapping[str, str | None]
) -> dict[str, StudyImage]:
    """The instances the worker read for this revision, as headers whose pixel data is read (and its SHA-256
    checked) on use; their text read as the worker reads it, with the site's rule for the AE that sent each
    (``listener.sender_character_sets``)."""
    return {
        sop: spooled_as_received(settings.spool_dir / path, digest, settings.listener, senders.get(path))
        for sop, (path, digest) in newest.items()
    }


def _cache_key(settings: Settings, study_uid: str, revision: int, newest: Mapping[str, tuple[str, str]],
               kind: str) -> tuple[_Key, tuple[_Source, ...]] | None:  # fmt: skip
    """The cache key of a revision's pictures, and the files they are made from as hashed: None when a spooled file
    is gone, unreadable or no longer hashes to its recorded SHA-256 (then the picture is made, and refused, as
    without a cache)."""
    digests, sources = [], []
    for _sop, (path, recorded) in sorted(newest.items()):
        spooled = Path(settings.spool_dir / path)
        try:
            with spooled.open("rb") as file:
                stat = os.fstat(file.fileno())
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError:
            return None
        if digest != recorded:
            return None
        digests.append(digest)
        sources.append((spooled, _fingerprint(stat)))
    return (study_uid, revision, tuple(digests), kind), tuple(sources)


def render_image(store: Store, settings: Settings, study_uid: str, revision: int, sop_uid: str, kind: str,
                 cache: PictureCache | None = None) -> bytes:  # fmt: skip
    """A PNG of ``sop_uid`` as the model read it in this revision: ``prepared`` or ``original`` (see the module),
    from ``cache`` when it was made already from the same spooled files (and kept there once made). A study whose
    revision or spooled files are gone or changed has every picture dropped from ``cache`` first.

    Raises:
        DicomInputError: the image is no longer in the spool, no longer matches its recorded SHA-256, cannot be
            decoded, or is not one the worker's preparation reads.
        OSError: the spool cannot be read.
    """
    newest, senders = _newest(store, study_uid, revision)
    if sop_uid not in newest:
        if cache is not None:
            cache.forget(study_uid)
        raise DicomInputError("the image is no longer in the spool")
    keyed = _cache_key(settings, study_uid, revision, newest, kind) if cache is not None else None
    if cache is not None:
        if keyed is None:  # purged or changed: nothing of this study is served from, or kept in, the cache
            cache.forget(study_uid)
        elif (kept := cache.get(keyed[0], sop_uid)) is not None:
            return kept
    pictures = _make(settings, _revision_images(settings, newest, senders), sop_uid, kind)
    if keyed is not None and cache is not None:
        cache.put(keyed[0], pictures, keyed[1])
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
