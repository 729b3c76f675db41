"""VL-BERT: one BERT encoder over the packed sequence `[CLS] text [SEP] ... objects [END] <pad>`, and its pretraining
variant. Parameter names equal the original state-dict keys, so BERT and released VL-BERT weights load by name.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common.model.bert_encoder import BertEncoder, BertPooler
from common.model.vlbert_heads import MLMHead, MVRCHead, RelationshipHead
from common.model.vlbert_outputs import (
    AnyVLBertOutput,
    PretrainingOutputs,
    VLBertOutput,
    VLBertOutputWithAttention,
    VLBertSeparateOutput,
    VLBertSeparateOutputWithAttention,
)

log = logging.getLogger(__name__)

NUM_SPECIAL_WORDS = 1000  # [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK], ... (word_embedding_frozen only)
_REQUIRED = object()


def cfg_value(config, key: str, default=_REQUIRED):
    """`config.key` from an attribute-access mapping; a missing required key names `NETWORK.VLBERT.<key>`."""
    if isinstance(config, Mapping) and key in config:
        return config[key]
    if not isinstance(config, Mapping) and hasattr(config, key):
        return getattr(config, key)
    if default is _REQUIRED:
        raise KeyError(f"config key NETWORK.VLBERT.{key} is required by VisualLinguisticBert but missing")
    return default


@dataclass
class PackedLayout:
    """Where each packed slot comes from. All tensors are [B, L] except `object_slot` [B, O]."""

    text_index: Tensor  # text column feeding each slot (valid where is_text)
    object_index: Tensor  # object column feeding each slot (valid where is_object)
    is_text: Tensor
    is_object: Tensor
    is_end: Tensor
    position_ids: Tensor  # before the position_padding_idx offset
    attention_mask: Tensor  # True for text, objects and [END]
    object_slot: Tensor  # packed slot of each real object


def _source_index(slot: Tensor, valid: Tensor, length: int) -> Tensor:
    """Inverse of `slot`: out[b, slot[b, i]] = i for valid i. Invalid entries go to a spare column that is dropped."""
    batch, count = slot.shape
    target = torch.where(valid, slot, torch.full_like(slot, length))
    out = torch.zeros(batch, length + 1, dtype=torch.long, device=slot.device)
    out.scatter_(1, target, torch.arange(count, device=slot.device).expand(batch, count))
    return out[:, :length]


def pack_layout(text_mask: Tensor, object_mask: Tensor, multiple: int = 1) -> PackedLayout:
    """Index arithmetic of the packed layout (sheet §1.4), vectorised over the batch.

    text_mask [B, T], object_mask [B, O] -> slots [0, Lt) text, [Lt, Lt+No) objects, Lt+No [END], rest padding;
    L = max(Lt + No) + 1, rounded up to a multiple of `multiple` (TRAIN.PAD_TO_MULTIPLE_OF: masked padding slots,
    so the outputs of the real slots do not change). Text positions are 0..Lt-1, every object Lt, [END] Lt+1.
    """
    text_mask, object_mask = text_mask.bool(), object_mask.bool()
    text_len = text_mask.sum(1, keepdim=True)  # [B, 1]
    end_slot = text_len + object_mask.sum(1, keepdim=True)
    length = -(-(int(end_slot.max()) + 1) // multiple) * multiple
    grid = torch.arange(length, device=text_mask.device).unsqueeze(0)  # [1, L]
    text_slot = text_mask.long().cumsum(1) - 1
    object_slot = (text_len + object_mask.long().cumsum(1) - 1).clamp(min=0)
    is_text = grid < text_len
    is_end = grid == end_slot
    is_object = (grid >= text_len) & (grid < end_slot)
    position_ids = torch.where(is_object | is_end, text_len + is_end.long(), grid.expand_as(is_end))
    return PackedLayout(
        text_index=_source_index(text_slot, text_mask, length),
        object_index=_source_index(object_slot, object_mask, length),
        is_text=is_text,
        is_object=is_object,
        is_end=is_end,
        position_ids=position_ids,
        attention_mask=grid <= end_slot,
        object_slot=object_slot,
    )


def _gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """values [B, N, H], index [B, L] -> [B, L, H]."""
    return torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


class VisualLinguisticBert(nn.Module):
    """The VL-BERT transformer (sheet §1.2-1.5). `config` is the NETWORK.VLBERT section."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        hidden = cfg_value(config, "hidden_size")
        self.hidden_size = hidden
        self.visual_size = cfg_value(config, "visual_size", hidden)
        self.position_offset = cfg_value(config, "position_padding_idx", -1) + 1
        if not cfg_value(config, "obj_pos_id_relative", True):
            raise ValueError("NETWORK.VLBERT.obj_pos_id_relative must be true (the original supports nothing else)")
        dropout = cfg_value(config, "hidden_dropout_prob")

        self.word_embeddings = nn.Embedding(cfg_value(config, "vocab_size"), hidden)
        self.special_word_embeddings = None
        if cfg_value(config, "word_embedding_frozen", False):
            self.word_embeddings.weight.requires_grad = False
            self.special_word_embeddings = nn.Embedding(NUM_SPECIAL_WORDS, hidden)
        self.end_embedding = nn.Embedding(1, hidden)
        self.position_embeddings = nn.Embedding(cfg_value(config, "max_position_embeddings"), hidden)
        if cfg_value(config, "pos_embedding_frozen", False):
            self.position_embeddings.weight.requires_grad = False
        self.token_type_embeddings = nn.Embedding(cfg_value(config, "type_vocab_size"), hidden)
        self.embedding_LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.embedding_dropout = nn.Dropout(dropout)

        needs_1x1 = self.visual_size != hidden
        self.visual_1x1_text = nn.Linear(self.visual_size, hidden) if needs_1x1 else None
        self.visual_1x1_object = nn.Linear(self.visual_size, hidden) if needs_1x1 else None
        if cfg_value(config, "visual_ln", False):
            self.visual_ln_text = nn.LayerNorm(hidden, eps=1e-12)
            self.visual_ln_object = nn.LayerNorm(hidden, eps=1e-12)
            self.visual_scale_text = self.visual_scale_object = None
        else:
            self.visual_ln_text = self.visual_ln_object = None
            self.visual_scale_text = nn.Parameter(torch.tensor(0.0))
            self.visual_scale_object = nn.Parameter(torch.tensor(0.0))

        self.encoder = BertEncoder(
            num_layers=cfg_value(config, "num_hidden_layers"),
            hidden_size=hidden,
            num_heads=cfg_value(config, "num_attention_heads"),
            intermediate_size=cfg_value(config, "intermediate_size"),
            hidden_act=cfg_value(config, "hidden_act", "gelu"),
            hidden_dropout=dropout,
            attention_dropout=cfg_value(config, "attention_probs_dropout_prob"),
        )
        self.pooler = BertPooler(hidden) if cfg_value(config, "with_pooler", True) else None
        self.pad_to_multiple_of = 1  # set by the engine from TRAIN.PAD_TO_MULTIPLE_OF (common/engine/gpu_path.py)
        self.init_weights()

    @classmethod
    def from_config(cls, vlbert_cfg, language_pretrained_model_path: str | None = None, **kwargs):
        """Build from NETWORK.VLBERT and, when a path is given, load BERT into it (`load_bert_into_vlbert`)."""
        model = cls(vlbert_cfg, **kwargs)
        if language_pretrained_model_path:
            from common.model.pretrained import load_bert_into_vlbert

            load_bert_into_vlbert(model, language_pretrained_model_path)
        return model

    # ---- initialisation ------------------------------------------------------------------------------------
    def _init_module(self, module: nn.Module) -> None:
        std = cfg_value(self.config, "initializer_range", 0.02)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Sheet §1.9: N(0, initializer_range) for Linear/Embedding, zero biases, LayerNorm 1/0, visual gates
        set to visual_scale_*_init."""
        self.apply(self._init_module)
        for which in ("text", "object"):
            start = float(cfg_value(self.config, f"visual_scale_{which}_init", 0.0))
            ln = getattr(self, f"visual_ln_{which}")
            gate = ln.weight if ln is not None else getattr(self, f"visual_scale_{which}")
            gate.fill_(start)
        self.sync_special_word_embeddings()

    @torch.no_grad()
    def sync_special_word_embeddings(self) -> None:
        """Copy word rows 0..999 into the trainable special-word table (call after loading BERT)."""
        if self.special_word_embeddings is not None:
            rows = min(NUM_SPECIAL_WORDS, self.word_embeddings.num_embeddings)
            self.special_word_embeddings.weight[:rows].copy_(self.word_embeddings.weight[:rows])

    # ---- embedding assembly --------------------------------------------------------------------------------
    def _word_embed(self, ids: Tensor) -> Tensor:
        words = self.word_embeddings(ids)
        if self.special_word_embeddings is None:
            return words
        special = self.special_word_embeddings(ids.clamp(max=NUM_SPECIAL_WORDS - 1))
        return torch.where((ids < NUM_SPECIAL_WORDS).unsqueeze(-1), special, words)

    def _visual(self, features: Tensor, which: str) -> Tensor:
        """[.., visual_size] -> [.., h]: optional 1x1 projection, then the LayerNorm gate or the scalar gate."""
        proj = getattr(self, f"visual_1x1_{which}")
        if proj is not None:
            features = proj(features)
        ln = getattr(self, f"visual_ln_{which}")
        return ln(features) if ln is not None else features * getattr(self, f"visual_scale_{which}")

    def embedding(self, text_input_ids: Tensor, text_token_type_ids: Tensor, text_visual_embeddings: Tensor | None,
                  text_mask: Tensor, object_vl_embeddings: Tensor, object_mask: Tensor) -> tuple[Tensor, PackedLayout]:
        """Packed embeddings [B, L, h] after LayerNorm and dropout, and the layout that produced them."""
        layout = pack_layout(text_mask, object_mask, self.pad_to_multiple_of)
        text = self._word_embed(text_input_ids)
        if text_visual_embeddings is not None:
            text = text + self._visual(text_visual_embeddings, "text")
        packed = _gather_rows(text, layout.text_index) * layout.is_text.unsqueeze(-1)
        if object_vl_embeddings.shape[1] > 0:
            objects = object_vl_embeddings[..., self.visual_size:] + self._visual(
                object_vl_embeddings[..., : self.visual_size], "object")
            packed = torch.where(layout.is_object.unsqueeze(-1), _gather_rows(objects, layout.object_index), packed)
        packed = torch.where(layout.is_end.unsqueeze(-1), self.end_embedding.weight[0].to(packed.dtype), packed)

        token_types = torch.gather(text_token_type_ids.long(), 1, layout.text_index) * layout.is_text
        token_types = torch.where(layout.is_object | layout.is_end, 2, token_types)
        position_ids = layout.position_ids + self.position_offset
        summed = packed + self.position_embeddings(position_ids) + self.token_type_embeddings(token_types)
        return self.embedding_dropout(self.embedding_LayerNorm(summed)), layout

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, text_input_ids: Tensor, text_token_type_ids: Tensor, text_visual_embeddings: Tensor | None,
                text_mask: Tensor, object_vl_embeddings: Tensor, object_mask: Tensor,
                output_all_encoded_layers: bool = True, output_text_and_object_separately: bool = False,
                output_attention_probs: bool = False) -> AnyVLBertOutput:
        """Shapes: ids/types/text_mask [B, T], text_visual_embeddings [B, T, visual_size],
        object_vl_embeddings [B, O, visual_size + h], object_mask [B, O].

        Returns `VLBertOutput(encoded, pooled)`, or with `output_text_and_object_separately`
        `VLBertSeparateOutput(text [B, T, h], objects [B, O, h], pooled)`; `output_attention_probs` appends
        `attention_probs`, a list of [B, heads, L, L], one per layer (the `...WithAttention` variants). Encoded
        states are a list over layers when `output_all_encoded_layers`. Named tuples in the original's order.
        Text states are read from packed positions 0..T-1 (text_mask must be a left-aligned prefix).
        """
        embeddings, layout = self.embedding(text_input_ids, text_token_type_ids, text_visual_embeddings,
                                            text_mask, object_vl_embeddings, object_mask)
        key_mask = layout.attention_mask[:, None, None, :]
        layers, probs = self.encoder(embeddings, key_mask, output_all_encoded_layers, output_attention_probs)
        pooled = self.pooler(layers[-1]) if self.pooler is not None else None
        if output_text_and_object_separately:
            texts = [self._text_states(x, text_input_ids.shape[1]) for x in layers]
            objects = [self._object_states(x, layout.object_slot, object_mask) for x in layers]
            if not output_all_encoded_layers:
                texts, objects = texts[-1], objects[-1]
            if output_attention_probs:
                return VLBertSeparateOutputWithAttention(texts, objects, pooled, probs)
            return VLBertSeparateOutput(texts, objects, pooled)
        encoded = layers if output_all_encoded_layers else layers[-1]
        return VLBertOutputWithAttention(encoded, pooled, probs) if output_attention_probs else VLBertOutput(
            encoded, pooled)

    @staticmethod
    def _text_states(encoded: Tensor, width: int) -> Tensor:
        """Packed positions 0..T-1 -> [B, T, h] (zero-padded when the packed sequence is shorter than T)."""
        text = encoded[:, :width]
        if text.shape[1] < width:
            text = nn.functional.pad(text, (0, 0, 0, width - text.shape[1]))
        return text

    @staticmethod
    def _object_states(encoded: Tensor, object_slot: Tensor, object_mask: Tensor) -> Tensor:
        """Scatter the real object states back to [B, O, h]; padded objects are zero."""
        return _gather_rows(encoded, object_slot) * object_mask.unsqueeze(-1).to(encoded.dtype)


class VisualLinguisticBertForPretraining(VisualLinguisticBert):
    """VL-BERT with the relationship (`relationsip_head`, original spelling), MLM and MVRC heads (sheet §1.6)."""

    def __init__(self, config, with_rel_head: bool = True, with_mlm_head: bool = True, with_mvrc_head: bool = True):
        super().__init__(config)
        hidden, act = self.hidden_size, cfg_value(config, "hidden_act", "gelu")
        if with_rel_head and self.pooler is None:
            raise ValueError("the relationship head reads the pooled output: set NETWORK.VLBERT.with_pooler true")
        self.relationsip_head = RelationshipHead(hidden) if with_rel_head else None
        self.mlm_head = MLMHead(hidden, act, self.word_embeddings.weight) if with_mlm_head else None
        classes = cfg_value(config, "visual_region_classes", 1601) if with_mvrc_head else 0
        self.mvrc_head = MVRCHead(hidden, act, classes) if with_mvrc_head else None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        if getattr(self, "mlm_head", None) is not None:
            self.mlm_head.predictions.bias.zero_()

    def forward(self, text_input_ids: Tensor, text_token_type_ids: Tensor, text_visual_embeddings: Tensor | None,
                text_mask: Tensor, object_vl_embeddings: Tensor, object_mask: Tensor) -> PretrainingOutputs:
        """Same inputs as VisualLinguisticBert; returns (relationship [B, 2], mlm [B, T, vocab], mvrc [B, O, C])."""
        states = super().forward(
            text_input_ids, text_token_type_ids, text_visual_embeddings, text_mask, object_vl_embeddings,
            object_mask, output_all_encoded_layers=False, output_text_and_object_separately=True)
        return PretrainingOutputs(
            self.relationsip_head(states.pooled) if self.relationsip_head is not None else None,
            self.mlm_head(states.text) if self.mlm_head is not None else None,
            self.mvrc_head(states.objects) if self.mvrc_head is not None else None,
        )
