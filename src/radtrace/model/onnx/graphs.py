"""The three graphs of an export, as torch modules over a loaded Qwen2.5-VL's own layers, ready for tracing.

Each wrapper calls the checkpoint's modules (norms, projections, MLPs, rotary embeddings) and spells out only
what transformers does with data-dependent Python: the vision tower's window attention takes segment ids
instead of cumulative lengths (a mask built in the graph), and the decoder takes an additive attention mask and
3-D positions from :mod:`radtrace.model.onnx.positions` and returns its KV cache. The decoder returns the
logits of the last position only: greedy decoding needs no more, and the vocabulary projection of a whole
prompt would dominate the prefill.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

__all__ = ["DecoderGraph", "EmbedGraph", "VisionGraph"]

_MASKED = torch.finfo(torch.float32).min


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scale: float) -> Any:
    weights = torch.matmul(query, key.transpose(-1, -2)) * scale + bias
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, value)


class VisionGraph(nn.Module):
    """pixel_values (patches, C·T·P·P) and index arrays -> image_embeds (merged patches, text hidden size)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.visual = model.model.visual
        self.full_blocks = set(self.visual.fullatt_block_indexes)

    def forward(
        self,
        pixel_values: torch.Tensor,
        position_ids: torch.Tensor,
        window_index: torch.Tensor,
        reverse_index: torch.Tensor,
        window_segments: torch.Tensor,
        image_segments: torch.Tensor,
    ) -> Any:
        visual = self.visual
        hidden = visual.patch_embed(pixel_values)
        width = hidden.shape[-1]
        hidden = hidden.reshape(-1, visual.spatial_merge_unit, width)[window_index].reshape(-1, width)
        cos, sin = visual.rotary_pos_emb(hidden, position_ids)
        zero = torch.zeros((), dtype=hidden.dtype)
        masked = torch.full((), _MASKED, dtype=hidden.dtype)
        full = torch.where(image_segments[:, None] == image_segments[None, :], zero, masked)
        windowed = torch.where(window_segments[:, None] == window_segments[None, :], zero, masked)
        for number, block in enumerate(visual.blocks):
            bias = full if number in self.full_blocks else windowed
            hidden = hidden + self._attention(block.attn, block.norm1(hidden), cos, sin, bias)
            hidden = hidden + block.mlp(block.norm2(hidden))
        merged = visual.merger(hidden)
        return merged[reverse_index]

    @staticmethod
    def _attention(attn: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor) -> Any:
        query, key, value = attn.qkv(hidden).reshape(-1, 3, attn.num_heads, attn.head_dim).permute(1, 0, 2, 3).unbind(0)
        query, key = qwen.apply_rotary_pos_emb_vision(query, key, cos, sin)
        output = _attend(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), bias, attn.scaling)
        return attn.proj(output.transpose(0, 1).reshape(-1, attn.dim))


class EmbedGraph(nn.Module):
    """input_ids (batch, length) -> inputs_embeds (batch, length, hidden)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.embed_tokens = model.model.language_model.embed_tokens

    def forward(self, input_ids: torch.Tensor) -> Any:
        return self.embed_tokens(input_ids)


class DecoderGraph(nn.Module):
    """inputs_embeds, attention bias, 3-D positions and the KV cache -> last logits and the grown cache."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.language_model = model.model.language_model
        self.lm_head = model.lm_head

    def forward(
        self, inputs_embeds: torch.Tensor, attention_bias: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        text = self.language_model
        cos, sin = text.rotary_emb(inputs_embeds, position_ids)
        hidden = inputs_embeds
        presents: list[torch.Tensor] = []
        for number, layer in enumerate(text.layers):
            attn = layer.self_attn
            normed = layer.input_layernorm(hidden)
            shape = (normed.shape[0], normed.shape[1], -1, attn.head_dim)
            query = attn.q_proj(normed).view(shape).transpose(1, 2)
            key = attn.k_proj(normed).view(shape).transpose(1, 2)
            value = attn.v_proj(normed).view(shape).transpose(1, 2)
            query, key = qwen.apply_rotary_pos_emb(query, key, cos, sin)
            key = torch.cat([past[2 * number], key], dim=2)
            value = torch.cat([past[2 * number + 1], value], dim=2)
            presents += [key, value]
            groups = attn.num_key_value_groups
            output = _attend(
                query, qwen.repeat_kv(key, groups), qwen.repeat_kv(value, groups), attention_bias, attn.scaling
            )
            output = output.transpose(1, 2).reshape(normed.shape[0], normed.shape[1], -1)
            hidden = hidden + attn.o_proj(output)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        last = text.norm(hidden[:, -1:, :])
        logits = self.lm_head(last)[:, 0, :].float()
        return (logits, *presents)
