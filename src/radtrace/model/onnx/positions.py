"""Index arrays for the exported graphs, in numpy: what Qwen2.5-VL computes with data-dependent Python loops.

The vision tower attends within windows of 112 pixels and, in a few blocks, within each whole image; which
patches those are, and the order the tower processes them in, follow from each image's patch grid. The text
decoder places image tokens with 3-D rotary positions (time, height, width). transformers computes all of this
in Python around the model (``get_vision_window_index``, ``get_vision_position_ids``, ``get_rope_index``); the
graphs take the results as inputs so that they stay free of control flow. Each function here mirrors its
transformers counterpart for still images, which is what the parity test checks token by token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["VisionIndex", "attention_bias", "decode_positions", "rope_index", "vision_index"]

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]

_MASKED = np.finfo(np.float32).min


@dataclass(frozen=True)
class VisionIndex:
    """The vision graph's index inputs for one batch of images."""

    position_ids: Ints
    """(patches, 2): each patch's (row, column), in the tower's window order."""
    window_index: Ints
    """(merged patches,): the window order of the merged 2 x 2 patch groups."""
    reverse_index: Ints
    """(merged patches,): back from window order to the processor's order."""
    window_segments: Ints
    """(patches,): which attention window each patch (in window order) belongs to."""
    image_segments: Ints
    """(patches,): which image each patch (in window order) belongs to."""

    def feeds(self) -> dict[str, Ints]:
        """The graph inputs by name."""
        return {
            "position_ids": self.position_ids,
            "window_index": self.window_index,
            "reverse_index": self.reverse_index,
            "window_segments": self.window_segments,
            "image_segments": self.image_segments,
        }


def vision_index(grid_thw: Ints, *, merge_size: int, window_size: int, patch_size: int) -> VisionIndex:
    """The vision graph's index inputs for images with patch grids ``grid_thw`` (images, 3)."""
    unit = merge_size * merge_size
    merger_window = window_size // merge_size // patch_size
    positions: list[Ints] = []
    windows: list[Ints] = []
    window_lengths: list[int] = []
    image_lengths: list[int] = []
    offset = 0
    for t, h, w in ((int(r[0]), int(r[1]), int(r[2])) for r in grid_thw):
        grid_rows, grid_columns = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = (h // merge_size, merge_size, w // merge_size, merge_size)
        rows = grid_rows.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        columns = grid_columns.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        positions.append(np.tile(np.stack([rows, columns], axis=-1), (t, 1)))

        llm_h, llm_w = h // merge_size, w // merge_size
        index = np.arange(t * llm_h * llm_w).reshape(t, llm_h, llm_w)
        pad_h = merger_window - llm_h % merger_window
        pad_w = merger_window - llm_w % merger_window
        windows_h = (llm_h + pad_h) // merger_window
        windows_w = (llm_w + pad_w) // merger_window
        padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        padded = padded.reshape(t, windows_h, merger_window, windows_w, merger_window)
        padded = padded.transpose(0, 1, 3, 2, 4).reshape(t, windows_h * windows_w, merger_window, merger_window)
        lengths = (padded != -100).sum(axis=(2, 3)).reshape(-1)
        flat = padded.reshape(-1)
        windows.append(flat[flat != -100] + offset)
        window_lengths.extend(int(n) * unit for n in lengths if n > 0)
        image_lengths.extend([h * w] * t)
        offset += t * llm_h * llm_w

    window_index = np.concatenate(windows).astype(np.int64)
    position_ids = np.concatenate(positions).astype(np.int64)
    # Rotary positions are per patch, so permuting them first equals permuting their cos/sin afterwards.
    position_ids = position_ids.reshape(-1, unit, 2)[window_index].reshape(-1, 2)
    return VisionIndex(
        position_ids=position_ids,
        window_index=window_index,
        reverse_index=np.argsort(window_index, kind="stable").astype(np.int64),
        window_segments=_segments(window_lengths),
        # Windows never cross images, so the window order keeps each image's patches together.
        image_segments=_segments(image_lengths),
    )


def rope_index(
    input_ids: Ints, attention_mask: Ints, grid_thw: Ints, *, image_token_id: int, merge_size: int
) -> tuple[Ints, Ints]:
    """3-D rotary positions (3, batch, length) of a left-padded prompt batch, and each row's delta.

    Text tokens count up on all three axes; an image's tokens take (start, start + row, start + column), and the
    text after it continues from the largest position plus one. Padding keeps position 0. The delta (largest
    position + 1 - real tokens) shifts the positions of generated tokens, as in transformers' ``get_rope_index``.
    """
    batch, length = input_ids.shape
    positions = np.zeros((3, batch, length), dtype=np.int64)
    deltas = np.zeros((batch,), dtype=np.int64)
    grids = iter([(int(r[0]), int(r[1]), int(r[2])) for r in grid_thw])
    for row in range(batch):
        keep = attention_mask[row].astype(bool)
        ids = input_ids[row][keep]
        parts: list[Ints] = []
        current = 0
        start = 0
        while start < len(ids):
            is_image = ids[start] == image_token_id
            end = start
            while end < len(ids) and (ids[end] == image_token_id) == is_image:
                end += 1
            if not is_image:
                parts.append(np.broadcast_to(np.arange(end - start) + current, (3, end - start)))
                current += end - start
            else:
                t, h, w = next(grids)
                llm_h, llm_w = h // merge_size, w // merge_size
                tt, hh, ww = np.meshgrid(np.arange(t), np.arange(llm_h), np.arange(llm_w), indexing="ij")
                parts.append(np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)]) + current)
                current += max(h, w) // merge_size
            start = end
        placed = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.int64)
        positions[:, row, keep] = placed
        deltas[row] = (int(placed.max()) + 1 - len(ids)) if placed.size else 0
    return positions, deltas


def decode_positions(attention_mask: Ints, deltas: Ints) -> Ints:
    """The (3, batch, 1) positions of the next token: real tokens so far - 1 + the row's delta."""
    position = attention_mask.sum(axis=1) - 1 + deltas
    return np.broadcast_to(position[None, :, None], (3, attention_mask.shape[0], 1)).astype(np.int64)


def attention_bias(attention_mask: Ints, query_length: int) -> Floats:
    """The additive (batch, 1, query, keys) mask: causal, padding masked, each query always seeing itself.

    The last ``query_length`` keys are the queries. A padding query would see nothing at all, and its softmax
    would be NaN, which the next layer's cache would carry; letting it see itself keeps every value finite and
    changes nothing for real tokens, which never attend to padding.
    """
    keys = attention_mask.shape[1]
    past = keys - query_length
    query_at = past + np.arange(query_length)[:, None]
    allowed = (np.arange(keys)[None, :] <= query_at)[None] & attention_mask.astype(bool)[:, None, :]
    allowed |= np.arange(keys)[None, None, :] == query_at[None]
    bias = np.where(allowed, np.float32(0.0), _MASKED).astype(np.float32)
    return bias[:, None, :, :]


def _segments(lengths: list[int]) -> Ints:
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
