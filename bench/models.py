"""The models the training-step benchmark compares: VL-BERT for VQA (ours) and transformers' VisualBERT (the peer).

Both get the same answer head and loss, the same inputs and the same sequence length, so samples/s compare
like for like. `model_flops` counts the FLOPs of one training step with the engine's counter
(common/engine/flops.py; formula in bench/RESULTS.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.engine.flops import count_step_flops
from common.model.bert_encoder import BertEncoder
from common.model.task_base import VLBertTaskModule

NUM_ANSWERS = 3129
MASK_ID, CLS_ID, SEP_ID = 103, 101, 102
VQA_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfgs/vqa/base_4x16G_fp32.yaml")


@dataclass
class Setting:
    """One benchmark setting: precomputed regions ("vqa") or ResNet on images ("e2e")."""

    name: str
    batch: int = 8
    text_len: int = 24  # [CLS] q [SEP] [MASK] [SEP]
    regions: int = 36  # boxes per image, the whole-image box comes on top
    image_size: int = 224
    resnet_layers: int = 50
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    ffn: int = 3072

    @property
    def end2end(self) -> bool:
        return self.name == "e2e"

    @property
    def boxes(self) -> int:
        return self.regions + 1

    @property
    def seq_len(self) -> int:
        """Packed VL-BERT length: text + boxes + [END]; the peer gets the same by one extra visual token."""
        return self.text_len + self.boxes + 1


def vqa_config(setting: Setting, channels_last: bool = False, onednn_linear: bool = True):
    """The released VQA base config, resized to `setting`, random init (no BERT, no ResNet weights)."""
    from common.config import load_config
    from vqa.config import add_vqa_defaults

    overrides = [
        "NETWORK.BERT_MODEL_NAME", "", "NETWORK.PARTIAL_PRETRAIN", "",
        "NETWORK.IMAGE_FEAT_PRECOMPUTED", str(not setting.end2end).lower(),
        "NETWORK.IMAGE_NUM_LAYERS", str(setting.resnet_layers),
        "NETWORK.IMAGE_FINAL_DIM", str(setting.hidden),
        "NETWORK.VLBERT.hidden_size", str(setting.hidden), "NETWORK.VLBERT.visual_size", str(setting.hidden),
        "NETWORK.VLBERT.num_hidden_layers", str(setting.layers),
        "NETWORK.VLBERT.num_attention_heads", str(setting.heads),
        "NETWORK.VLBERT.intermediate_size", str(setting.ffn),
        "NETWORK.IMAGE_CHANNELS_LAST", str(channels_last).lower(),
        "NETWORK.CPU_ONEDNN_LINEAR", str(onednn_linear).lower(),
    ]
    return load_config(VQA_YAML, overrides, add_task_defaults=add_vqa_defaults)


def answer_head(hidden: int) -> nn.Sequential:
    """The VQA `final_mlp` of the yamls ('mlm'): dense + GELU + LayerNorm, Dropout(0.1), Linear(h, 3129)."""
    return nn.Sequential(
        nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12)),
        nn.Dropout(0.1),
        nn.Linear(hidden, NUM_ANSWERS),
    )


def answer_loss(logits: Tensor, label: Tensor) -> Tensor:
    """BCE-with-logits, mean over B x answers, times the number of answers (the original VQA loss)."""
    return F.binary_cross_entropy_with_logits(logits.float(), label) * label.shape[1]


class OursVQA(VLBertTaskModule):
    """VL-BERT for VQA as the original module: whole-image feature on every token, head on the [MASK] state."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.final_mlp = answer_head(cfg.NETWORK.VLBERT.hidden_size)

    def forward(self, batch: dict) -> Tensor:
        regions = self.encode_regions(batch)
        ids = batch["text_ids"]
        text_visual = regions.obj_reps[:, :1].expand(-1, ids.shape[1], -1)  # every tag is 0: the whole-image box
        encoded = self.vlbert(ids, batch["text_types"], text_visual, ids > 0, self.object_inputs(regions.obj_reps),
                              regions.box_mask, output_all_encoded_layers=False).encoded
        mask_state = encoded[torch.arange(ids.shape[0], device=ids.device), batch["mask_pos"]]
        return answer_loss(self.final_mlp(mask_state), batch["label"])


