"""The post-LN BERT layer stack used by VL-BERT, with BERT's parameter names (`layer.{i}.attention.self.query`, ...).

Attention runs through `scaled_dot_product_attention`; an explicit softmax path also returns the probabilities.
Every projection is a call of its own nn.Linear (`self.query(x)`), so module swaps and wrappers of nn.Linear apply.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

_ACTIVATIONS = {
    "gelu": partial(nn.GELU, approximate="none"),  # exact erf GELU, as BERT
    "gelu_new": partial(nn.GELU, approximate="tanh"),
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    """NETWORK.VLBERT.hidden_act -> module."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"NETWORK.VLBERT.hidden_act: unknown activation {name!r}; "
                         f"expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class BertSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"NETWORK.VLBERT: hidden_size {hidden_size} is not a multiple of num_attention_heads "
                             f"{num_heads}")
        self.num_heads, self.head_size = num_heads, hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout_prob = dropout
        self.dropout = nn.Dropout(dropout)

    def project_qkv(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, L, h] -> query, key, value [B, heads, L, d]."""
        batch, length, _ = hidden.shape
        return tuple(proj(hidden).view(batch, length, self.num_heads, self.head_size).transpose(1, 2)
                     for proj in (self.query, self.key, self.value))

    def forward(self, hidden: Tensor, key_mask: Tensor, output_probs: bool = False) -> tuple[Tensor, Tensor | None]:
        """hidden [B, L, h], key_mask [B, 1, 1, L] bool (True = attend) -> context [B, L, h], probs [B, heads, L, L]."""
        query, key, value = self.project_qkv(hidden)
        probs = None
        if output_probs:
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_size)
            scores = scores.float().masked_fill(~key_mask, torch.finfo(torch.float32).min)
            probs = scores.softmax(dim=-1).to(query.dtype)
            context = self.dropout(probs) @ value
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=key_mask, dropout_p=self.dropout_prob if self.training else 0.0)
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, -1), probs


class BertSelfOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual); used after attention."""

    def __init__(self, in_size: int, hidden_size: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, hidden_dropout: float, attention_dropout: float):
        super().__init__()
        self.self = BertSelfAttention(hidden_size, num_heads, attention_dropout)
        self.output = BertSelfOutput(hidden_size, hidden_size, hidden_dropout)

    def forward(self, hidden: Tensor, key_mask: Tensor, output_probs: bool) -> tuple[Tensor, Tensor | None]:
        context, probs = self.self(hidden, key_mask, output_probs)
        return self.output(context, hidden), probs


class BertIntermediate(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = activation(hidden_act)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, hidden_act: str,
                 hidden_dropout: float, attention_dropout: float):
        super().__init__()
        self.attention = BertAttention(hidden_size, num_heads, hidden_dropout, attention_dropout)
        self.intermediate = BertIntermediate(hidden_size, intermediate_size, hidden_act)
        self.output = BertSelfOutput(intermediate_size, hidden_size, hidden_dropout)

    def forward(self, hidden: Tensor, key_mask: Tensor, output_probs: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, probs = self.attention(hidden, key_mask, output_probs)
        return self.output(self.intermediate(attended), attended), probs


class BertEncoder(nn.Module):
    def __init__(self, num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int, hidden_act: str,
                 hidden_dropout: float, attention_dropout: float):
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(hidden_size, num_heads, intermediate_size, hidden_act, hidden_dropout, attention_dropout)
            for _ in range(num_layers)
        )
        self.gradient_checkpointing = False  # NETWORK.GRADIENT_CHECKPOINTING: recompute each layer in backward

    def forward(self, hidden: Tensor, key_mask: Tensor, output_all_encoded_layers: bool = True,
                output_attention_probs: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """Returns (all layer outputs, or [last]) and the per-layer probabilities ([] unless requested)."""
        outputs, all_probs = [], []
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden, probs = checkpoint(layer, hidden, key_mask, output_attention_probs, use_reentrant=False)
            else:
                hidden, probs = layer(hidden, key_mask, output_attention_probs)
            if output_all_encoded_layers:
                outputs.append(hidden)
            if probs is not None:
                all_probs.append(probs)
        if not output_all_encoded_layers:
            outputs.append(hidden)
        return outputs, all_probs


class BertPooler(nn.Module):
    """tanh(Linear(h, h)) of the first position."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: Tensor) -> Tensor:
        return self.activation(self.dense(hidden[:, 0]))
