"""The index arrays the ONNX graphs take, against the transformers functions they stand in for.

Qwen2.5-VL computes its vision window order, vision rotary positions and 3-D text positions with Python loops
around the model; :mod:`radtrace.model.onnx.positions` computes them in numpy for the exported graphs. These
must be the very same arrays for any picture grid and any left-padded batch, or the ONNX backend reads a
different model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

from radtrace.model.onnx.positions import attention_bias, decode_positions, rope_index, vision_index

pytestmark = pytest.mark.unit

# (t, h, w) patch grids: square, tall, wide, not a multiple of the 8-patch window, the smallest, and a multiple.
GRIDS = [(1, 34, 34), (1, 46, 20), (1, 20, 46), (1, 18, 26), (1, 2, 2), (1, 16, 32)]


@pytest.mark.parametrize("grids", [[grid] for grid in GRIDS] + [GRIDS[:3], GRIDS[3:]], ids=str)
def test_vision_window_order_and_positions_equal_transformers(grids: list[tuple[int, int, int]]) -> None:
    grid = np.array(grids, dtype=np.int64)
    index = vision_index(grid, merge_size=2, window_size=112, patch_size=14)
    window_index, cu_window = qwen.get_vision_window_index(
        torch.from_numpy(grid), spatial_merge_size=2, window_size=112, patch_size=14
    )
    assert index.window_index.tolist() == window_index.tolist()
    assert index.reverse_index.tolist() == torch.argsort(window_index).tolist()
    # windows: the same boundaries as transformers' cumulative lengths, in window order
    boundaries = np.flatnonzero(np.diff(index.window_segments)) + 1
    assert [0, *boundaries.tolist(), len(index.window_segments)] == cu_window.tolist()
    images = np.flatnonzero(np.diff(index.image_segments)) + 1
    sizes = [t * h * w for t, h, w in grids]
    assert [0, *images.tolist(), len(index.image_segments)] == np.cumsum([0, *sizes]).tolist()
    # rotary positions: transformers' per-patch (row, column), permuted as the tower permutes its patches
    positions = qwen.get_vision_position_ids(torch.from_numpy(grid), 2)
    permuted = positions.reshape(-1, 4, 2)[window_index].reshape(-1, 2)
    assert index.position_ids.tolist() == permuted.tolist()


def test_rope_index_equals_transformers_on_a_left_padded_batch(tiny_vlm: Any) -> None:
    processor, model = tiny_vlm.processor, tiny_vlm.model
    from PIL import Image

    pictures = [Image.new("RGB", size) for size in ((476, 476), (300, 700), (200, 128))]
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for prompt in ("Find abnormalities.", "Find abnormalities and support devices, please, now.", "x")
    ]
    inputs = processor(images=pictures, text=texts, padding=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any()  # really left-padded
    expected, deltas = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    got, got_deltas = rope_index(
        inputs["input_ids"].numpy(),
        inputs["attention_mask"].numpy(),
        inputs["image_grid_thw"].numpy(),
        image_token_id=processor.image_token_id,
        merge_size=2,
    )
    real = inputs["attention_mask"].numpy().astype(bool)
    assert (got[:, real] == expected.numpy()[:, real]).all()
    assert got_deltas.tolist() == deltas[:, 0].tolist()
    # the next token: real tokens so far + delta, on all three axes
    grown = np.concatenate([inputs["attention_mask"].numpy(), np.ones((3, 1), dtype=np.int64)], axis=1)
    assert decode_positions(grown, got_deltas)[:, :, 0].tolist() == [(real.sum(axis=1) + got_deltas).tolist()] * 3


def test_attention_bias_is_causal_skips_padding_and_never_leaves_a_row_empty() -> None:
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=np.int64)
    bias = attention_bias(mask, 4)[:, 0]
    allowed = bias == 0
    assert allowed[1].tolist() == np.tril(np.ones((4, 4), dtype=bool)).tolist()
    assert allowed[0, 2:].tolist() == [[False, False, True, False], [False, False, True, True]]
    assert allowed[0, :2].tolist() == [[True, False, False, False], [False, True, False, False]]  # pads: themselves
    step = attention_bias(np.concatenate([mask, np.ones((2, 1), dtype=np.int64)], axis=1), 1)[:, 0, 0]
    assert (step == 0).tolist() == [[False, False, True, True, True], [True] * 5]
