"""A tiny, randomly initialised Qwen2.5-VL built offline, for tests, benchmarks and demos.

The model has the architecture of NV-Reason-CXR-3B (``Qwen2_5_VLForConditionalGeneration``) at toy size:
about 0.35 M parameters and 1.4 MB on disk. Its output is noise; it exists so that the real loading,
prompting and generation code can run end to end without network access or real weights.

The directory it writes has the file layout of a Hugging Face Qwen2.5-VL checkpoint (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``,
``preprocessor_config.json`` naming ``Qwen2VLImageProcessor`` and ``Qwen2_5_VLProcessor``), so both
:mod:`radtrace.model.loading` and a stock ``AutoProcessor`` (where torchvision is installed) accept it,
plus a ``radtrace-tiny.json`` marker saying that it is random and not for clinical use.

It lives in the model package, not with the test helpers: ``radtrace model make-tiny`` builds it for sites
without weights, and the backends read its marker to name the model honestly in every reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

__all__ = [
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN_SPECIAL_TOKENS",
    "TINY_MARKER_FILE",
    "build_tiny_model",
]

TINY_MARKER_FILE: Final = "radtrace-tiny.json"

# Qwen2.5-VL's special tokens, in the order of their ids in the real vocabulary (151643 onwards).
QWEN_SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The chat template shipped with Qwen2.5-VL-*-Instruct (and inherited by its fine-tunes): a default system
# message, images rendered as <|vision_start|><|image_pad|><|vision_end|> where they occur in the content.
QWEN2_5_VL_CHAT_TEMPLATE: Final = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenizer split (from transformers' Qwen2Tokenizer): letters, single digits, punctuation runs.
_QWEN2_PRETOKENIZE_REGEX: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CHEXPERT_LABELS: Final = (
    "Atelectasis, Cardiomegaly, Consolidation, Edema, Enlarged Cardiomediastinum, Fracture, Lung Lesion, "
    "Lung Opacity, No Finding, Pleural Effusion, Pleural Other, Pneumonia, Pneumothorax, Support Devices"
)

_TRAINING_TEXTS: Final = (
    "Find abnormalities and support devices.",
    "<think> Image quality: adequate inspiration, no rotation. Devices: an endotracheal tube and a "
    "right internal jugular central venous catheter. Airways: the trachea is midline. </think>",
    "<think> Right lung: patchy opacity in the right lower lobe. Left lung: clear. Pleura: small left "
    "pleural effusion, no pneumothorax. Mediastinum and hila: normal. Heart: the heart is enlarged. "
    "Upper abdomen: unremarkable. Bones: no acute fracture. </think>",
    "<answer> Cardiomegaly, Pleural Effusion, Support Devices </answer>",
    "<answer> No Finding </answer>",
    f"<answer> {_CHEXPERT_LABELS} </answer>",
    "Please provide a frontal chest X-ray image.",
    "The answer is: \\boxed{Atelectasis|Pneumonia} [12, 40, 256, 311]",
)

# At most: the 256 byte symbols plus the merges learned from the texts; the special tokens come on top.
_LEARNED_VOCAB_SIZE: Final = 386

_TINY_MAX_PIXELS: Final = 476 * 476
_TINY_MIN_PIXELS: Final = 128 * 128
# OpenAI CLIP normalisation, as in every Qwen2-VL / Qwen2.5-VL preprocessor_config.json.
_CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)


# The tiny model's dimensions: about 0.35 M parameters (the vocabulary is the trained tokenizer's).
TINY_TEXT_CONFIG: Final[dict[str, Any]] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    # mrope_section splits head_dim / 2 = 8 rotary frequencies over (time, height, width).
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
}
TINY_VISION_CONFIG: Final[dict[str, Any]] = {
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 4,
    "out_hidden_size": 64,
    "fullatt_block_indexes": [1],
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
}


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """Build a tiny random Qwen2.5-VL checkpoint with tokenizer and processor files in ``directory``.

    The same ``seed`` gives bit-identical weights. Nothing is downloaded. The directory is created if
    needed; files of an earlier build in it are overwritten.

    Returns:
        ``directory``, ready for :func:`radtrace.model.loading.load_vlm`.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    token_id = write_processor_files(directory)
    config = qwen2_5_vl_config(token_id, TINY_TEXT_CONFIG, TINY_VISION_CONFIG, vocab_size=max(token_id.values()) + 1)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    make_greedy(model, token_id)
    model.save_pretrained(directory)
    write_marker(
        directory,
        name="radtrace-tiny-qwen2_5_vl",
        seed=seed,
        parameters=sum(p.numel() for p in model.parameters()),
    )
    return directory