class PeerVQA(nn.Module):
    """transformers' VisualBertModel (random init) with the same head; in e2e mode fed by the same FastRCNN."""

    def __init__(self, setting: Setting, cfg):
        super().__init__()
        from transformers import VisualBertConfig, VisualBertModel

        self.image_feature_extractor = None
        if setting.end2end:
            from common.model.fast_rcnn import FastRCNN

            self.image_feature_extractor = FastRCNN.from_config(cfg)
        visual_dim = self.image_feature_extractor.feature_dim if setting.end2end else 2048
        config = VisualBertConfig(
            vocab_size=30522, hidden_size=setting.hidden, num_hidden_layers=setting.layers,
            num_attention_heads=setting.heads, intermediate_size=setting.ffn, visual_embedding_dim=visual_dim,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512)
        self.visual_bert = VisualBertModel(config, add_pooling_layer=False)
        self.final_mlp = answer_head(setting.hidden)

    def forward(self, batch: dict) -> Tensor:
        if self.image_feature_extractor is not None:
            boxes = batch["boxes"]
            box_mask = boxes[..., 0] > -1.5
            visual = self.image_feature_extractor(batch["image"], boxes, box_mask, batch["im_info"])["obj_reps_raw"]
        else:
            visual = batch["box_features"]
        visual = torch.cat([visual, visual[:, :1]], dim=1)  # one more token: same length as VL-BERT's [END]
        ids = batch["text_ids"]
        out = self.visual_bert(input_ids=ids, attention_mask=(ids > 0).long(), token_type_ids=batch["text_types"],
                               visual_embeds=visual)
        mask_state = out.last_hidden_state[torch.arange(ids.shape[0], device=ids.device), batch["mask_pos"]]
        return answer_loss(self.final_mlp(mask_state), batch["label"])


def make_batch(setting: Setting, device: torch.device, seed: int = 0) -> dict:
    """Random inputs shared by both models: questions `[CLS] q [SEP] [MASK] [SEP]`, boxes, features or images."""
    gen = torch.Generator().manual_seed(seed)
    b, t, n = setting.batch, setting.text_len, setting.boxes
    ids = torch.randint(1000, 30522, (b, t), generator=gen)
    ids[:, 0], ids[:, t - 3], ids[:, t - 2], ids[:, t - 1] = CLS_ID, SEP_ID, MASK_ID, SEP_ID
    types = torch.zeros(b, t, dtype=torch.long)
    types[:, t - 2:] = 1
    size = float(setting.image_size)
    xy = torch.rand(b, n, 2, generator=gen) * size * 0.6
    wh = torch.rand(b, n, 2, generator=gen) * size * 0.4 + 8
    boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=-1)
    boxes[:, 0] = torch.tensor([0.0, 0.0, size - 1, size - 1])
    label = (torch.rand(b, NUM_ANSWERS, generator=gen) < 0.002).float()
    batch = dict(text_ids=ids, text_types=types, mask_pos=torch.full((b,), t - 2, dtype=torch.long), boxes=boxes,
                 im_info=torch.tensor([[size, size, 1.0, 1.0]]).repeat(b, 1), label=label)
    if setting.end2end:
        batch["image"] = torch.randn(b, 3, setting.image_size, setting.image_size, generator=gen) * 50
    else:
        batch["box_features"] = torch.rand(b, n, 2048, generator=gen) * 2
    return {k: v.to(device) for k, v in batch.items()}


def build(which: str, setting: Setting, channels_last: bool = False, onednn_linear: bool = True) -> nn.Module:
    """`ours` is built as a training run builds it (`from_config`: with the oneDNN module swap unless switched off)."""
    cfg = vqa_config(setting, channels_last, onednn_linear)
    return OursVQA.from_config(cfg, load_pretrained=False) if which == "ours" else PeerVQA(setting, cfg)


def encoder_types() -> tuple[type, ...]:
    """The transformer stacks counted as a whole (common/engine/flops.py): ours and transformers' VisualBERT."""
    from transformers.models.visual_bert.modeling_visual_bert import VisualBertEncoder

    return (BertEncoder, VisualBertEncoder)


def model_flops(model: nn.Module, batch: dict) -> float:
    """Training-step FLOPs of `model` on `batch`, counted by the engine's counter during one forward."""
    return count_step_flops(model, lambda: model(batch), encoder_types())
