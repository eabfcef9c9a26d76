"""Load a Qwen2.5-VL-class vision-language model and its processor from local files.

One path serves the production model (NV-Reason-CXR-3B) and the tiny test model
(:func:`radtrace.model.tiny_model.build_tiny_model`). A source is a checkpoint directory or a repository id
already in the Hugging Face cache; nothing is downloaded unless ``allow_download=True``.

The processor path depends on whether transformers can use torchvision:

- with torchvision (GPU nodes): the stock ``AutoProcessor``, which gives ``Qwen2_5_VLProcessor`` with the
  torchvision ``Qwen2VLImageProcessor`` and ``Qwen2VLVideoProcessor``;
- without it (CPU machines, CI): ``Qwen2_5_VLImageOnlyProcessor`` with ``Qwen2VLImageProcessorPil``. The stock
  processor cannot load there at all, because its video processor exists only for torchvision.

Library exceptions are translated here into :class:`ModelLoadError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

from radtrace.errors import ModelFilesError, ModelLoadError

__all__ = [
    "DType",
    "ImageBackend",
    "LoadedVLM",
    "ModelFilesError",
    "ModelLoadError",
    "checkpoint_fingerprint",
    "checkpoint_problem",
    "current_image_backend",
    "load_model",
    "load_processor",
    "load_vlm",
    "missing_checkpoint_files",
    "register_image_only_processor",
    "resolve_checkpoint",
    "resolve_device",
    "resolve_dtype",
    "set_pixel_budget",
]

logger = logging.getLogger(__name__)

DType = Literal["auto", "bfloat16", "float32"]
ImageBackend = Literal["torchvision", "pil"]

# "org/name" or "name", as the Hugging Face hub spells repository ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CUDA_DEVICE = re.compile(r"^cuda(:\d+)?$")
# What a checkpoint needs, as alternatives: (what it is, file names any one of which will do).
_PROCESSOR_FILES = (
    ("image processor settings", ("preprocessor_config.json", "processor_config.json")),
    ("tokenizer", ("tokenizer.json", "vocab.json")),
)
_MODEL_FILES = (
    ("model configuration", ("config.json",)),
    (
        "weights",
        ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ),
)
# Only these are fetched when downloading is allowed; a repository may hold other exports (ONNX, GGUF).
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt"]


@dataclass(frozen=True, slots=True)
class LoadedVLM:
    """A loaded model with its processor, and what they were actually loaded from and with."""

    model: PreTrainedModel
    processor: ProcessorMixin
    directory: Path
    dtype: Literal["bfloat16", "float32"]
    device: str
    image_backend: ImageBackend


def load_vlm(
    source: Path | str,
    *,
    dtype: DType = "auto",
    device: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    allow_download: bool = False,
    cache_dir: Path | None = None,
    revision: str | None = None,
) -> LoadedVLM:
    """Load the model and its processor, and check that they agree on the image token.

    ``source`` is a checkpoint directory or a hub repository id (``revision`` and ``cache_dir`` apply to ids).
    ``dtype="auto"`` is bfloat16 on CUDA and float32 on CPU; ``device="auto"`` is ``cuda:0`` where CUDA is
    available, else ``cpu``. ``min_pixels``/``max_pixels`` bound the image size the processor resizes to
    (``None`` keeps the checkpoint's values); NV-Reason-CXR-3B was trained with 128² to 476².

    Raises:
        ModelLoadError: files missing, unreadable or inconsistent, not cached (without ``allow_download``),
            or the device is unusable.
        ValueError: a malformed ``dtype``, ``device`` or pixel bound.
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    directory = resolve_checkpoint(source, allow_download=allow_download, cache_dir=cache_dir, revision=revision)
    _require_files(directory, _PROCESSOR_FILES + _MODEL_FILES)
    if (problem := checkpoint_problem(directory)) is not None:  # named by file, before transformers words it
        raise ModelFilesError(f"model directory {directory} cannot be loaded: {problem}", directory)
    processor = load_processor(directory, min_pixels=min_pixels, max_pixels=max_pixels)
    model = load_model(directory, dtype=resolved_dtype, device=resolved_device)
    model_image_token = getattr(model.config, "image_token_id", None)
    processor_image_token = getattr(processor, "image_token_id", None)
    if model_image_token is not None and model_image_token != processor_image_token:
        raise ModelLoadError(
            f"{directory}: the weights expect image token id {model_image_token} but the tokenizer gives "
            f"{processor_image_token}; tokenizer and weights do not belong together"
        )
    return LoadedVLM(
        model=model,
        processor=processor,
        directory=directory,
        dtype=resolved_dtype,
        device=resolved_device,
        image_backend=current_image_backend(),
    )


def resolve_checkpoint(
    source: Path | str,
    *,
    allow_download: bool = False,
    cache_dir: Path | None = None,
    revision: str | None = None,
) -> Path:
    """The local directory holding a checkpoint: ``source`` itself, or a repository's cached snapshot.

    A ``Path`` and any string naming an existing directory are local. Other strings are repository ids,
    looked up in the Hugging Face cache (``cache_dir``, else the default) without any network access unless
    ``allow_download`` is set.

    Raises:
        ModelLoadError: no such directory, or the repository is not cached (or cannot be downloaded).
        ValueError: ``revision`` given for a local directory.
    """
    if isinstance(source, Path) or Path(source).is_dir() or not _REPO_ID.match(source):
        directory = Path(source)
        if revision is not None:
            raise ValueError(f"revision {revision!r} applies to repository ids, not to the directory {directory}")
        if not directory.is_dir():
            raise ModelLoadError(f"model directory {directory} does not exist")
        return directory

    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(
            source,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=not allow_download,
            allow_patterns=_DOWNLOAD_PATTERNS,
        )
    except (OSError, ValueError) as exc:  # hub errors derive from these (LocalEntryNotFoundError: OSError)
        hint = "" if allow_download else " (downloading is not allowed: place it in the cache or pass a directory)"
        raise ModelLoadError(f"model repository {source!r} is not available locally{hint}: {exc}") from exc
    return Path(str(snapshot))


def load_processor(
    source: Path | str,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    allow_download: bool = False,
    cache_dir: Path | None = None,
    revision: str | None = None,
) -> ProcessorMixin:
    """Load the image processor, tokenizer and chat template of a Qwen2.5-VL-class checkpoint.

    The tokenizer pads on the left, as batched generation needs. See :func:`load_vlm` for the arguments.

    Raises:
        ModelLoadError: as for :func:`load_vlm`.
        ValueError: a malformed pixel bound.
    """
    directory = resolve_checkpoint(source, allow_download=allow_download, cache_dir=cache_dir, revision=revision)
    _require_files(directory, _PROCESSOR_FILES)
    backend = current_image_backend()
    try:
        if backend == "torchvision":
            from transformers import AutoProcessor

            processor: Any = AutoProcessor.from_pretrained(directory, local_files_only=True)  # type: ignore[no-untyped-call]
        else:
            processor = register_image_only_processor().from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # tokenizers, hub validators and JSON raise beyond OSError/ValueError: all are the files'
        raise ModelFilesError(f"cannot load the processor from {directory}: {exc}", directory) from exc

    # AutoProcessor falls back to a bare tokenizer where it finds no processor class; generating with that
    # "processor" would silently drop the image.
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise ModelLoadError(f"{directory} gives a {type(processor).__name__}, not an image processor with a tokenizer")
    if not processor.chat_template:
        raise ModelLoadError(f"{directory} has no chat template (chat_template.jinja or chat_template.json)")
    set_pixel_budget(processor, min_pixels=min_pixels, max_pixels=max_pixels)
    processor.tokenizer.padding_side = "left"
    logger.debug("loaded %s from %s (%s image backend)", type(processor).__name__, directory, backend)
    return processor  # type: ignore[no-any-return]


def load_model(
    source: Path | str,
    *,
    dtype: DType = "auto",
    device: str = "auto",
    allow_download: bool = False,
    cache_dir: Path | None = None,
    revision: str | None = None,
) -> PreTrainedModel:
    """Load the weights with ``AutoModelForImageTextToText`` onto ``device``, in eval mode.

    See :func:`load_vlm` for the arguments.

    Raises:
        ModelLoadError: as for :func:`load_vlm`.
        ValueError: a malformed ``dtype`` or ``device``.
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    directory = resolve_checkpoint(source, allow_download=allow_download, cache_dir=cache_dir, revision=revision)
    _require_files(directory, _MODEL_FILES)

    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText

    try:
        # Loaded on the CPU, then moved: device_map would need accelerate, which radtrace does not install.
        model: Any = AutoModelForImageTextToText.from_pretrained(
            directory, dtype=getattr(torch, resolved_dtype), local_files_only=True
        )
        model = model.to(resolved_device)
    except (OSError, ValueError, ImportError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        said = str(exc)
        if "ignore_mismatched_sizes" in said:  # its words point at a report printed above: say what it means
            said = "config.json does not fit the weights (tensor shapes differ; the load report above lists them)"
        raise ModelFilesError(f"cannot load the model from {directory}: {said}", directory) from exc
    except Exception as exc:  # e.g. huggingface_hub's StrictDataclassClassValidationError for a config that lies
        raise ModelFilesError(
            f"cannot load the model from {directory}: {type(exc).__name__}: {exc}", directory
        ) from exc
    model.eval()
    logger.info("loaded %s from %s on %s as %s", type(model).__name__, directory, resolved_device, resolved_dtype)
    return model  # type: ignore[no-any-return]


def set_pixel_budget(
    processor: ProcessorMixin, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> None:
    """Bound the pixel count images are resized to before patching (``None`` keeps the current bound).

    Each 28 x 28 pixels become one visual token after merging, so ``max_pixels = 476 * 476`` caps an image at
    289 tokens. Works for the torchvision and PIL image processors alike.

    Raises:
        ValueError: a bound is not positive, or ``min_pixels > max_pixels``.
    """
    from transformers.image_utils import SizeDict

    image_processor = processor.image_processor
    low = image_processor.size.shortest_edge if min_pixels is None else min_pixels
    high = image_processor.size.longest_edge if max_pixels is None else max_pixels
    if low <= 0 or high <= 0 or low > high:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={low}, max_pixels={high}")
    image_processor.size = SizeDict(shortest_edge=low, longest_edge=high)


def register_image_only_processor() -> type[ProcessorMixin]:
    """Register ``Qwen2_5_VLImageOnlyProcessor`` with ``AutoProcessor`` for Qwen2.5-VL; idempotent.

    Afterwards ``AutoProcessor`` resolves the class by name (a processor saved from it) and gives it for
    checkpoints that record no ``processor_class``. A checkpoint recording ``Qwen2_5_VLProcessor``, as published
    ones do, still gets the stock class from ``AutoProcessor``: that is why :func:`load_processor` calls the
    returned class directly.
    """
    from transformers import AutoProcessor, Qwen2_5_VLConfig

    from radtrace.model.qwen_image_processor import Qwen2_5_VLImageOnlyProcessor

    # exist_ok: Qwen2.5-VL already maps to the stock processor, and a repeated call registers the same class.
    AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageOnlyProcessor, exist_ok=True)  # type: ignore[no-untyped-call]
    return Qwen2_5_VLImageOnlyProcessor


def resolve_device(device: str) -> str:
    """Turn ``"auto"``/``"cuda"`` into a concrete torch device string and check that it exists.

    Raises:
        ValueError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        ModelLoadError: CUDA requested where it is not available, or no such CUDA device.
    """
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not _CUDA_DEVICE.match(device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r} requested but there are {torch.cuda.device_count()} CUDA devices")
    return f"cuda:{index}"


def resolve_dtype(dtype: DType, device: str) -> Literal["bfloat16", "float32"]:
    """``auto`` is bfloat16 on CUDA and float32 elsewhere; explicit choices pass through.

    float16 is not offered: Qwen2.5-VL overflows in float16 and generates "!!!!".

    Raises:
        ValueError: any other value.
    """
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype in ("bfloat16", "float32"):
        return dtype
    raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32', got {dtype!r}")


def current_image_backend() -> ImageBackend:
    """Which image processors transformers can use here: torchvision's where it imports, else PIL's."""
    from transformers.utils.import_utils import is_torchvision_available

    return "torchvision" if is_torchvision_available() else "pil"


def missing_checkpoint_files(directory: Path) -> list[str]:
    """What a checkpoint directory lacks for :func:`load_vlm`, each as "what (file or file)"; empty when nothing."""
    return _missing(directory, _PROCESSOR_FILES + _MODEL_FILES)


# A safetensors header is a little-endian u64 length, then that much JSON; real headers are well below this.
_SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024
_JSON_FILE_MAX = 64 * 1024 * 1024  # tokenizer.json of a large vocabulary is ~11 MB


def checkpoint_problem(directory: Path) -> str | None:
    """What makes a checkpoint whose files are all there unloadable, naming the file, or None (cheap: reads the JSON
    files and each safetensors *header*, never the tensors).

    Found: a JSON file (configuration, processor settings, tokenizer, index) that is not a JSON object; a
    configuration without ``model_type``; a safetensors file whose header is cut, not JSON, or describes more bytes
    than the file holds (a truncated copy or download); an index naming a shard that is not there. A configuration
    that is JSON but does not fit the weights is found only by loading them (:class:`ModelFilesError` then).
    """
    for name in sorted({*_JSON_NAMES, *(entry.name for entry in _present(directory, ".json"))}):
        path = directory / name
        if not path.is_file():
            continue
        value, problem = _json_object(path)
        if problem is not None and (name in _JSON_NAMES or "not a JSON object" not in problem):
            return problem  # another JSON file of the repository may hold a list: only its syntax is judged
        if name == "config.json" and not isinstance(value.get("model_type"), str):
            return f"{name} names no model_type (is it this model's configuration?)"
    shards = {entry.name for entry in _present(directory, ".safetensors")}
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        value, _ = _json_object(index)
        weight_map = value.get("weight_map")
        named = set(weight_map.values()) if isinstance(weight_map, dict) else set()
        if not named or not all(isinstance(shard, str) for shard in named):
            return f"{index.name} has no weight_map naming its shards"
        if missing := sorted(shard for shard in named if not (directory / shard).is_file()):
            return (
                f"{index.name} names {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}, not in the directory"
            )
        shards |= named
    for shard in sorted(shards):
        if (problem := _safetensors_problem(directory / shard)) is not None:
            return problem
    return None


_JSON_NAMES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
               "tokenizer_config.json", "model.safetensors.index.json")  # fmt: skip


def _present(directory: Path, suffix: str) -> list[Path]:
    try:
        return [entry for entry in directory.iterdir() if entry.name.endswith(suffix) and entry.is_file()]
    except OSError:
        return []


def _json_object(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        size = path.stat().st_size
        if size > _JSON_FILE_MAX:
            return {}, f"{path.name} is {size} bytes, far more than a model's JSON file holds"
        value = json.loads(path.read_bytes())
    except OSError as exc:
        return {}, f"{path.name} cannot be read: {exc.strerror or exc}"
    except ValueError as exc:  # JSONDecodeError says the line and column; UnicodeDecodeError the byte
        return {}, f"{path.name} is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, f"{path.name} is not a JSON object"
    return value, None


def _safetensors_problem(path: Path) -> str | None:
    """Whether ``path``'s safetensors header is whole and describes exactly the bytes that follow it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{path.name} is {size} bytes: too short for a safetensors file (truncated?)"
            (length,) = struct.unpack("<Q", head)
            if length > min(_SAFETENSORS_HEADER_MAX, size - 8):
                return f"{path.name} is {size} bytes but its header claims {length} bytes of header (truncated?)"
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"{path.name} cannot be read: {exc.strerror or exc}"
    except ValueError:
        return f"{path.name} has a header that is not JSON: not a safetensors file, or damaged"
    if not isinstance(header, dict):
        return f"{path.name} has a header that is not a JSON object"
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2 and isinstance(entry["data_offsets"][1], int)
    ]  # fmt: skip
    expected = 8 + length + max(ends, default=0)
    if expected > size:
        return f"{path.name} is truncated: {size} bytes where its header describes {expected} (copy it again)"
    return None


def checkpoint_fingerprint(directory: Path) -> str:
    """A digest of the names, sizes and modification times of the files in ``directory`` (symbolic links followed):
    it changes when a file is replaced, copied again, truncated or added, or when a link is pointed elsewhere. What a
    worker waiting for unloadable weights watches before it tries again."""
    entries: list[str] = []
    try:
        resolved = str(directory.resolve())
        for entry in sorted(directory.iterdir()):
            try:
                info = entry.stat()
            except OSError:
                continue
            entries.append(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}")
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return hashlib.sha256("\n".join([resolved, *entries]).encode()).hexdigest()


def _missing(directory: Path, needs: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    return [
        f"{what} ({' or '.join(names)})"
        for what, names in needs
        if not any((directory / name).is_file() for name in names)
    ]


def _require_files(directory: Path, needs: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    """Name what is missing before transformers does: it may fall back to defaults instead (a tokenizer
    without tokenizer.json becomes a near-empty vocabulary) or word the error as a download problem."""
    if missing := _missing(directory, needs):
        raise ModelLoadError(f"model directory {directory} lacks: {', '.join(missing)}")
