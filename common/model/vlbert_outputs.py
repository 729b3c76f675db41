"""What `VisualLinguisticBert.forward` returns: named tuples in the original's order, so original call sites
(`encoded, pooled = vlbert(...)`, `text, objects, pooled = vlbert(..., output_text_and_object_separately=True)`)
keep working, and new code reads fields by name (`vlbert(...).pooled`).
"""
from __future__ import annotations

from typing import NamedTuple, Union

from torch import Tensor

Encoded = Union[Tensor, list[Tensor]]  # [B, L, h], or a list over layers with output_all_encoded_layers


class VLBertOutput(NamedTuple):
    """Default flags."""

    encoded: Encoded  # the packed sequence `[CLS] text [SEP] objects [END] <pad>` [B, L, h]
    pooled: Tensor | None  # [B, h] tanh(dense(state at [CLS])); None when with_pooler is false


class VLBertOutputWithAttention(NamedTuple):
    """output_attention_probs=True."""

    encoded: Encoded
    pooled: Tensor | None
    attention_probs: list[Tensor]  # one [B, heads, L, L] per layer


class VLBertSeparateOutput(NamedTuple):
    """output_text_and_object_separately=True."""

    text: Encoded  # [B, T, h] states at the text positions (zero-padded)
    objects: Encoded  # [B, O, h] states of the objects (zero for padded objects)
    pooled: Tensor | None


class VLBertSeparateOutputWithAttention(NamedTuple):
    """output_text_and_object_separately=True and output_attention_probs=True."""

    text: Encoded
    objects: Encoded
    pooled: Tensor | None
    attention_probs: list[Tensor]


AnyVLBertOutput = Union[VLBertOutput, VLBertOutputWithAttention, VLBertSeparateOutput,
                        VLBertSeparateOutputWithAttention]


class PretrainingOutputs(NamedTuple):
    """`VisualLinguisticBertForPretraining`: `rel, mlm, mvrc = vlbert(...)`; a disabled head gives None."""

    relationship_logits: Tensor | None  # [B, 2]
    mlm_logits: Tensor | None  # [B, T, vocab]
    mvrc_logits: Tensor | None  # [B, O, visual_region_classes]
