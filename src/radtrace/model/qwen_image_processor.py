"""An image-only Qwen2.5-VL processor for machines without torchvision.

transformers 5.x's ``Qwen2_5_VLProcessor`` always builds a video processor (``Qwen2VLVideoProcessor``), and that
one exists only for the torchvision backend: without torchvision the stock processor cannot be loaded at all.
radtrace never sends video, so this subclass drops the video processor and keeps the rest of the stock class
(image token expansion, ``model_input_names``, chat templating, decoding). Images are prepared by whatever
``AutoImageProcessor`` picks for the checkpoint, which is ``Qwen2VLImageProcessorPil`` without torchvision.

Importing this module imports transformers; :mod:`radtrace.model.loading` imports it only when needed.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin, Qwen2_5_VLProcessor

__all__ = ["Qwen2_5_VLImageOnlyProcessor"]


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):  # noqa: N801 - named after the class it narrows
    """``Qwen2_5_VLProcessor`` with an image processor and a tokenizer, and no video processor."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Same token bookkeeping as Qwen2_5_VLProcessor.__init__, which cannot be called: it passes a video
        # processor on to ProcessorMixin, whose attribute list comes from *this* signature.
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)  # type: ignore[no-untyped-call]
