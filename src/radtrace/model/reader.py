"""The model package's front door: settings in, a :class:`Reading` (or a skip) out for a study.

:class:`StudyReader` holds one profile and one backend for the life of a process (the worker's model is
loaded once). ``read`` takes a study's images; ``read_many`` reads several in batches of
``model.batch_size``. Skips (no frontal chest image) are outcomes, not errors.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from radtrace.config import ModelSettings, Settings
from radtrace.errors import ModelLoadError, RadtraceError
from radtrace.model.backends.base import Backend
from radtrace.model.image import MAX_SOURCE_PIXELS
from radtrace.model.profiles import Profile, get_profile
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage, StudyInput, prepare_study

__all__ = ["Budget", "StudyReader", "build_backend", "effective_budget"]


@dataclass(frozen=True)
class Budget:
    """The pixel and token budget a reading runs under."""

    min_pixels: int
    max_pixels: int
    max_new_tokens: int


def effective_budget(settings: ModelSettings, profile: Profile) -> Budget:
    """The profile's budget, with each value the settings set explicitly taking its place."""
    chosen = settings.model_fields_set
    return Budget(
        min_pixels=settings.min_pixels if "min_pixels" in chosen else profile.min_pixels,
        max_pixels=settings.max_pixels if "max_pixels" in chosen else profile.max_pixels,
        max_new_tokens=settings.max_new_tokens if "max_new_tokens" in chosen else profile.max_new_tokens,
    )


def build_backend(settings: ModelSettings, profile: Profile, *, hash_cache_file: Path | None = None) -> Backend:
    """The backend the settings select, ready to read (the transformers model is loaded here).

    Raises:
        ModelLoadError: weights or ONNX export missing, changed or unloadable.
    """
    budget = effective_budget(settings, profile)
    if settings.backend == "demo":
        from radtrace.model.backends.demo import DemoBackend

        return DemoBackend(enabled=settings.demo)
    if settings.backend == "transformers":
        from radtrace.model.backends.transformers import TransformersBackend, load_once

        source: Path | str = settings.path if settings.path is not None else settings.repo_id
        if settings.dtype == "float16":
            raise ModelLoadError("dtype float16 overflows in Qwen2.5-VL (it generates '!!!!'); use bfloat16 or auto")
        vlm = load_once(
            source,
            dtype=settings.dtype,
            device=settings.device,
            min_pixels=budget.min_pixels,
            max_pixels=budget.max_pixels,
            allow_download=settings.allow_download,
            revision=settings.revision if settings.path is None else None,
        )
        return TransformersBackend(
            vlm,
            source=str(source),
            max_new_tokens=budget.max_new_tokens,
            cache_implementation="static" if settings.kv_cache == "static" else None,
            revision=settings.revision,
            hash_cache_file=hash_cache_file,
        )
    if settings.backend == "vllm":
        from radtrace.model.backends.vllm import VllmBackend

        if settings.vllm_url is None:  # the settings validator requires it; settings built unvalidated may not
            raise ModelLoadError("backend 'vllm' needs model.vllm_url")
        key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key is not None else None
        return VllmBackend(
            settings.vllm_url,
            max_new_tokens=budget.max_new_tokens,
            min_pixels=budget.min_pixels,
            max_pixels=budget.max_pixels,
            model=settings.vllm_model,
            api_key=key,
            timeout_s=settings.request_timeout_s,
            revision=settings.revision,
            max_concurrency=settings.batch_size,
        )
    if settings.backend == "onnxruntime":
        from radtrace.model.backends.onnxruntime import OnnxRuntimeBackend, load_export

        if settings.path is None:  # the settings validator requires it; settings built unvalidated may not
            raise ModelLoadError(
                "backend 'onnxruntime' needs model.path: the directory of 'radtrace model export-onnx'"
            )
        export = load_export(
            settings.path,
            threads=settings.onnx_threads,
            min_pixels=budget.min_pixels,
            max_pixels=budget.max_pixels,
        )
        return OnnxRuntimeBackend(export, max_new_tokens=budget.max_new_tokens, revision=settings.revision)
    raise ModelLoadError(f"unknown model backend {settings.backend!r}")