def write_processor_files(directory: Path) -> dict[str, int]:
    """Write the trained tokenizer, chat template and image processor settings; return the special token ids."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps(_preprocessor_config(), indent=2) + "\n", encoding="utf-8"
    )
    return {token: int(tokenizer.convert_tokens_to_ids(token)) for token in QWEN_SPECIAL_TOKENS}


def qwen2_5_vl_config(
    token_id: dict[str, int],
    text: dict[str, Any],
    vision: dict[str, Any],
    *,
    vocab_size: int,
    tie_word_embeddings: bool = False,
) -> Any:
    """A ``Qwen2_5_VLConfig`` of the given dimensions whose special token ids are the tokenizer's."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            **text,
            "vocab_size": vocab_size,
            "bos_token_id": token_id["<|endoftext|>"],
            "eos_token_id": token_id["<|im_end|>"],
            "pad_token_id": token_id["<|endoftext|>"],
            "tie_word_embeddings": tie_word_embeddings,
        },
        vision_config=vision,
        image_token_id=token_id["<|image_pad|>"],
        video_token_id=token_id["<|video_pad|>"],
        vision_start_token_id=token_id["<|vision_start|>"],
        vision_end_token_id=token_id["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )


def make_greedy(model: Any, token_id: dict[str, int]) -> None:
    """Greedy by default, and end on <|im_end|> like the chat models do."""
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = [token_id["<|im_end|>"], token_id["<|endoftext|>"]]
    model.generation_config.pad_token_id = token_id["<|endoftext|>"]
    model.generation_config.bos_token_id = token_id["<|endoftext|>"]


def write_marker(directory: Path, *, name: str, seed: int, parameters: int) -> None:
    """The marker that says the weights are random and not for clinical use."""
    marker = {
        "name": name,
        "seed": seed,
        "parameters": parameters,
        "random_weights": True,
        "clinical_use": False,
        "note": "Randomly initialised model for software tests and benchmarks. Its output is noise. "
        "Not for clinical use.",
    }
    (directory / TINY_MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _train_tokenizer() -> Any:
    """Train a byte-level BPE on the reasoning vocabulary and wrap it as a Qwen2 tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_LEARNED_VOCAB_SIZE,
        # All 256 byte symbols, so that any UTF-8 text encodes and decodes exactly.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TRAINING_TEXTS, trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = trained["vocab"]
    merges = [tuple(pair) for pair in trained["merges"]]
    # Special tokens after the learned ones and in Qwen's order, as in the real vocabulary.
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        # Annotated as list[str] in transformers, but tokenizers' BPE takes (left, right) pairs only.
        merges=merges,  # type: ignore[arg-type]
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
        model_max_length=32768,
        errors="replace",
        split_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


def _preprocessor_config() -> dict[str, Any]:
    """Qwen2.5-VL's image processor settings, with NV-Reason-CXR-3B's pixel budget (128² to 476²)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": list(_CLIP_MEAN),
        "image_std": list(_CLIP_STD),
        "resample": 3,
        "min_pixels": _TINY_MIN_PIXELS,
        "max_pixels": _TINY_MAX_PIXELS,
        "size": {"shortest_edge": _TINY_MIN_PIXELS, "longest_edge": _TINY_MAX_PIXELS},
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
