"""VL-BERT for VCR: each of the 4 choices is one `[CLS] q [SEP] a [SEP]` sequence over the shared image boxes.

The 4 choices are folded into the batch dimension ([B, 4, ...] -> [B*4, ...]) instead of the original's
TimeDistributed wrapper, so the transformer's keys are `vlbert.*`; `vcr/task.py::map_vcr_checkpoint_keys`
maps the original `vlbert._module.*` keys onto them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.data.tokenizer import BertTokenizer
from common.model.region_encoder import NUM_OBJECT_CLASSES
from common.model.task_base import VLBertTaskModule, gather_by_tags
from common.model.visual_frontend import VisualFeatures
from common.model.vlbert_heads import MVRCTransform

NUM_CHOICES = 4


def build_final_mlp(classifier_type: str, hidden: int, mlp_hidden: int, dropout: float) -> nn.Sequential:
    """`1fc`: Dropout, Linear(h, 1); `2fc`: Dropout, Linear(h, mlp_hidden), ReLU, Dropout, Linear(mlp_hidden, 1)."""
    if classifier_type == "1fc":
        mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))
    elif classifier_type == "2fc":
        mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, mlp_hidden), nn.ReLU(inplace=True),
                            nn.Dropout(dropout), nn.Linear(mlp_hidden, 1))
    else:
        raise ValueError(f"NETWORK.CLASSIFIER_TYPE {classifier_type!r} is not supported for VCR (use '1fc' or '2fc')")
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return mlp


def assemble_pairs(first_ids: Tensor, first_tags: Tensor, second_ids: Tensor, second_tags: Tensor,
                   cls_id: int, sep_id: int, one_sentence: bool = False) -> dict[str, Tensor]:
    """Left-aligned `[CLS] first [SEP] second [SEP]` (or `[CLS] first second [SEP]`) rows.

    Inputs [R, L1] / [R, L2] padded with id 0. Returns input_ids, tags, token_type_ids (0 up to the first [SEP],
    1 after; all 0 in one-sentence mode) and text_mask, each [R, T]. [CLS]/[SEP] get tag 0.
    """
    len1, len2 = (first_ids > 0).sum(1, keepdim=True), (second_ids > 0).sum(1, keepdim=True)
    mid_sep = 0 if one_sentence else 1
    total = 1 + len1 + mid_sep + len2 + 1
    t = torch.arange(int(total.max()), device=first_ids.device).unsqueeze(0)  # [1, T]
    in_first = (t >= 1) & (t <= len1)
    second_start = 1 + len1 + mid_sep
    in_second = (t >= second_start) & (t < second_start + len2)
    first_pos = (t - 1).clamp(0, first_ids.shape[1] - 1).expand(first_ids.shape[0], -1)
    second_pos = (t - second_start).clamp(0, second_ids.shape[1] - 1)
    is_sep = t == total - 1
    if not one_sentence:
        is_sep = is_sep | (t == 1 + len1)
    ids = torch.where(in_first, first_ids.gather(1, first_pos), torch.zeros_like(first_pos))
    ids = torch.where(in_second, second_ids.gather(1, second_pos), ids)
    ids = torch.where(is_sep, torch.full_like(ids, sep_id), ids)
    ids[:, 0] = cls_id
    tags = torch.where(in_first, first_tags.gather(1, first_pos), torch.zeros_like(first_pos))
    tags = torch.where(in_second, second_tags.gather(1, second_pos), tags)
    text_mask = t < total
    token_type = torch.zeros_like(ids) if one_sentence else ((t >= second_start) & text_mask).long()
    return {"input_ids": ids, "tags": tags, "token_type_ids": token_type, "text_mask": text_mask}


class ResNetVLBERTForVCR(VLBertTaskModule):
    """Scores the 4 choices of a VCR item: outputs `label_logits` [B, 4] and, with labels, the losses."""

    def __init__(self, cfg, cls_id: int, sep_id: int):
        net = cfg.NETWORK
        mode = int(net.VLBERT.object_word_embed_mode)
        if mode not in (1, 2, 3):
            raise ValueError(f"NETWORK.VLBERT.object_word_embed_mode must be 1, 2 or 3, got {mode}")
        if net.ANSWER_FIRST and net.QA_ONE_SENT:
            raise ValueError("NETWORK.ANSWER_FIRST and NETWORK.QA_ONE_SENT cannot both be true")
        if not net.VLBERT.with_pooler:
            raise ValueError("NETWORK.VLBERT.with_pooler must be true for VCR (the [CLS] pooled output is scored)")
        super().__init__(cfg, num_object_word_embeddings=NUM_OBJECT_CLASSES if mode == 1 else 1)
        hidden = net.VLBERT.hidden_size
        self.object_word_embed_mode = mode
        self.cls_id, self.sep_id = cls_id, sep_id
        self.cnn_loss_top = bool(net.ENABLE_CNN_REG_LOSS) and bool(net.CNN_LOSS_TOP)
        if self.cnn_loss_top:
            self.cnn_loss_reg = nn.Sequential(MVRCTransform(hidden, net.VLBERT.hidden_act),
                                              nn.Dropout(net.CNN_REG_DROPOUT),
                                              nn.Linear(hidden, NUM_OBJECT_CLASSES))
        self.final_mlp = build_final_mlp(net.CLASSIFIER_TYPE, hidden, net.CLASSIFIER_HIDDEN_SIZE,
                                         net.CLASSIFIER_DROPOUT)

    @classmethod
    def needs_regions(cls, cfg) -> str | None:
        return "VCR's questions and answers refer to detected objects by box index"

    @classmethod
    def build(cls, cfg) -> ResNetVLBERTForVCR:
        """Construct with the BERT folder's [CLS] and [SEP] ids. (`from_config(cfg, load_pretrained=False)` skips
        BERT and the ResNet weights: inference scripts load a fine-tuned checkpoint over every weight.)"""
        tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
        return cls(cfg, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)

    # ---- inputs ---------------------------------------------------------------------------------------------
    def build_text(self, batch: dict) -> dict[str, Tensor]:
        """[B, 4, L] question/answer ids and tags -> [B*4, T] VL-BERT text inputs (variants per NETWORK flags)."""
        net = self.cfg.NETWORK
        q_ids, q_tags = batch["question_ids"].flatten(0, 1), batch["question_tags"].flatten(0, 1)
        a_ids, a_tags = batch["answer_ids"].flatten(0, 1), batch["answer_tags"].flatten(0, 1)
        if net.ANSWER_FIRST:
            q_ids, q_tags, a_ids, a_tags = a_ids, a_tags, q_ids, q_tags
        text = assemble_pairs(q_ids, q_tags, a_ids, a_tags, self.cls_id, self.sep_id,
                              one_sentence=bool(net.QA_ONE_SENT))
        if net.NO_GROUNDING:
            text["tags"] = torch.zeros_like(text["tags"])
        return text

    def object_linguistic(self, classes: Tensor, text: dict[str, Tensor], num_choices: int) -> Tensor:
        """Linguistic half of each object token, [B*4, N, H], by object_word_embed_mode (1: class, 2: shared,
        3: mean word embedding of the choice's text without [CLS]/[SEP])."""
        rows, n = classes.shape[0] * num_choices, classes.shape[1]
        if self.object_word_embed_mode == 1:
            return self.object_linguistic_embeddings(classes.clamp(min=0).long()).repeat_interleave(num_choices, 0)
        if self.object_word_embed_mode == 2:
            return self.object_linguistic_embeddings.weight[0].expand(rows, n, -1)
        ids = text["input_ids"]
        words = text["text_mask"] & (ids != self.cls_id) & (ids != self.sep_id)
        embedded = self.vlbert.word_embeddings(ids) * words.unsqueeze(-1)
        mean = embedded.sum(1) / words.sum(1, keepdim=True).clamp(min=1)
        return mean.unsqueeze(1).expand(-1, n, -1)

    # ---- forward --------------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, Tensor]:
        net = self.cfg.NETWORK
        num_choices = batch["answer_ids"].shape[1]
        regions = self.encode_regions(batch)  # instance masks and classes come with the batch (mask pooling)
        classes = regions.per_box(batch.get("classes"))
        obj_reps = regions.obj_reps.repeat_interleave(num_choices, 0)  # [B*4, N, D]
        object_mask = regions.box_mask.repeat_interleave(num_choices, 0)
        text = self.build_text(batch)
        text_visual = gather_by_tags(obj_reps, text["tags"])
        object_vl = torch.cat([obj_reps, self.object_linguistic(classes, text, num_choices).to(obj_reps.dtype)], -1)
        attend_mask = object_mask
        if net.NO_OBJ_ATTENTION or net.BLIND:
            attend_mask = torch.zeros_like(object_mask)
        states = self.vlbert(
            text["input_ids"], text["token_type_ids"], text_visual, text["text_mask"], object_vl, attend_mask,
            output_all_encoded_layers=False, output_text_and_object_separately=True)
        logits = self.final_mlp(states.pooled).view(-1, num_choices)
        outputs = {"label_logits": logits}
        if "label" in batch:
            outputs.update(self.losses(logits, batch["label"], states.objects, object_mask, classes, regions))
        return outputs

    def losses(self, logits: Tensor, label: Tensor, object_states: Tensor, object_mask: Tensor,
               classes: Tensor | None, regions: VisualFeatures) -> dict[str, Tensor]:
        """Answer loss (per-choice BCE or 4-way CE) x ANS_LOSS_WEIGHT + object-class regulariser x CNN_LOSS_WEIGHT."""
        net = self.cfg.NETWORK
        label = label.view(-1).long()
        out: dict[str, Tensor] = {}
        if net.CLASSIFIER_SIGMOID:
            weight = float(net.CLASSIFIER_SIGMOID_LOSS_POSITIVE_WEIGHT)
            target = F.one_hot(label, logits.shape[1]).to(torch.float32)
            ans_loss = F.binary_cross_entropy_with_logits(
                logits.float(), target, pos_weight=logits.new_tensor(weight, dtype=torch.float32))
            ans_loss = ans_loss * (weight + 1.0) / (2.0 * weight)
            out["positive_fraction"] = (logits.detach() > 0).float().mean()
        else:
            ans_loss = F.cross_entropy(logits.float(), label)
        out["ans_loss"] = ans_loss
        loss = ans_loss * net.ANS_LOSS_WEIGHT
        cnn_loss = None
        if self.cnn_loss_top:
            if classes is None:
                raise ValueError("NETWORK.CNN_LOSS_TOP needs object `classes` in the batch")
            obj_logits = self.cnn_loss_reg(object_states[object_mask])
            obj_labels = classes.repeat_interleave(logits.shape[1], 0)[object_mask].long()
            cnn_loss = F.cross_entropy(obj_logits.float(), obj_labels)
        elif regions.cnn_regularization_loss is not None:
            cnn_loss = regions.cnn_regularization_loss.mean()
        if cnn_loss is not None:
            out["cnn_regularization_loss"] = cnn_loss
            loss = loss + cnn_loss * net.CNN_LOSS_WEIGHT
        out["loss"] = loss
        return out