class StudyReader:
    """One profile and one backend, reading studies."""

    def __init__(
        self,
        settings: ModelSettings,
        *,
        backend: Backend | None = None,
        data_dir: Path | None = None,
        max_source_pixels: int = MAX_SOURCE_PIXELS,
        chest_body_parts: Sequence[str] = (),
    ):
        self.settings = settings
        self.profile = get_profile(settings.profile)
        self.budget = effective_budget(settings, self.profile)
        cache = data_dir / "cache" / "weights-sha256.json" if data_dir is not None else None
        self._backend = backend
        self._hash_cache_file = cache
        self._executor: ThreadPoolExecutor | None = None
        self.max_source_pixels = max_source_pixels  # listener.max_image_pixels: no larger image is decoded
        # listener.routing.chest_body_parts: a body part routing sent to the model is one the views accept
        self.chest_body_parts = tuple(chest_body_parts)

    @classmethod
    def for_service(cls, settings: Settings, *, backend: Backend | None = None) -> StudyReader:
        """The reader of a GPU worker and of ``radtrace model read``: the model settings, and the listener's image
        size limit and chest words, so that an image the listener accepts and routes is one that is read."""
        return cls(
            settings.model,
            backend=backend,
            data_dir=settings.data_dir,
            max_source_pixels=settings.listener.max_image_pixels,
            chest_body_parts=settings.listener.routing.chest_body_parts,
        )

    @property
    def backend(self) -> Backend:
        """The backend, built (and the model loaded) on first use."""
        if self._backend is None:
            self._backend = build_backend(self.settings, self.profile, hash_cache_file=self._hash_cache_file)
        return self._backend

    def close(self) -> None:
        """Release the backend's connections, if it was built."""
        if self._backend is not None:
            self._backend.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def prepare(self, images: Sequence[StudyImage]) -> StudyInput | Skipped:
        """Choose and prepare a study's pictures under this reader's budget."""
        return prepare_study(
            images,
            min_pixels=self.budget.min_pixels,
            max_pixels=self.budget.max_pixels,
            want_lateral=self.profile.takes_lateral,
            accept_unknown_view=self.settings.accept_unknown_view,
            max_source_pixels=self.max_source_pixels,
            chest_body_parts=self.chest_body_parts,
        )

    def read(self, images: Sequence[StudyImage]) -> Reading | Skipped:
        """Read one study.

        Raises:
            DicomInputError: the frontal image cannot be decoded.
            ModelError, PeerUnavailableError: transient inference failures.
            ModelLoadError, ModelRequestError: permanent ones.
        """
        return self.read_many([images])[0]

    def read_many(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped]:
        """Read several studies, ``batch_size`` per generate call; outcomes in order.

        Pictures are prepared on a thread pool (decoding and resizing release the GIL), so the next batch is
        prepared while the model generates the current one.

        Raises:
            DicomInputError: a study's frontal image cannot be decoded (raised once the others are read;
                :meth:`read_prepared` keeps every study's outcome instead).
        """
        outcomes = self.read_each(studies)
        for outcome in outcomes:
            if isinstance(outcome, RadtraceError):
                raise outcome
        return [outcome for outcome in outcomes if not isinstance(outcome, RadtraceError)]

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        """Read several studies, ``batch_size`` per generate call, each study's outcome or error in order.

        A study that cannot be prepared (undecodable pixels) yields its error and the others are read; an error
        of a generate call (out of memory, a server away) is raised for the caller to decide.
        """
        return self.read_prepared(self.prepare_each(studies))

    def prepare_each(self, studies: Sequence[Sequence[StudyImage]]) -> Iterator[StudyInput | Skipped | RadtraceError]:
        """Prepare each study on the thread pool, in order; a study that cannot be prepared yields its error."""
        if len(studies) == 1:  # no thread hop for the common single study
            yield _outcome(self.prepare, studies[0])
            return
        pool = self._pool()
        # each on a copy of the caller's context: the study values radtrace.logging.redacting registered
        futures = [pool.submit(contextvars.copy_context().run, _outcome, self.prepare, images) for images in studies]
        for future in futures:
            yield future.result()

    def read_prepared(
        self, prepared: Iterable[StudyInput | Skipped | RadtraceError]
    ) -> list[Reading | Skipped | RadtraceError]:
        """Generate for the prepared studies, ``batch_size`` per call; skips and errors pass through in order.

        ``prepared`` may be a lazy iterator (:meth:`prepare_each`): a batch is generated as soon as it is full,
        while the pool prepares the next.
        """
        outcomes: dict[int, Reading | Skipped | RadtraceError] = {}
        batch: list[tuple[int, StudyInput]] = []
        count = 0

        def generate() -> None:
            readings = self.backend.read_batch([item for _, item in batch], self.profile)
            for (index, _), reading in zip(batch, readings, strict=True):
                outcomes[index] = reading
            batch.clear()

        for index, item in enumerate(prepared):
            count += 1
            if isinstance(item, StudyInput):
                batch.append((index, item))
                if len(batch) >= self.settings.batch_size:
                    generate()
            else:
                outcomes[index] = item
        if batch:
            generate()
        return [outcomes[index] for index in range(count)]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            workers = max(1, min(self.settings.batch_size, os.cpu_count() or 1, 16))
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="radtrace-prepare")
        return self._executor


def _outcome(
    prepare: Callable[[Sequence[StudyImage]], StudyInput | Skipped], images: Sequence[StudyImage]
) -> StudyInput | Skipped | RadtraceError:
    try:
        return prepare(images)
    except RadtraceError as exc:
        return exc
